"""Organisation files: every shipped file loads, and each bad file gets its exact message."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.org import OrgError, load_org, parse_org
from tests.conftest import REPO

CONFIGS = REPO / "configs"
TESTDATA = REPO / "tests" / "testdata" / "collector"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("org.*.yaml")), ids=lambda p: p.name)
def test_every_shipped_org_file_loads(path: Path) -> None:
    org = load_org(path)
    assert org.get(org.province) is not None
    assert all(unit.name for unit in org.units)


def test_three_level_bac_kan_2015() -> None:
    org = load_org(CONFIGS / "org.bac-kan-2015.yaml")
    assert org.shape == "three-level"
    districts = {unit.name for unit in org.of_level("district")}
    assert districts == {
        "Thành phố Bắc Kạn",
        "Huyện Ba Bể",
        "Huyện Bạch Thông",
        "Huyện Chợ Đồn",
        "Huyện Chợ Mới",
        "Huyện Na Rì",
        "Huyện Ngân Sơn",
        "Huyện Pác Nặm",
    }
    bang_lung = org.get("bac-kan/cho-don/bang-lung")
    assert bang_lung is not None and bang_lung.name == "Thị trấn Bằng Lũng"
    assert bang_lung.parent == "bac-kan/cho-don" and bang_lung.officials
    assert all(org.children(d.id) for d in org.of_level("district"))
    tinh_uy = org.get("bac-kan/tinh-uy")
    assert tinh_uy is not None and tinh_uy.sector == "party"
    assert {u.sector for u in org.of_level("agency")} == {"state", "party", "mass_organisation"}


def test_two_level_thai_nguyen_2025_maps_every_old_bac_kan_unit() -> None:
    """Every unit of the old three-level tree names the unit(s) of the new tree that absorbed it."""
    old = load_org(CONFIGS / "org.bac-kan-2015.yaml")
    new = load_org(CONFIGS / "org.thai-nguyen-2025.yaml")
    assert new.shape == "two-level"
    assert not new.of_level("district")
    assert all(u.parent == "thai-nguyen" for u in new.units if u.level != "province")
    mapped = {entry.old_id for entry in new.mapping}
    assert mapped == {unit.id for unit in old.units}
    assert new.successors("bac-kan/cho-don/bang-lung") == ("thai-nguyen/xa-cho-don",)
    assert new.successors("bac-kan/so-tttt") == ("thai-nguyen/so-khcn",)
    # An abolished district maps to the communes of its area, all in the new tree.
    assert "thai-nguyen/xa-cho-don" in new.successors("bac-kan/cho-don")
    assert new.successors("bac-kan/khong-co") == ()


def test_demo_org_is_small_and_two_level() -> None:
    org = load_org(CONFIGS / "org.demo.yaml")
    assert org.shape == "two-level"
    assert [len(org.of_level(lvl)) for lvl in ("province", "agency", "commune")] == [1, 2, 3]
    assert org.get("demo/so-tttt") is not None and org.get("demo/xa-an-binh") is not None


INVALID = [
    (
        "invalid-org-bad-id.yaml",
        "invalid-org-bad-id.yaml: units[1]: id: invalid 'demo/Xã An Bình' (lowercase ascii"
        " words with '-', joined by '/', e.g. bac-kan/cho-don/bang-lung)",
    ),
    (
        "invalid-org-bad-officials.yaml",
        "invalid-org-bad-officials.yaml: units[1] (demo/xa-an-binh): officials: must be a whole"
        " number 0..1000000, got -5",
    ),
    (
        "invalid-org-officials-text.yaml",
        "invalid-org-officials-text.yaml: units[1] (demo/xa-an-binh): officials: must be a"
        " whole number 0..1000000, got '22 người'",
    ),
    (
        "invalid-org-commune-skips-district.yaml",
        "invalid-org-commune-skips-district.yaml: units[2] (demo/xa-an-binh): parent: a commune"
        " cannot be under province 'demo' (expected district)",
    ),
    (
        "invalid-org-commune-under-agency.yaml",
        "invalid-org-commune-under-agency.yaml: units[2] (demo/so-tttt/xa-an-binh): parent: a"
        " commune cannot be under agency 'demo/so-tttt' (expected province)",
    ),
    (
        "invalid-org-cycle.yaml",
        "invalid-org-cycle.yaml: units[1] (demo/huyen-a): parent: cycle demo/huyen-a ->"
        " demo/huyen-b -> demo/huyen-a",
    ),
    (
        "invalid-org-duplicate-id.yaml",
        "invalid-org-duplicate-id.yaml: units[2] (demo/xa-an-binh): id: duplicate (also units[1])",
    ),
    (
        "invalid-org-mapping-unknown-unit.yaml",
        "invalid-org-mapping-unknown-unit.yaml: mapping[1] (old-demo/huyen-a/xa-binh-minh): to:"
        " unknown unit 'demo/xa-binh-minh'",
    ),
    (
        "invalid-org-missing-name.yaml",
        "invalid-org-missing-name.yaml: units[1] (demo/xa-an-binh): name: missing (the unit's"
        " Vietnamese name)",
    ),
    (
        "invalid-org-no-province.yaml",
        "invalid-org-no-province.yaml: units: expected exactly one unit of level province with"
        " id 'demo'",
    ),
    (
        "invalid-org-unknown-key.yaml",
        "invalid-org-unknown-key.yaml: units[1] (demo/xa-an-binh): officals: unknown key"
        " (allowed: facts, id, kind, level, name, name_en, officials, parent, sector)",
    ),
    (
        "invalid-org-unknown-level.yaml",
        "invalid-org-unknown-level.yaml: units[1] (demo/ap-1): level: unknown 'hamlet' (one of"
        " province, agency, district, commune)",
    ),
    (
        "invalid-org-unknown-parent.yaml",
        "invalid-org-unknown-parent.yaml: units[1] (demo/xa-an-binh): parent: unknown unit"
        " 'demo/huyen-khong-co'",
    ),
    (
        "invalid-org-unknown-sector.yaml",
        "invalid-org-unknown-sector.yaml: units[1] (demo/hoi-nong-dan): sector: unknown 'union'"
        " (one of state, party, mass_organisation)",
    ),
    (
        "invalid-org-yaml.yaml",
        "invalid-org-yaml.yaml: line 4, column 5: expected ',' or '}', but got '{'"
        " (while parsing a flow mapping at line 3, column 5)",
    ),
]


def test_the_invalid_table_covers_every_invalid_org_file() -> None:
    assert {name for name, _ in INVALID} == {p.name for p in TESTDATA.glob("invalid-org-*.yaml")}


@pytest.mark.parametrize(("name", "message"), INVALID, ids=[name for name, _ in INVALID])
def test_invalid_org_file_gets_its_exact_message(name: str, message: str) -> None:
    with pytest.raises(OrgError) as caught:
        load_org(TESTDATA / name)
    assert str(caught.value) == message


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OrgError, match=r"org\.nope\.yaml: cannot read: No such file"):
        load_org(tmp_path / "org.nope.yaml")


def test_a_subtree_is_the_unit_and_everything_under_it() -> None:
    org = load_org(CONFIGS / "org.bac-kan-2015.yaml")
    ids = [unit.id for unit in org.subtree("bac-kan/cho-don")]
    assert ids[0] == "bac-kan/cho-don"
    assert "bac-kan/cho-don/bang-lung" in ids and "bac-kan/cho-don/ngoc-phai" in ids
    assert all(i == "bac-kan/cho-don" or i.startswith("bac-kan/cho-don/") for i in ids)
    assert len(org.subtree("bac-kan")) == len(org.units)
    assert org.subtree("bac-kan/nowhere") == []


# Text fields and unknown keys go through collector/fields.py, shared with targets files.
_UNITS = [
    {"id": "demo", "name": "Tỉnh Demo", "level": "province"},
    {"id": "demo/xa-an-binh", "name": "Xã An Bình", "level": "commune", "parent": "demo"},
]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            {"units": [_UNITS[0], {**_UNITS[1], "kind": "  "}]},
            "org.yaml: units[1] (demo/xa-an-binh): kind: must be non-empty text, got '  '",
            id="blank-kind",
        ),
        pytest.param(
            {"units": [_UNITS[0], {**_UNITS[1], "name_en": ["An Binh"]}]},
            "org.yaml: units[1] (demo/xa-an-binh): name_en: must be non-empty text, got a list",
            id="name-en-list",
        ),
        pytest.param(
            {"source": "x" * 5000},
            "org.yaml: source: too long: 5000 characters (at most 4096)",
            id="long-source",
        ),
        pytest.param(
            {"provinces": "demo"},
            "org.yaml: provinces: unknown key (allowed: as_of, mapping, name, province, shape,"
            " source, units)",
            id="unknown-top-key",
        ),
        pytest.param(
            {"mapping": [{"from": "old/a", "to": "demo/xa-an-binh", "ghi_chu": "x"}]},
            "org.yaml: mapping[0].ghi_chu: unknown key (allowed: from, name, note, to)",
            id="unknown-mapping-key",
        ),
        pytest.param(
            {"mapping": [{"from": "old/a", "to": [["demo/xa-an-binh"]]}]},
            "org.yaml: mapping[0] (old/a): to: unknown unit a list",
            id="mapping-to-nested-list",
        ),
        pytest.param(
            {"units": [_UNITS[0], {**_UNITS[1], "level": ["commune"]}]},
            "org.yaml: units[1] (demo/xa-an-binh): level: unknown a list (one of province,"
            " agency, district, commune)",
            id="level-list",
        ),
    ],
)
def test_field_errors_name_unit_and_key(change: dict[str, object], message: str) -> None:
    data = {"province": "demo", "units": _UNITS, **change}
    with pytest.raises(OrgError) as caught:
        parse_org(data, "org.yaml")
    assert str(caught.value) == message


def test_text_fields_are_stripped() -> None:
    units = [_UNITS[0], {**_UNITS[1], "kind": " xã ", "name_en": "An Binh commune\n"}]
    org = parse_org({"province": "demo", "units": units, "source": " Quyết định 1 "})
    unit = org.get("demo/xa-an-binh")
    assert unit is not None and (unit.kind, unit.name_en) == ("xã", "An Binh commune")
    assert org.source == "Quyết định 1"
