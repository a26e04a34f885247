"""Plan targets, loaded and validated from ``configs/targets/*.yaml``.

A plan states goals: for one indicator at one level, the goal ratio and the deadline
year, with the plan's reference so that a dashboard or an auditor can trace every
number to its document. Plans that set directions without numbers (Cà Mau 2013) have
goals with ``goal: null``: tracked and shown, never given an invented number. Goals
that no agent can observe are kept as text under ``untracked`` so the file stays a
faithful transcription of the plan.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, get_args

from agent.configerror import ConfigError, show
from agent.units import Duration
from collector import declarations
from collector.fields import Fields, load_yaml
from collector.org import SECTORS, Level, Sector

Indicator = Literal[
    "lan",
    "internet",
    "wan",
    "dedicated_network",
    "computers_per_official",
    "computers_connected",
    "antivirus_protected",
    "antivirus_managed",
    "computers_patched",
    "ipv6",
    "security_inspection",
]
INDICATORS: Final[tuple[Indicator, ...]] = get_args(Indicator)  # docs/indicators.md: each one
# A goal's level: one org level, or "all" for plan lines that cover every level.
GoalLevel = Literal[Level, "all"]
GOAL_LEVELS: Final[tuple[GoalLevel, ...]] = get_args(GoalLevel)
# Indicators judged per unit from its network checks (``requires`` applies to these).
UNIT_GOAL_INDICATORS: Final = ("lan", "internet", "wan", "dedicated_network")
# Ratios of something to itself are at most 1; computers per official may exceed it.
UNBOUNDED: Final[frozenset[Indicator]] = frozenset({"computers_per_official"})
MAX_UNBOUNDED_GOAL: Final = 100.0

_PLAN_ID: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")  # fullmatch only
_TOP_KEYS: Final = frozenset(
    {
        "plan",
        "title",
        "title_en",
        "reference",
        "province",
        "example",
        "note",
        "goals",
        "untracked",
        "broadband",
        "use",
    }
)
_GOAL_KEYS: Final = frozenset(
    {
        "indicator",
        "level",
        "goal",
        "deadline",
        "denominator",
        "officials_basis",
        "sectors",
        "note",
        "text",
        "requires",
    }
)
# What a unit indicator's goal requires of a unit (docs/indicators.md):
# reachable: up in up_ratio of the window's checks; broadband: the plan's broadband rule
# holds (internet only); used: the class was used on a day of the window (plan's `use`).
Requirement = Literal["reachable", "broadband", "used"]
REQUIREMENTS: Final[tuple[Requirement, ...]] = ("reachable", "broadband", "used")
USE_INDICATORS: Final = frozenset({"wan", "dedicated_network", "internet"})
BroadbandStatistic = Literal["median", "latest"]
BROADBAND_STATISTICS: Final[tuple[BroadbandStatistic, ...]] = ("median", "latest")
# Who a computers_per_official goal counts: the choices a unit declares its count on.
OFFICIALS_BASES: Final = tuple(choice.id for choice in declarations.OFFICIALS_BASES)
_GOAL_REQUIRED: Final = ("indicator", "level", "goal", "deadline")
_UNTRACKED_KEYS: Final = frozenset({"text", "level", "goal", "deadline", "reason"})
MAX_FILE_BYTES: Final = 1_000_000


class TargetsError(ConfigError):
    """A targets file problem: the file, the goal and the key, and what is wrong."""


@dataclass(frozen=True, slots=True)
class Broadband:
    """What "broadband" means for a plan: a download rate its measurements must reach."""

    min_download_bps: int  # bits per second, as lines are sold
    rule: BroadbandStatistic = "median"  # over the window's successful tests
    window_seconds: float = 7 * 86400.0

    @property
    def min_bytes_per_second(self) -> float:
        """The threshold in the unit the agent measures and the metrics expose."""
        return self.min_download_bps / 8


@dataclass(frozen=True, slots=True)
class Use:
    """When a unit counts as using a network class on a day."""

    min_bytes_per_day: int  # in + out on the class's uplink, where counters exist


@dataclass(frozen=True, slots=True)
class Goal:
    """One observable goal of a plan. ``goal`` is None for a direction without a number."""

    indicator: Indicator
    level: GoalLevel
    goal: float | None
    deadline: int
    denominator: str | None = None
    # computers_per_official: which officials count (a unit declaring another basis is
    # outside this goal's ratio); None: any count.
    officials_basis: str | None = None
    sectors: tuple[Sector, ...] | None = None  # None: every sector
    note: str | None = None
    text: str | None = None  # the plan's own wording (Vietnamese)
    requires: tuple[Requirement, ...] = ("reachable",)  # unit indicators only; else ()


@dataclass(frozen=True, slots=True)
class Untracked:
    """A plan line hatang cannot observe, kept verbatim with the reason."""

    text: str
    reason: str
    level: str | None = None
    goal: str | None = None
    deadline: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """A plan's identity and its goals."""

    plan: str
    title: str
    reference: str
    goals: tuple[Goal, ...]
    province: str | None = None
    title_en: str | None = None
    example: bool = False  # not a real plan: an illustration of the shape
    note: str | None = None
    untracked: tuple[Untracked, ...] = ()
    file: str = ""
    broadband: Broadband | None = None
    use: Use | None = None


