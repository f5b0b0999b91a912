"""Dataset cards: schema, validation, shipped cards, listing and registration."""

from __future__ import annotations

import copy
import hashlib
import json
from importlib import resources
from pathlib import Path

import pytest

from scdit import datasets as ds
from scdit.datasets._registry import _builtin_cards, format_size

REPO = Path(__file__).resolve().parents[2]
CARD_DIR = resources.files("scdit.datasets").joinpath("_registry_cards")
EXPECTED = {
    "norman19",
    "replogle22_k562_essential",
    "replogle22_rpe1",
    "adamson16",
    "dixit16",
    "kang18",
    "srivatsan20_sciplex3",
    "papalexi21",
    "frangieh21",
    "mcfaline23",
    "tahoe100m",
    "norman19_devel",
    "glioblastoma_panobinostat",
    "papalexi21_thp1_lowmoi",
}
CARDS = sorted(_builtin_cards())


def test_expected_cards_are_shipped():
    assert set(CARDS) == EXPECTED
    files = sorted(e.name for e in CARD_DIR.iterdir() if e.name.endswith(".yaml"))
    assert files == sorted(f"{n}.yaml" for n in EXPECTED)


def test_names_and_aliases_are_unique():
    seen: set[str] = set()
    for name in CARDS:
        for key in [name, *ds.get_card(name).get("aliases", [])]:
            assert key not in seen, key
            seen.add(key)


@pytest.mark.parametrize("name", CARDS)
def test_card_is_valid_and_consistent(name):
    card = ds.get_card(name)
    ds.validate_card(card)
    src = card["source"]
    assert src["verified"] == (src["sha256"] is not None)
    assert all(u.startswith("https://") for u in src["urls"])
    assert card["citation"]["text"].strip()
    if not card["bundled"] and not card.get("out_of_core"):
        assert src["urls"]
    if card["bundled"]:
        assert not src["urls"] and card["stats"].get("approximate") is False


@pytest.mark.parametrize("name", CARDS)
def test_cards_also_satisfy_jsonschema(name):
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(ds.CARD_SCHEMA)
    jsonschema.validate(ds.get_card(name), ds.CARD_SCHEMA)


@pytest.mark.parametrize("name", ["norman19_devel", "glioblastoma_panobinostat",
                                  "papalexi21_thp1_lowmoi"])
def test_bundled_checksums_match_package_files(name):
    card = ds.get_card(name)
    res = resources.files("scdit.datasets").joinpath("_data", card["source"]["filename"])
    data = res.read_bytes()
    assert len(data) == card["source"]["size_bytes"]
    assert hashlib.sha256(data).hexdigest() == card["source"]["sha256"]
    licences = {e.name for e in resources.files("scdit.datasets").joinpath("_data").iterdir()}
    assert {"LICENSE.perturbench.txt", "LICENSE.lemur.txt", "README.md"} <= licences


def test_schema_copy_in_data_registry_is_identical():
    on_disk = json.loads((REPO / "data_registry" / "schema.json").read_text())
    assert on_disk == json.loads(json.dumps(ds.CARD_SCHEMA))


def test_data_registry_readme_lists_every_card():
    text = (REPO / "data_registry" / "README.md").read_text()
    missing = [n for n in CARDS if f"`{n}`" not in text]
    assert not missing


def _good() -> dict:
    return ds.get_card("norman19")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.pop("license"), "missing required field 'license'"),
        (lambda c: c.update(organism="yeast"), "organism: 'yeast' is not one of"),
        (lambda c: c["source"].update(sha256="abc"), "source.sha256: 'abc' does not match"),
        (lambda c: c.update(colour="red"), "colour: unknown field"),
        (lambda c: c["source"].update(verified=True), "verified: true requires a source.sha256"),
        (lambda c: c["source"].update(urls=["ftp://x"]), "source.urls[0]"),
        (lambda c: c["source"].update(urls=[]), "needs at least one URL"),
        (lambda c: c["stats"].update(n_cells=-1), "stats.n_cells: -1 is below the minimum"),
        (lambda c: c["stats"].update(n_cells=True), "stats.n_cells: expected integer or null"),
        (lambda c: c.update(perturbation_type=[]), "perturbation_type: needs at least 1"),
        (lambda c: c.update(name="Bad Name"), "name: 'Bad Name' does not match"),
    ],
)
def test_validation_errors_name_the_field(edit, message):
    card = _good()
    edit(card)
    with pytest.raises(ds.CardValidationError) as err:
        ds.validate_card(card)
    assert message in str(err.value)


