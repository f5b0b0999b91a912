"""Model files: ``config.json`` + ``model.safetensors`` + ``reference.h5ad`` (no pickle).

On-disk format (``format_version`` 2)
-------------------------------------
``config.json`` is one JSON object with

- ``format_version``: 2 (an integer);
- ``config``: :meth:`scdit.ScDiTConfig.to_dict` (sections ``data``, ``tokenizer``,
  ``conditions``, ``dit``, ``flow``, ``train``); ``dit.backbone`` names the velocity network
  (``"dit"`` or ``"mlp"``; files written before the option hold DiT weights and lack the key,
  which then defaults to ``"dit"``);
- ``vocab``, ``covariates``: the condition and covariate vocabularies;
- ``tokenizer``: the tokenizer's JSON state (``kind``, ``genes``, token layout, ...);
- ``var_names``: the training genes; ``summary``: the fit summary;
- ``files``: ``{"model.safetensors": {"sha256": hex, "size": bytes}, "reference.h5ad": {...}}``.

``model.safetensors`` holds the velocity field's state dict (``field.*``) and the tokenizer's
arrays (``tokenizer.*``); ``reference.h5ad`` the reference cells. Format 1 (before the
``files`` section) loads too, without the hash check (re-save such a model to add it).

Saving is atomic: the three files are written and fsynced in a temporary folder next to the
target (``.<name>.scdit-tmp-*``, same filesystem), which then takes the target's place by an
atomic exchange of the two folders (Linux ``renameat2``; elsewhere two renames, the previous
model kept as ``.<name>.scdit-old-*`` in between). An exception or a kill at any point leaves the
complete previous model or the complete new one; a later save removes what a kill left behind.

Loading checks, before building anything: ``config.json`` is valid JSON, of a known format,
matching its schema (:func:`scdit.config.config_schema`, plausible sizes); the files' sizes and
sha256; the weight shapes in the safetensors header against those the configuration implies (a
model built on the ``meta`` device allocates nothing); then that every weight is finite.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import hashlib
import json
import os
import secrets
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import safetensors
import safetensors.torch
import torch

from ..conditions import ConditionEncoder
from ..config import ScDiTConfig, check_json
from ..data import ConditionVocab, CovariateVocab
from ..models import DiT, MLPVelocity, TargetMarks, VelocityField, target_slots
from ..tokenizers import Tokenizer, tokenizer_from_state

FORMAT_VERSION = 2
CONFIG, WEIGHTS, REFERENCE = "config.json", "model.safetensors", "reference.h5ad"
MODEL_FILES = (CONFIG, WEIGHTS, REFERENCE)
_TMP, _OLD = ".scdit-tmp-", ".scdit-old-"  # sibling folders: ".<name>.scdit-tmp-<random>"
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2

_STRINGS = {"type": "array", "items": {"type": "string"}}
_FILE = {"type": "object", "required": ["sha256", "size"], "additionalProperties": False,
         "properties": {"sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                        "size": {"type": "integer", "minimum": 0}}}
#: Schema of ``config.json`` around its ``config`` section (checked by ScDiTConfig.from_dict).
META_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "required": ["format_version", "config", "vocab", "covariates", "tokenizer", "var_names"],
    "properties": {
        "format_version": {"type": "integer"},
        "config": {"type": "object"},
        "vocab": {"type": "object", "additionalProperties": False,
                  "required": ["control", "separator", "atoms", "conditions"],
                  "properties": {"control": {"type": "string"}, "separator": {"type": ["string", "null"]},
                                 "atoms": _STRINGS, "conditions": _STRINGS,
                                 "featured": _STRINGS}},
        "covariates": {"type": "object", "additionalProperties": _STRINGS},
        "tokenizer": {"type": "object", "properties": {
            "kind": {"type": "string"}, "genes": _STRINGS,
            "n_tokens": {"type": "integer", "minimum": 1, "maximum": 100_000},
            "patch_size": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
            "n_features": {"type": "integer", "minimum": 1, "maximum": 1_000_000}}},
        "var_names": _STRINGS,
        "summary": {"type": ["object", "null"]},
        "files": {"type": "object", "additionalProperties": False,
                  "required": [WEIGHTS, REFERENCE],
                  "properties": {WEIGHTS: _FILE, REFERENCE: _FILE}},
    },
}


def build_field(cfg: ScDiTConfig, tokenizer: Tokenizer, vocab: ConditionVocab,
                covariates: CovariateVocab, features: np.ndarray | None = None) -> VelocityField:
    """Fresh velocity field sized for the tokenizer and vocabularies.

    Parameters
    ----------
    cfg
        The model's configuration (resolved by ``fit``, or read from a model file).
    tokenizer
        The fitted tokenizer: its layout sizes the backbone; with target marks, its gene order
        and its code of zero expression place and anchor the marks.
    vocab, covariates
        Perturbation and covariate vocabularies (the encoder's rows).
    features
        The perturbation feature table (seen atoms, then featured ones). When the
        configuration has features but none are given (loading), a zero table of the right
        shape is made for ``load_state_dict`` to fill.

    Returns
    -------
    VelocityField
        The backbone, the condition encoder and, with ``cfg.conditions.target_marks``, a
        :class:`~scdit.models.TargetMarks` head over ``vocab``'s atoms that are genes.

    Raises
    ------
    ValueError
        If the configuration asks for target marks and the tokenizer is not a gene tokenizer
        (possible only in a hand-edited configuration: ``fit`` refuses it earlier).
    """
    d = cfg.dit
    layout = (tokenizer.n_tokens, tokenizer.patch_size, tokenizer.n_features)
    gene_init = tokenizer.gene_embedding_init  # user gene features (fit only)
    if d.backbone == "mlp":
        dit = MLPVelocity(*layout, d.hidden_size, d.depth, mlp_ratio=d.mlp_ratio,
                          activation=d.activation)
        if gene_init is not None:
            warnings.warn("The gene features passed to the tokenizer initialise the DiT's gene "
                          "identity embeddings; the MLP backbone (DiTConfig.backbone='mlp') has "
                          "none, so they are not used.", UserWarning, stacklevel=2)
    else:
        dit = DiT(*layout, d.hidden_size, d.depth, d.num_heads, d.mlp_ratio, d.activation)
        if gene_init is not None:
            dit.embed.init_identity(gene_init)
    c = cfg.conditions
    if features is None and c.features != "none":
        features = np.zeros((len(vocab.atoms) + len(vocab.featured), c.n_features), np.float32)
    encoder = ConditionEncoder(len(vocab.atoms), covariates.sizes(), d.hidden_size,
                               features=features, residual_dropout=c.residual_dropout,
                               use_dose=cfg.data.dose_key is not None)
    marks = None
    if c.target_marks:  # resolved by fit: a gene tokenizer and targeted genes
        if tokenizer.kind != "genes":
            raise ValueError(
                "The configuration has conditions.target_marks = true, which needs the gene "
                f"tokenizer (tokenizer.kind 'genes'); this model's tokenizer is "
                f"{tokenizer.kind!r}. Set target_marks to false in the model's config.json, or "
                "refit with the gene tokenizer.")
        zero = tokenizer.encode(torch.zeros(1, tokenizer.n_genes)).reshape(-1)  # (T*P,)
        marks = TargetMarks(target_slots(vocab.atoms + vocab.featured, tokenizer.genes), zero)
    return VelocityField(dit, encoder, marks)


# ---------------------------------------------------------------------------------- saving
def write_model(path: str | Path, model, overwrite: bool = False) -> Path:
    """Write ``model`` into the folder ``path`` atomically (see the module docstring).

    Parameters
    ----------
    path
        Target folder; created with its parents. An existing one is replaced as a whole, so it
        may only hold a previous model's files.
    model
        A :class:`scdit.ScDiT`.
    overwrite
        Replace a non-empty ``path``; otherwise that is an error.

    Returns
    -------
    ``path``.

    Raises
    ------
    FileExistsError
        ``path`` is a file, is not empty (without ``overwrite``), or holds other files than a
        model's.
    ValueError
        The model's weights hold NaN or infinite values (such a model could not be loaded).
    """
    out = Path(path)
    target = Path(os.path.realpath(out))
    _check_target(target, overwrite)
    meta, tensors = _contents(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_folder(target)
    try:
        safetensors.torch.save_file(tensors, str(tmp / WEIGHTS))
        model.reference.write_h5ad(tmp / REFERENCE, compression="gzip")
        meta["files"] = {name: _file_record(tmp / name) for name in (WEIGHTS, REFERENCE)}
        with open(tmp / CONFIG, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(meta, indent=2, default=str))
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(tmp)
        _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _remove_leftovers(target)
    return out


def _check_target(target: Path, overwrite: bool) -> None:
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} is a file; give a folder path for the model.")
    if Path.cwd() == target or target in Path.cwd().parents:
        raise FileExistsError(f"{target} is the working directory (or holds it); save the model "
                              "into a sub-folder.")
    entries = sorted(p.name for p in target.iterdir()) if target.is_dir() else []
    if entries and not overwrite:
        raise FileExistsError(f"{target} exists and is not empty; pass overwrite=True.")
    foreign = [e for e in entries if e not in MODEL_FILES]
    if foreign:
        raise FileExistsError(
            f"{target} holds files that are not part of an scdit model ({foreign[:5]}); "
            "overwrite=True replaces the whole folder, so save into another folder or move them.")


def _new_folder(target: Path) -> Path:
    """An empty temporary folder next to ``target`` (same filesystem), with the permissions of
    the folder it replaces (else the umask's; ``tempfile.mkdtemp`` would give 0700)."""
    while True:
        tmp = target.parent / f".{target.name}{_TMP}{secrets.token_hex(4)}"
        try:
            tmp.mkdir()
        except FileExistsError:
            continue
        if target.is_dir():
            shutil.copymode(target, tmp)
        return tmp


def _contents(model) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    tok_meta, tok_arrays = model.tokenizer.state()
    meta = {"format_version": FORMAT_VERSION, "config": model.config.to_dict(),
            "vocab": model.vocab.to_dict(), "covariates": model.covariates.to_dict(),
            "tokenizer": tok_meta, "var_names": list(map(str, model.var_names)),
            "summary": model.summary}
    tensors = {f"field.{k}": v.detach().cpu().contiguous()
               for k, v in model.field.state_dict().items()}
    tensors.update({f"tokenizer.{k}": torch.as_tensor(v) for k, v in tok_arrays.items()})
    bad = _non_finite(tensors)
    if bad:
        raise ValueError(f"The model's weights hold NaN or infinite values ({bad[:3]}); it cannot "
                         "be saved. Training diverged: refit, e.g. with a lower learning rate.")
    return meta, tensors


def _file_record(file: Path) -> dict[str, Any]:
    """``{"sha256", "size"}`` of a written file, after flushing it to disk."""
    with open(file, "rb") as fh:
        os.fsync(fh.fileno())
    return {"sha256": _sha256(file), "size": file.stat().st_size}


def _sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":  # folders cannot be opened for fsync elsewhere
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse it; the renames are still atomic
        pass
    finally:
        os.close(fd)


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Make the complete folder ``tmp`` the folder ``target``; remove what it replaces."""
    if not os.path.lexists(target):
        os.rename(tmp, target)
    elif _exchange(tmp, target):
        _fsync_dir(target.parent)
        shutil.rmtree(tmp, ignore_errors=True)  # the previous model
    else:
        old = target.parent / tmp.name.replace(_TMP, _OLD)
        os.rename(target, old)
        try:
            os.rename(tmp, target)
        except BaseException:
            os.rename(old, target)
            raise
        _fsync_dir(target.parent)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(target.parent)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # libc without renameat2
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # filesystem without exchange
        return False
    raise OSError(err, os.strerror(err), str(b))


def _leftovers(target: Path, kind: str) -> list[Path]:
    return sorted(target.parent.glob(f".{glob.escape(target.name)}{kind}*"))


def _remove_leftovers(target: Path) -> None:
    """Remove temporary folders that an interrupted (killed) earlier save left next to target."""
    for p in _leftovers(target, _TMP) + _leftovers(target, _OLD):
        shutil.rmtree(p, ignore_errors=True)


# --------------------------------------------------------------------------------- loading
def read_model(path: str | Path) -> dict:
    """The parts of a model written by :func:`write_model`, as keyword arguments of
    :class:`scdit.ScDiT`, each file checked first (see the module docstring).

    Raises
    ------
    FileNotFoundError
        No ``config.json`` in ``path``, or a file of the model is missing.
    ValueError, TypeError
        A damaged, edited or newer-format file: the message names the file, the key and the fix.
    """
    path = Path(path)
    cfg_file = path / CONFIG
    if not cfg_file.is_file():
        raise FileNotFoundError(_missing_message(path))
    meta = _read_meta(cfg_file)
    version = _check_version(meta, cfg_file)
    check_json(meta, META_SCHEMA, str(cfg_file))
    cfg = ScDiTConfig.from_dict(meta["config"], where=str(cfg_file))
    _verify_files(path, meta.get("files"), version, cfg_file)
    vocab = ConditionVocab.from_dict(meta["vocab"])
    covs = CovariateVocab.from_dict(meta["covariates"])
    weights = path / WEIGHTS
    try:
        with safetensors.safe_open(str(weights), framework="pt") as fh:
            keys = sorted(fh.keys())
            tok_arrays = {k: fh.get_tensor(k) for k in keys if k.startswith("tokenizer.")}
            _refuse_non_finite(tok_arrays, weights)
            tok = tokenizer_from_state(meta["tokenizer"], {k.split(".", 1)[1]: v.numpy()
                                                           for k, v in tok_arrays.items()})
            shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in keys
                      if not k.startswith("tokenizer.")}
            _check_shapes(_expected_shapes(cfg, tok, vocab, covs, cfg_file), shapes, cfg, tok,
                          weights, cfg_file)
            state = {k: fh.get_tensor(k) for k in shapes}
    except safetensors.SafetensorError as err:
        raise ValueError(f"{weights} cannot be read ({err}); the file is damaged: re-save or "
                         "re-fit the model.") from None
    _refuse_non_finite(state, weights)
    if hasattr(tok, "gene_idx") and len(tok.gene_idx) != len(tok.genes):  # older models
        tok.gene_idx = pd.Index(meta["var_names"]).get_indexer(list(tok.genes)).astype(np.int64)
    field = build_field(cfg, tok, vocab, covs)
    field.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items()})
    try:
        reference = ad.read_h5ad(path / REFERENCE)
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(f"{path / REFERENCE} cannot be read ({type(err).__name__}: {err}); the "
                         "file is damaged: re-save or re-fit the model.") from None
    return {"config": cfg, "vocab": vocab, "covariates": covs, "tokenizer": tok, "field": field,
            "var_names": meta["var_names"], "reference": reference,
            "summary": meta.get("summary")}


def _missing_message(path: Path) -> str:
    msg = f"No scdit model in {path} ({CONFIG} missing)."
    if not os.path.lexists(path):
        kept = [p for p in _leftovers(Path(os.path.realpath(path)), _OLD) if (p / CONFIG).is_file()]
        if kept:
            msg += (f" An interrupted save left the previous model in {kept[-1]}: rename that "
                    f"folder to {path}.")
    return msg


def _read_meta(cfg_file: Path) -> dict[str, Any]:
    try:
        meta = json.loads(cfg_file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{cfg_file} is not UTF-8 text (byte {err.start}); the file is "
                         "damaged: re-save the model.") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{cfg_file} is not valid JSON ({err.msg} at line {err.lineno}, column "
                         f"{err.colno}); the file is truncated or damaged: re-save the model or "
                         "restore the file from a copy.") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{cfg_file} must hold a JSON object, got {type(meta).__name__}; it is "
                         "not an scdit model file.")
    return meta


def _check_version(meta: dict[str, Any], cfg_file: Path) -> int:
    if "format_version" not in meta:
        raise ValueError(f"{cfg_file} has no 'format_version'; it is not an scdit model file "
                         "(or it is damaged).")
    v = meta["format_version"]
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{cfg_file}: format_version must be an integer, got {type(v).__name__} "
                        f"{v!r}; the file is damaged or was edited: re-save the model.")
    if v > FORMAT_VERSION:
        raise ValueError(f"{cfg_file}: the model was saved by a newer scdit (format {v}; this one "
                         f"reads formats 1 to {FORMAT_VERSION}); upgrade scdit.")
    if v < 1:
        raise ValueError(f"{cfg_file}: format_version {v} is not a format of scdit (1 to "
                         f"{FORMAT_VERSION}); the file is damaged or was edited.")
    return v


def _verify_files(path: Path, files: dict | None, version: int, cfg_file: Path) -> None:
    """Every model file present; sizes and sha256 as recorded (format 1 records none)."""
    if files is None and version >= 2:
        raise ValueError(f"{cfg_file} (format {version}) lacks its 'files' section (the sha256 "
                         "of the model files); it is damaged or was edited: re-save the model.")
    for name in (WEIGHTS, REFERENCE):
        file = path / name
        if not file.is_file():
            raise FileNotFoundError(f"{file} is missing; the model folder is incomplete: re-save "
                                    "or re-fit the model.")
        if files is None:
            continue
        size, want = file.stat().st_size, files[name]
        if size != want["size"] or _sha256(file) != want["sha256"]:
            raise ValueError(f"{name} is damaged: sha256 mismatch ({file}: {size} bytes, "
                             f"{want['size']} recorded); re-save or re-fit the model.")


def _non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    return [k for k, v in tensors.items()
            if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def _refuse_non_finite(tensors: dict[str, torch.Tensor], file: Path) -> None:
    bad = _non_finite(tensors)
    if bad:
        raise ValueError(f"{file} holds NaN or infinite values in {len(bad)} tensor(s) "
                         f"({bad[:3]}); the weights are damaged: re-save or re-fit the model.")


def _expected_shapes(cfg: ScDiTConfig, tok: Tokenizer, vocab: ConditionVocab,
                     covs: CovariateVocab, cfg_file: Path) -> dict[str, tuple[int, ...]]:
    """Weight shapes the configuration implies, from a field built on the meta device (no
    memory is allocated, whatever the sizes; the feature table is a zero-stride placeholder)."""
    c, table = cfg.conditions, None
    if c.features != "none":
        table = np.broadcast_to(np.float32(0), (len(vocab.atoms) + len(vocab.featured),
                                                c.n_features))
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            shell = build_field(cfg, tok, vocab, covs, features=table)
    except (ValueError, TypeError, RuntimeError) as err:
        raise ValueError(f"{cfg_file} does not describe a model that can be built ({err}); the "
                         "file is damaged or was edited by hand: undo the edit, or refit and "
                         "save the model again.") from None
    return {f"field.{k}": tuple(v.shape) for k, v in shell.state_dict().items()}


def _check_shapes(expected: dict[str, tuple], actual: dict[str, tuple], cfg: ScDiTConfig,
                  tok: Tokenizer, weights: Path, cfg_file: Path) -> None:
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    wrong = [k for k in sorted(set(expected) & set(actual)) if expected[k] != actual[k]]
    if not (missing or extra or wrong):
        return
    parts = []
    if wrong:
        k = wrong[0]
        parts.append(f"{k} has shape {actual[k]} but the configuration implies {expected[k]}"
                     + (f" ({len(wrong) - 1} more such tensors)" if len(wrong) > 1 else ""))
    if missing:
        parts.append(f"{len(missing)} tensor(s) missing ({missing[:3]})")
    if extra:
        parts.append(f"{len(extra)} unexpected tensor(s) ({extra[:3]})")
    d = cfg.dit
    raise ValueError(
        f"{weights} does not match {cfg_file}: {'; '.join(parts)} (configuration: backbone="
        f"{d.backbone!r}, hidden_size={d.hidden_size}, depth={d.depth}, num_heads={d.num_heads}, "
        f"mlp_ratio={d.mlp_ratio}; "
        f"{tok.n_tokens} tokens of {tok.patch_size}). The files do not belong together: restore "
        "the original config.json, or re-save the model.")
