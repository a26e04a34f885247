"""Plan target files: the shipped plans load with the plans' own numbers; bad files get
their exact message."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.targets import Plan, TargetsError, load_plan, load_targets, parse_plan
from tests.conftest import REPO

TARGETS = REPO / "configs" / "targets"
TESTDATA = REPO / "tests" / "testdata" / "collector"


def _goals(plan: Plan) -> dict[tuple[str, str], float | None]:
    return {(g.indicator, g.level): g.goal for g in plan.goals}


def test_every_shipped_target_file_loads() -> None:
    plans = load_targets(sorted(TARGETS.glob("*.yaml")))
    assert {p.plan for p in plans} == {
        "bac-kan-2012",
        "long-an-2010",
        "ha-nam-2017",
        "ca-mau-2013",
        "thai-nguyen-2026",
    }
    assert all(p.reference and p.title for p in plans)


def test_bac_kan_2012_has_the_plans_numbers() -> None:
    plan = load_plan(TARGETS / "bac-kan-2012.yaml")
    goals = _goals(plan)
    assert goals[("dedicated_network", "commune")] == 0.6
    for indicator in ("lan", "internet", "dedicated_network", "wan"):
        assert goals[(indicator, "agency")] == goals[(indicator, "district")] == 1.0
    assert goals[("computers_connected", "commune")] == 1.0
    assert goals[("computers_per_official", "all")] == 1.0
    assert {g.deadline for g in plan.goals} == {2015}
    assert plan.untracked  # the reporting duty is kept, as text


def test_long_an_and_ha_nam() -> None:
    long_an = _goals(load_plan(TARGETS / "long-an-2010.yaml"))
    assert long_an[("internet", "commune")] == long_an[("wan", "commune")] == 0.9
    ha_nam = load_plan(TARGETS / "ha-nam-2017.yaml")
    assert _goals(ha_nam)[("computers_per_official", "all")] == 1.0
    assert _goals(ha_nam)[("antivirus_protected", "all")] == 1.0
    assert {g.deadline for g in ha_nam.goals} == {2020}


def test_ca_mau_directions_have_no_invented_numbers() -> None:
    plan = load_plan(TARGETS / "ca-mau-2013.yaml")
    assert plan.goals and all(g.goal is None for g in plan.goals)
    wan_agency = next(g for g in plan.goals if (g.indicator, g.level) == ("wan", "agency"))
    assert wan_agency.sectors == ("party", "state")


def test_two_level_example_is_marked_as_example() -> None:
    plan = load_plan(TARGETS / "thai-nguyen-2026.yaml")
    assert plan.example
    assert {g.level for g in plan.goals} <= {"agency", "commune", "all"}


def test_computers_per_official_may_exceed_one(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "plan: p\ntitle: t\nreference: r\ngoals:\n"
        "  - {indicator: computers_per_official, level: all, goal: 1.5, deadline: 2030}\n",
        encoding="utf-8",
    )
    assert load_plan(path).goals[0].goal == 1.5


def test_duplicate_plan_ids_across_files(tmp_path: Path) -> None:
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text(
            "plan: same\ntitle: t\nreference: r\ngoals: []\n", encoding="utf-8"
        )
    with pytest.raises(TargetsError) as caught:
        load_targets([tmp_path / "a.yaml", tmp_path / "b.yaml"])
    assert str(caught.value) == "b.yaml: plan: duplicate plan id 'same' (also in a.yaml)"


INVALID = [
    (
        "invalid-targets-bad-deadline.yaml",
        "invalid-targets-bad-deadline.yaml: goals[0].deadline: must be a year, got 'cuối năm 2015'",
    ),
    (
        "invalid-targets-duplicate-goal.yaml",
        "invalid-targets-duplicate-goal.yaml: goals[2]: duplicate goal for lan at level agency"
        " (also goals[0])",
    ),
    (
        "invalid-targets-goal-negative.yaml",
        "invalid-targets-goal-negative.yaml: goals[0].goal: -1 is outside 0..100 (a ratio:"
        " write 60 % as 0.6)",
    ),
    (
        "invalid-targets-goal-percent.yaml",
        "invalid-targets-goal-percent.yaml: goals[0].goal: 60 is outside 0..1 (a ratio: write"
        " 60 % as 0.6)",
    ),
    (
        "invalid-targets-goal-text.yaml",
        "invalid-targets-goal-text.yaml: goals[0].goal: must be a number or null, got '90%'",
    ),
    (
        "invalid-targets-missing-deadline.yaml",
        "invalid-targets-missing-deadline.yaml: goals[0].deadline: missing",
    ),
    (
        "invalid-targets-missing-goal.yaml",
        "invalid-targets-missing-goal.yaml: goals[1].goal: missing (null for a direction"
        " without a number)",
    ),
    (
        "invalid-targets-missing-reference.yaml",
        "invalid-targets-missing-reference.yaml: reference: missing",
    ),
    (
        "invalid-targets-unknown-indicator.yaml",
        "invalid-targets-unknown-indicator.yaml: goals[1].indicator: unknown 'fiber' (one of"
        " lan, internet, wan, dedicated_network, computers_per_official, computers_connected,"
        " antivirus_protected, antivirus_managed, computers_patched, ipv6, security_inspection)",
    ),
    (
        "invalid-targets-unknown-key.yaml",
        "invalid-targets-unknown-key.yaml: goals[0].target: unknown key (allowed: deadline,"
        " denominator, goal, indicator, level, note, officials_basis, requires, sectors, text)",
    ),
    (
        "invalid-targets-officials-basis.yaml",
        "invalid-targets-officials-basis.yaml: goals[0].officials_basis: 'everyone': for"
        " computers_per_official goals only, one of professional_work, officials_and_employees,"
        " all_officials",
    ),
    (
        "invalid-targets-unknown-level.yaml",
        "invalid-targets-unknown-level.yaml: goals[0].level: unknown 'village' (one of"
        " province, agency, district, commune, all)",
    ),
    (
        "invalid-targets-unknown-sector.yaml",
        "invalid-targets-unknown-sector.yaml: goals[0].sectors: unknown sector 'army' (one of"
        " state, party, mass_organisation)",
    ),
    (
        "invalid-targets-broadband-rate.yaml",
        "invalid-targets-broadband-rate.yaml: broadband.min_download_bps: must be a whole"
        " number from 1_000 to 100_000_000_000, got '10 Mbit/s' (bits per second: 10 Mbit/s"
        " is 10_000_000)",
    ),
    (
        "invalid-targets-broadband-rule.yaml",
        "invalid-targets-broadband-rule.yaml: broadband.rule: unknown 'average' (one of"
        " median, latest)",
    ),
    (
        "invalid-targets-broadband-unknown-key.yaml",
        "invalid-targets-broadband-unknown-key.yaml: broadband.max_latency: unknown key"
        " (allowed: min_download_bps, rule, window)",
    ),
    (
        "invalid-targets-broadband-window.yaml",
        "invalid-targets-broadband-window.yaml: broadband.window: '10m' is out of range (1h"
        " to 90d)",
    ),
    (
        "invalid-targets-requires-broadband-wan.yaml",
        "invalid-targets-requires-broadband-wan.yaml: goals[0].requires: broadband is for"
        " internet goals only",
    ),
    (
        "invalid-targets-requires-computers.yaml",
        "invalid-targets-requires-computers.yaml: goals[0].requires: only for lan, internet,"
        " wan, dedicated_network goals",
    ),
    (
        "invalid-targets-requires-not-reachable.yaml",
        "invalid-targets-requires-not-reachable.yaml: goals[0].requires: must include"
        " reachable (a unit that cannot reach a network neither uses it nor has broadband on"
        " it)",
    ),
    (
        "invalid-targets-requires-unknown.yaml",
        "invalid-targets-requires-unknown.yaml: goals[0].requires: unknown 'busy' (one of"
        " reachable, broadband, used)",
    ),
    (
        "invalid-targets-requires-used-lan.yaml",
        "invalid-targets-requires-used-lan.yaml: goals[0].requires: used is for"
        " dedicated_network, internet, wan goals only",
    ),
    (
        "invalid-targets-use-missing.yaml",
        "invalid-targets-use-missing.yaml: goals[0].requires: used needs the plan's use:"
        " {min_bytes_per_day: ...}",
    ),
    (
        "invalid-targets-use-threshold.yaml",
        "invalid-targets-use-threshold.yaml: use.min_bytes_per_day: must be a whole number"
        " from 1 to 1_000_000_000_000_000, got -1 (bytes in + out a day: 10 MB is 10_000_000)",
    ),
]


def test_the_invalid_table_covers_every_invalid_targets_file() -> None:
    assert {name for name, _ in INVALID} == {
        p.name for p in TESTDATA.glob("invalid-targets-*.yaml")
    }


@pytest.mark.parametrize(("name", "message"), INVALID, ids=[name for name, _ in INVALID])
def test_invalid_targets_file_gets_its_exact_message(name: str, message: str) -> None:
    with pytest.raises(TargetsError) as caught:
        load_plan(TESTDATA / name)
    assert str(caught.value) == message


# Text fields and unknown keys go through collector/fields.py, shared with org files.
_PLAN = {"plan": "p-2015", "title": "Kế hoạch", "reference": "Quyết định 1", "goals": []}
_GOAL = {"indicator": "lan", "level": "commune", "goal": 1, "deadline": 2015}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            {"note": "  "}, "plan.yaml: note: must be non-empty text, got '  '", id="blank"
        ),
        pytest.param(
            {"title": ["a"]}, "plan.yaml: title: must be non-empty text, got a list", id="list"
        ),
        pytest.param(
            {"goals": [{**_GOAL, "text": "x" * 5000}]},
            "plan.yaml: goals[0].text: too long: 5000 characters (at most 4096)",
            id="long-text",
        ),
        pytest.param(
            {"plans": 1},
            "plan.yaml: plans: unknown key (allowed: broadband, example, goals, note, plan,"
            " province, reference, title, title_en, untracked, use)",
            id="unknown-top-key",
        ),
        pytest.param(
            {"untracked": [{"text": "t", "reason": "r", "goal": {"a": 1}}]},
            "plan.yaml: untracked[0].goal: must be text or a number, got a mapping",
            id="untracked-goal-mapping",
        ),
        pytest.param(
            {"untracked": [{"text": "t"}]},
            "plan.yaml: untracked[0].reason: missing",
            id="untracked-reason-missing",
        ),
        pytest.param(
            {"goals": [{**_GOAL, "indicator": ["lan"]}]},
            "plan.yaml: goals[0].indicator: unknown a list (one of lan, internet, wan,"
            " dedicated_network, computers_per_official, computers_connected,"
            " antivirus_protected, antivirus_managed, computers_patched, ipv6,"
            " security_inspection)",
            id="indicator-list",
        ),
    ],
)
def test_field_errors_name_goal_and_key(change: dict[str, object], message: str) -> None:
    with pytest.raises(TargetsError) as caught:
        parse_plan({**_PLAN, **change}, "plan.yaml")
    assert str(caught.value) == message


def test_untracked_scalars_keep_the_plans_wording() -> None:
    untracked = [{"text": "Báo cáo", "reason": "r", "goal": "hằng quý", "deadline": 2015}]
    plan = parse_plan({**_PLAN, "untracked": untracked})
    assert (plan.untracked[0].goal, plan.untracked[0].deadline) == ("hằng quý", "2015")


# Each plan line of /work/shared/PLANS.md that hatang can observe (fully, through a
# declaration, or as a duty it supports), as the target file must carry it: a goal
# (indicator, level) or an untracked item whose text contains the words given.
PLAN_LINES: dict[str, list[tuple[str, str] | str]] = {
    "bac-kan-2012": [
        ("lan", "agency"), ("lan", "district"), ("internet", "agency"), ("internet", "district"),
        ("dedicated_network", "agency"), ("dedicated_network", "district"), ("wan", "agency"),
        ("wan", "district"), ("dedicated_network", "commune"), ("computers_connected", "commune"),
        ("computers_per_official", "all"), "Báo cáo tiến độ",
    ],
    "long-an-2010": [
        ("lan", "agency"), ("lan", "district"), ("wan", "agency"), ("wan", "district"),
        ("internet", "commune"), ("wan", "commune"), "giải pháp an toàn thông tin",
        "hệ thống thông tin trọng yếu",
    ],
    "ha-nam-2017": [
        ("computers_per_official", "all"), ("antivirus_protected", "all"), ("wan", "commune"),
        ("dedicated_network", "commune"), ("security_inspection", "agency"), "Báo cáo UBND tỉnh",
    ],
    "ca-mau-2013": [
        ("internet", "commune"), ("dedicated_network", "commune"), ("wan", "agency"),
        ("wan", "district"),
    ],
}  # fmt: skip


def test_every_target_file_is_loaded_and_every_goal_is_computed() -> None:
    """Every file in configs/targets/ loads; every goal's indicator has a rule that the
    snapshot computes (at every level, with and without data); every line hatang cannot
    measure is kept as untracked text with a reason."""
    import datetime as dt

    from collector.indicators import IndicatorSettings, build_snapshot
    from tests.collector.test_indicators import DEMO, make_agent

    files = sorted(TARGETS.glob("*.yaml"))
    plans = load_targets(files)
    assert [Path(p.file).name for p in plans] == [f.name for f in files]
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    agents = [make_agent("demo/xa-an-binh", "pc1", av="protected")]
    for data in ([], agents):
        snapshot = build_snapshot(DEMO, plans, IndicatorSettings(), now, data, [], {}, [])
        goals = {(g.plan, g.indicator, g.level): g for g in snapshot.goals}
        for plan in plans:
            for goal in plan.goals:
                view = goals[(plan.plan, goal.indicator, goal.level)]
                assert view.measured.indicator == goal.indicator
    for plan in plans:
        for item in plan.untracked:
            assert item.text.strip() and len(item.reason.strip()) > 10, (plan.plan, item)


@pytest.mark.parametrize("plan_id", sorted(PLAN_LINES))
def test_each_observable_plan_line_is_in_its_target_file(plan_id: str) -> None:
    plan = next(p for p in load_targets(sorted(TARGETS.glob("*.yaml"))) if p.plan == plan_id)
    goals = {(g.indicator, g.level) for g in plan.goals}
    texts = [u.text for u in plan.untracked]
    for line in PLAN_LINES[plan_id]:
        if isinstance(line, tuple):
            assert line in goals, f"{plan_id}: goal {line} missing"
        else:
            assert any(line in text for text in texts), f"{plan_id}: untracked {line!r} missing"