def load_targets(paths: Sequence[str | Path]) -> list[Plan]:
    """Load and validate target files; plan ids must be unique across them."""
    plans: list[Plan] = []
    seen: dict[str, str] = {}
    for path in paths:
        plan = load_plan(path)
        if plan.plan in seen:
            raise TargetsError(
                plan.file,
                "plan",
                f"duplicate plan id {show(plan.plan)} (also in {seen[plan.plan]})",
            )
        seen[plan.plan] = plan.file
        plans.append(plan)
    return plans


def load_plan(path: str | Path) -> Plan:
    """Load and validate one target file; raise TargetsError naming goal and key."""
    data, file = load_yaml(
        path,
        TargetsError,
        empty_hint="expected plan:, title:, reference: and goals:",
        max_bytes=MAX_FILE_BYTES,
    )
    return parse_plan(data, file)


def parse_plan(data: Any, file: str = "<targets>") -> Plan:
    """Validate already-parsed YAML; ``file`` is used in error messages."""
    if not isinstance(data, dict):
        raise TargetsError(file, "", "expected a mapping with keys plan, title, reference, goals")
    fields = Fields(TargetsError, file)
    fields.reject_unknown(data, _TOP_KEYS, "")
    for key in ("plan", "title", "reference"):
        if data.get(key) is None:
            raise TargetsError(file, key, "missing")
    plan_id = data["plan"]
    if not isinstance(plan_id, str) or not _PLAN_ID.fullmatch(plan_id):
        raise TargetsError(file, "plan", f"invalid id {show(plan_id)} (e.g. bac-kan-2012)")
    raw_goals = data.get("goals")
    if not isinstance(raw_goals, list):
        raise TargetsError(file, "goals", "missing (a list of goals)")
    broadband = _parse_broadband(data.get("broadband"), fields)
    use = _parse_use(data.get("use"), fields)
    goals: list[Goal] = []
    seen: dict[tuple[str, str], int] = {}
    for index, raw in enumerate(raw_goals):
        goal = _parse_goal(raw, index, fields, broadband, use)
        pair = (goal.indicator, goal.level)
        if pair in seen:
            raise TargetsError(
                file,
                f"goals[{index}]",
                f"duplicate goal for {goal.indicator} at level {goal.level}"
                f" (also goals[{seen[pair]}])",
            )
        seen[pair] = index
        goals.append(goal)
    example = data.get("example", False)
    if not isinstance(example, bool):
        raise TargetsError(file, "example", "must be true or false")
    return Plan(
        plan=plan_id,
        title=fields.text(data, "title", ""),
        reference=fields.text(data, "reference", ""),
        goals=tuple(goals),
        province=fields.optional_text(data, "province", ""),
        title_en=fields.optional_text(data, "title_en", ""),
        example=example,
        note=fields.optional_text(data, "note", ""),
        untracked=_parse_untracked(data.get("untracked"), fields),
        file=file,
        broadband=broadband,
        use=use,
    )