def test_list_works_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("SCDIT_OFFLINE", "1")
    table = ds.list(cache_dir=tmp_path)
    assert ds.list is ds.list_datasets and "list" not in ds.__all__
    assert {
        "name",
        "size",
        "license",
        "cells",
        "perturbations",
        "bundled",
        "verified",
        "cached",
    } <= set(table.columns)
    assert set(table["name"]) == EXPECTED
    bundled = table.set_index("name").loc[["norman19_devel", "glioblastoma_panobinostat",
                                          "papalexi21_thp1_lowmoi"]]
    assert bundled["bundled"].all() and bundled["verified"].all() and bundled["cached"].all()
    assert bundled.loc["norman19_devel", "cells"] == 5961
    assert not table.set_index("name").loc["norman19", "cached"]


def test_lookup_by_alias_and_unknown_name():
    assert ds.get_card("zhao21")["name"] == "glioblastoma_panobinostat"
    assert ds.get_card("SciPlex3")["name"] == "srivatsan20_sciplex3"
    with pytest.raises(KeyError, match="available: adamson16"):
        ds.get_card("no_such_dataset")


def test_get_card_returns_a_copy():
    card = ds.get_card("norman19")
    card["source"]["urls"].clear()
    assert ds.get_card("norman19")["source"]["urls"]


def test_register_from_mapping_and_yaml(tmp_path):
    card = copy.deepcopy(_good())
    card.update(name="my_copy", aliases=[])
    with pytest.raises(ValueError, match="already registered"):
        ds.register(_good())
    assert ds.register(card) == "my_copy"
    try:
        assert "my_copy" in set(ds.list()["name"])
        with pytest.raises(ValueError, match="overwrite=True"):
            ds.register(card)
    finally:
        ds.unregister("my_copy")
    path = tmp_path / "card.yaml"
    path.write_text(
        (REPO / "scdit/datasets/_registry_cards/kang18.yaml")
        .read_text()
        .replace("name: kang18", "name: kang_mirror")
        .replace("[kang2018]", "[]")
    )
    assert ds.register(path) == "kang_mirror"
    ds.unregister("kang_mirror")
    with pytest.raises(KeyError):
        ds.unregister("kang18")
    with pytest.raises(ds.CardValidationError):
        ds.register({"name": "x"})


def test_format_size():
    assert format_size(None) == "?"
    assert format_size(512) == "512 B"
    assert format_size(1_142_678) == "1.1 MB"
    assert format_size(2_500_000_000, exact=False) == "~2.5 GB"


@pytest.mark.parametrize("name", CARDS)
def test_every_card_says_where_its_checksum_comes_from(name):
    card = ds.get_card(name)
    src = card["source"]
    if card.get("out_of_core"):
        assert "checksum" not in src  # a pointer card: nothing is downloaded
    elif src["sha256"] is None:
        assert src["checksum"] == "recorded"
    else:
        assert src["checksum"] == "published"
    row = ds.list().set_index("name").loc[name]
    assert row["checksum"] == src.get("checksum")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.update(checksum="maybe"), "source.checksum: 'maybe' is not one of"),
        (lambda s: s.update(checksum="published"), "checksum: published requires the published"),
        (lambda s: s.update(checksum="recorded", sha256="a" * 64), "checksum: recorded means no"),
    ],
)
def test_checksum_field_is_validated(edit, message):
    card = _good()
    edit(card["source"])
    with pytest.raises(ds.CardValidationError, match=message):
        ds.validate_card(card)
