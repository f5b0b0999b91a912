"""Dataset cards: schema, validation, lookup and listing.

A *card* is a small YAML document describing one public dataset: where to download it, how to
verify it, its licence and citation, and how its ``obs`` columns map onto scdit's standard keys.
The canonical cards live in ``scdit/datasets/_registry_cards/*.yaml`` so that they ship inside the
installed package; ``data_registry/`` at the repository root documents them and holds a copy of the
schema (``schema.json``) that a test keeps identical to :data:`CARD_SCHEMA`.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ._cache import cached_path
from ._checksums import checksum_policy

__all__ = [
    "CARD_SCHEMA",
    "CardValidationError",
    "get_card",
    "list_datasets",
    "register",
    "unregister",
    "validate_card",
]

_STR = {"type": "string", "minLength": 1}
_STR_OR_NULL = {"type": ["string", "null"], "minLength": 1}
_INT_OR_NULL = {"type": ["integer", "null"], "minimum": 0}
_STR_LIST = {"type": "array", "items": _STR}
_PERTURBATION_TYPES = ["CRISPRi", "CRISPRa", "CRISPR-KO", "drug", "cytokine", "other"]


def _obj(required: list[str], **properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": required,
        "additionalProperties": False,
        "properties": properties,
    }


#: JSON Schema (draft 2020-12 subset) that every dataset card must satisfy.
CARD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "scdit dataset card",
    **_obj(
        [
            "name",
            "title",
            "bundled",
            "source",
            "license",
            "citation",
            "organism",
            "perturbation_type",
            "representation",
            "obs_mapping",
            "preprocessing",
            "stats",
        ],
        name={"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
        aliases={"type": "array", "items": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"}},
        title=_STR,
        description=_STR,
        bundled={"type": "boolean"},
        out_of_core={"type": "boolean"},
        source=_obj(
            ["urls", "filename", "format", "sha256", "size_bytes", "verified"],
            urls={"type": "array", "items": {"type": "string", "pattern": "^https?://"}},
            homepage={"type": "string", "pattern": "^https?://"},
            filename=_STR,
            format={"enum": ["h5ad", "parquet"]},
            compression={"enum": ["none", "gzip"]},
            sha256={"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"},
            checksum={"enum": ["published", "recorded"]},
            size_bytes=_INT_OR_NULL,
            verified={"type": "boolean"},
        ),
        license=_STR,
        license_note=_STR,
        citation=_obj(["text", "doi"], text=_STR, doi=_STR_OR_NULL, url=_STR),
        also_cite={"type": "array", "items": _obj(["text"], text=_STR, doi=_STR_OR_NULL)},
        organism={"enum": ["human", "mouse"]},
        perturbation_type={
            "type": "array",
            "minItems": 1,
            "items": {"enum": _PERTURBATION_TYPES},
        },
        representation={"enum": ["counts", "log1p"]},
        obs_mapping=_obj(
            ["condition", "control", "covariates"],
            condition=_STR,
            control={"type": ["string", "array"], "minLength": 1, "minItems": 1, "items": _STR},
            combination_separator=_STR_OR_NULL,
            covariates=_STR_LIST,
            cell_type=_STR_OR_NULL,
            dose=_STR_OR_NULL,
            var_symbols=_STR_OR_NULL,
        ),
        preprocessing=_obj(
            ["normalize_total", "log1p", "n_top_genes", "keep_perturbation_targets"],
            normalize_total={"type": ["number", "null"], "minimum": 0},
            log1p={"type": "boolean"},
            n_top_genes=_INT_OR_NULL,
            keep_perturbation_targets={"type": "boolean"},
            notes=_STR,
        ),
        stats=_obj(
            ["n_cells", "n_perturbations"],
            n_cells=_INT_OR_NULL,
            n_perturbations=_INT_OR_NULL,
            n_genes=_INT_OR_NULL,
            approximate={"type": "boolean"},
        ),
        notes=_STR,
    ),
}


class CardValidationError(ValueError):
    """Raised when a dataset card does not satisfy :data:`CARD_SCHEMA`."""


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list, tuple),
    "object": (Mapping,),
    "null": (type(None),),
}


def _type_ok(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _JSON_TYPES[name])


def _check(value: Any, schema: Mapping[str, Any], path: str, errors: list[str]) -> None:
    """Append to ``errors`` every violation of ``schema`` by ``value`` (JSON Schema subset)."""
    where = path or "<card>"
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} is not one of {schema['enum']}")
        return
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(_type_ok(value, t) for t in types):
            errors.append(f"{where}: expected {' or '.join(types)}, got {type(value).__name__}")
            return
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{where}: must not be empty")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: {value!r} does not match {schema['pattern']!r}")
    if _type_ok(value, "number") and "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{where}: {value} is below the minimum {schema['minimum']}")
    if isinstance(value, list | tuple):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{where}: needs at least {schema['minItems']} item(s)")
        for i, item in enumerate(value):
            _check(item, schema.get("items", {}), f"{path}[{i}]", errors)
    if isinstance(value, Mapping):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{where}: missing required field {key!r}")
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if key in props:
                _check(item, props[key], sub, errors)
            elif schema.get("additionalProperties", True) is False:
                errors.append(f"{sub}: unknown field (allowed: {sorted(props)})")


def validate_card(card: Mapping[str, Any]) -> None:
    """Check a dataset card against :data:`CARD_SCHEMA` and a few cross-field rules.

    Parameters
    ----------
    card
        The parsed card.

    Raises
    ------
    CardValidationError
        Listing every problem found, one per line, each prefixed with the field path.
    """
    errors: list[str] = []
    _check(card, CARD_SCHEMA, "", errors)
    if not errors:
        src = card["source"]
        if src["verified"] and src["sha256"] is None:
            errors.append("source.verified: true requires a source.sha256")
        if src.get("checksum") == "published" and src["sha256"] is None:
            errors.append(
                "source.checksum: published requires the published source.sha256; use "
                "checksum: recorded when the source publishes none"
            )
        if src.get("checksum") == "recorded" and src["sha256"] is not None:
            errors.append(
                "source.checksum: recorded means no sha256 is published, but source.sha256 is "
                "set; use checksum: published (or sha256: null)"
            )
        if not card["bundled"] and not card.get("out_of_core", False) and not src["urls"]:
            errors.append("source.urls: a downloadable card needs at least one URL")
    if errors:
        name = card.get("name", "?") if isinstance(card, Mapping) else "?"
        raise CardValidationError(f"invalid dataset card {name!r}:\n  " + "\n  ".join(errors))


_CARD_DIR = "_registry_cards"
_USER_CARDS: dict[str, dict[str, Any]] = {}
_BUILTIN: dict[str, dict[str, Any]] | None = None


def _read_card(text: str, origin: str) -> dict[str, Any]:
    card = yaml.safe_load(text)
    if not isinstance(card, dict):
        raise CardValidationError(f"{origin}: a card must be a YAML mapping")
    validate_card(card)
    return card


def _builtin_cards() -> dict[str, dict[str, Any]]:
    """Parse (once) and return the cards shipped in ``scdit/datasets/_registry_cards``."""
    global _BUILTIN
    if _BUILTIN is None:
        cards: dict[str, dict[str, Any]] = {}
        root = resources.files("scdit.datasets").joinpath(_CARD_DIR)
        for entry in sorted(root.iterdir(), key=lambda e: e.name):
            if entry.name.endswith((".yaml", ".yml")):
                card = _read_card(entry.read_text(encoding="utf-8"), entry.name)
                cards[card["name"]] = card
        _BUILTIN = cards
    return _BUILTIN


def _all_cards() -> dict[str, dict[str, Any]]:
    return {**_builtin_cards(), **_USER_CARDS}


def _resolve(name: str) -> dict[str, Any]:
    cards = _all_cards()
    key = name.strip().lower()
    if key in cards:
        return cards[key]
    for card in cards.values():
        if key in card.get("aliases", []):
            return card
    raise KeyError(f"unknown dataset {name!r}; available: {', '.join(sorted(cards))}")


def get_card(name: str) -> dict[str, Any]:
    """Return (a deep copy of) the card of a registered dataset.

    Parameters
    ----------
    name
        Card name or one of its aliases (case-insensitive).

    Returns
    -------
    The parsed card as a plain ``dict``.
    """
    return copy.deepcopy(_resolve(name))


def register(card: Mapping[str, Any] | str | os.PathLike[str], *, overwrite: bool = False) -> str:
    """Add a dataset card for this session (e.g. a private mirror or a local test server).

    Parameters
    ----------
    card
        A card as a mapping, or the path of a YAML file holding one.
    overwrite
        Replace an already registered card of the same name (built-in cards are shadowed).

    Returns
    -------
    The registered name.
    """
    if isinstance(card, str | os.PathLike):
        parsed = _read_card(Path(card).read_text(encoding="utf-8"), str(card))
    else:
        parsed = copy.deepcopy(dict(card))
        validate_card(parsed)
    name = parsed["name"]
    if name in _all_cards() and not overwrite:
        raise ValueError(f"dataset {name!r} is already registered; pass overwrite=True")
    _USER_CARDS[name] = parsed
    return name


def unregister(name: str) -> None:
    """Remove a card added with :func:`register` (built-in cards cannot be removed)."""
    if name not in _USER_CARDS:
        raise KeyError(f"{name!r} was not registered in this session")
    del _USER_CARDS[name]


def format_size(n_bytes: int | None, *, exact: bool = True) -> str:
    """Human-readable size: ``"1.1 MB"``; ``"~2.5 GB"`` when approximate; ``"?"`` if unknown."""
    if n_bytes is None:
        return "?"
    size, unit = float(n_bytes), "B"
    for unit in ("B", "kB", "MB", "GB", "TB"):  # noqa: B007
        if size < 1000 or unit == "TB":
            break
        size /= 1000
    text = f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
    return text if exact else f"~{text}"


def list_datasets(*, cache_dir: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Table of every registered dataset; works offline.

    Parameters
    ----------
    cache_dir
        Cache folder used to fill the ``cached`` column (same resolution as
        :func:`scdit.datasets.load`).

    Returns
    -------
    DataFrame with one row per card and columns ``name``, ``title``, ``size``, ``license``,
    ``cells``, ``perturbations``, ``perturbation_type``, ``organism``, ``bundled``, ``verified``,
    ``checksum`` (``published``, ``recorded``, or ``None`` for pointer cards), ``out_of_core``,
    ``cached``. Counts are approximate unless ``verified``.
    """
    rows = []
    for name, card in sorted(_all_cards().items()):
        src, stats = card["source"], card["stats"]
        rows.append(
            {
                "name": name,
                "title": card["title"],
                "size": format_size(src["size_bytes"], exact=src["verified"]),
                "license": card["license"],
                "cells": stats["n_cells"],
                "perturbations": stats["n_perturbations"],
                "perturbation_type": "/".join(card["perturbation_type"]),
                "organism": card["organism"],
                "bundled": card["bundled"],
                "verified": src["verified"],
                "checksum": None if card.get("out_of_core") else checksum_policy(card),
                "out_of_core": card.get("out_of_core", False),
                "cached": card["bundled"] or cached_path(card, cache_dir).exists(),
            }
        )
    df = pd.DataFrame(rows)
    for col in ("cells", "perturbations"):
        df[col] = df[col].astype("Int64")
    return df