def _threshold(
    raw: Any,
    fields: Fields,
    block: str,
    key: str,
    allowed: tuple[str, ...],
    bounds: tuple[int, int],
    example: str,
) -> tuple[dict[str, Any], int] | None:
    """A plan-level rule block (``broadband:``, ``use:``) and its one required number."""
    file = fields.file
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise TargetsError(file, block, f"expected a mapping, e.g. {{{key}: 10_000_000}}")
    fields.reject_unknown(raw, allowed, block)
    at = f"{block}.{key}"
    if key not in raw:
        raise TargetsError(file, at, f"missing ({example})")
    value, (low, high) = raw[key], bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise TargetsError(
            file, at, f"must be a whole number from {low:_} to {high:_}, got {value!r} ({example})"
        )
    return raw, value


def _parse_broadband(raw: Any, fields: Fields) -> Broadband | None:
    found = _threshold(
        raw,
        fields,
        "broadband",
        "min_download_bps",
        ("min_download_bps", "rule", "window"),
        (1_000, 100_000_000_000),
        "bits per second: 10 Mbit/s is 10_000_000",
    )
    if found is None:
        return None
    data, rate = found
    file = fields.file
    rule = data.get("rule", "median")
    if rule not in BROADBAND_STATISTICS:
        raise TargetsError(
            file, "broadband.rule", f"unknown {rule!r} (one of {', '.join(BROADBAND_STATISTICS)})"
        )
    window = data.get("window", "7d")
    try:
        seconds = float(Duration.parse(window))
    except ValueError as exc:
        raise TargetsError(file, "broadband.window", str(exc)) from None
    if not 3600 <= seconds <= 90 * 86400:
        raise TargetsError(file, "broadband.window", f"{window!r} is out of range (1h to 90d)")
    return Broadband(min_download_bps=rate, rule=rule, window_seconds=seconds)


def _parse_use(raw: Any, fields: Fields) -> Use | None:
    found = _threshold(
        raw,
        fields,
        "use",
        "min_bytes_per_day",
        ("min_bytes_per_day",),
        (1, 10**15),
        "bytes in + out a day: 10 MB is 10_000_000",
    )
    return None if found is None else Use(min_bytes_per_day=found[1])


def _parse_requires(
    raw: Any,
    indicator: str,
    at: str,
    file: str,
    broadband: Broadband | None,
    use: Use | None,
) -> tuple[Requirement, ...]:
    """A goal's requirements; an internet goal of a plan with a broadband rule needs it."""
    where = f"{at}.requires"
    if raw is None:
        if indicator not in UNIT_GOAL_INDICATORS:
            return ()
        if indicator == "internet" and broadband is not None:
            return ("reachable", "broadband")
        return ("reachable",)
    if indicator not in UNIT_GOAL_INDICATORS:
        raise TargetsError(file, where, f"only for {', '.join(UNIT_GOAL_INDICATORS)} goals")
    if not isinstance(raw, list) or not raw:
        raise TargetsError(file, where, "must be a non-empty list, e.g. [reachable, used]")
    for item in raw:
        if item not in REQUIREMENTS:
            raise TargetsError(file, where, f"unknown {item!r} (one of {', '.join(REQUIREMENTS)})")
    if len(set(raw)) != len(raw):
        raise TargetsError(file, where, "lists a requirement twice")
    if "reachable" not in raw:
        raise TargetsError(
            file,
            where,
            "must include reachable (a unit that cannot reach "
            "a network neither uses it nor has broadband on it)",
        )
    if "broadband" in raw:
        if indicator != "internet":
            raise TargetsError(file, where, "broadband is for internet goals only")
        if broadband is None:
            raise TargetsError(
                file, where, "broadband needs the plan's broadband: {min_download_bps: ...}"
            )
    if "used" in raw:
        if indicator not in USE_INDICATORS:
            raise TargetsError(
                file, where, f"used is for {', '.join(sorted(USE_INDICATORS))} goals only"
            )
        if use is None:
            raise TargetsError(file, where, "used needs the plan's use: {min_bytes_per_day: ...}")
    return tuple(r for r in REQUIREMENTS if r in raw)


def _parse_goal(
    raw: Any, index: int, fields: Fields, broadband: Broadband | None, use: Use | None
) -> Goal:
    file, at = fields.file, f"goals[{index}]"
    if not isinstance(raw, dict):
        raise TargetsError(file, at, "expected a mapping with indicator, level, goal, deadline")
    fields.reject_unknown(raw, _GOAL_KEYS, at)
    for key in _GOAL_REQUIRED:
        if key not in raw:
            hint = " (null for a direction without a number)" if key == "goal" else ""
            raise TargetsError(file, f"{at}.{key}", f"missing{hint}")
    indicator = fields.choice(raw["indicator"], INDICATORS, at, "indicator")
    level = fields.choice(raw["level"], GOAL_LEVELS, at, "level")
    value = raw["goal"]
    ratio: float | None = None
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TargetsError(file, f"{at}.goal", f"must be a number or null, got {show(value)}")
        ratio = float(value)
        upper = MAX_UNBOUNDED_GOAL if indicator in UNBOUNDED else 1.0
        if not 0.0 <= ratio <= upper:
            raise TargetsError(
                file,
                f"{at}.goal",
                f"{value} is outside 0..{upper:g} (a ratio: write 60 % as 0.6)",
            )
    deadline = raw["deadline"]
    if isinstance(deadline, bool) or not isinstance(deadline, int) or not 1990 <= deadline <= 2100:
        raise TargetsError(file, f"{at}.deadline", f"must be a year, got {show(deadline)}")
    basis = raw.get("officials_basis")
    if basis is not None and (
        indicator != "computers_per_official" or basis not in OFFICIALS_BASES
    ):
        raise TargetsError(
            file,
            f"{at}.officials_basis",
            f"{show(basis)}: for computers_per_official goals only, one of "
            f"{', '.join(OFFICIALS_BASES)}",
        )
    sectors = raw.get("sectors")
    if sectors is not None:
        if not isinstance(sectors, list) or not sectors:
            raise TargetsError(file, f"{at}.sectors", "must be a non-empty list")
        for sector in sectors:
            fields.choice(sector, SECTORS, at, "sectors", "sector")
    return Goal(
        indicator=indicator,
        level=level,
        goal=ratio,
        deadline=deadline,
        denominator=fields.optional_text(raw, "denominator", at),
        officials_basis=basis,
        sectors=tuple(sectors) if sectors is not None else None,
        note=fields.optional_text(raw, "note", at),
        text=fields.optional_text(raw, "text", at),
        requires=_parse_requires(raw.get("requires"), indicator, at, file, broadband, use),
    )


def _parse_untracked(raw: Any, fields: Fields) -> tuple[Untracked, ...]:
    file = fields.file
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise TargetsError(file, "untracked", "must be a list of {text, reason}")
    items: list[Untracked] = []
    for index, item in enumerate(raw):
        at = f"untracked[{index}]"
        if not isinstance(item, dict):
            raise TargetsError(file, at, "expected a mapping with text and reason")
        fields.reject_unknown(item, _UNTRACKED_KEYS, at)
        items.append(
            Untracked(
                text=fields.text(item, "text", at),
                reason=fields.text(item, "reason", at),
                level=_optional_scalar(item, "level", at, fields),
                goal=_optional_scalar(item, "goal", at, fields),
                deadline=_optional_scalar(item, "deadline", at, fields),
            )
        )
    return tuple(items)


def _optional_scalar(data: Mapping[str, Any], key: str, at: str, fields: Fields) -> str | None:
    """A plan's own wording of a level, goal or deadline ("60%", 2015, "hằng năm")."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        fields.fail(at, key, f"must be text or a number, got {show(value)}")
    return fields.text({key: str(value)}, key, at)
