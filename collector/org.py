"""The province's organisation tree, loaded and validated from ``configs/org.*.yaml``.

Both shapes of Vietnamese local government load here: three levels (province →
district → commune, plus provincial agencies), as in the 2011–2015 plans, and two
levels (province → commune/ward/special zone), as since 1 July 2025. A two-level file
may carry a ``mapping`` from pre-2025 unit ids to the units that absorbed them, so that
history measured under the old tree can be read against the new one.

Validation is complete at load and every error names the file, the unit and the key
(``org.yaml: units[4] (bac-kan/ba-be): parent: unknown unit 'bac-kan/ba-bee'``), in the
style of the agent's ``ConfigError``. Unknown keys are rejected so that a typo such as
``officals`` cannot silently drop a denominator; free facts go under ``facts:``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, get_args

from agent.configerror import ConfigError, show
from collector.fields import Fields, load_yaml

Level = Literal["province", "agency", "district", "commune"]
LEVELS: Final[tuple[Level, ...]] = get_args(Level)
Sector = Literal["state", "party", "mass_organisation"]
SECTORS: Final[tuple[Sector, ...]] = get_args(Sector)
Shape = Literal["two-level", "three-level"]

# The same pattern as the wire format's SiteId, so every unit id can be a report's site.
UNIT_ID: Final = re.compile(r"[a-z0-9][a-z0-9-]*(/[a-z0-9][a-z0-9-]*)*")  # fullmatch only
UNIT_ID_MAX: Final = 200
NAME_MAX: Final = 256
MAX_FILE_BYTES: Final = 10_000_000
MAX_NODES: Final = 1_000_000  # values with aliases expanded: ample for 10,000 units
MAX_OFFICIALS: Final = 1_000_000

# Which levels a unit of each level may hang under. Districts' own offices are part of
# the district unit; provincial agencies hang under the province only.
_PARENT_LEVELS: Final[Mapping[Level, tuple[Level, ...]]] = {
    "province": (),
    "agency": ("province",),
    "district": ("province",),
    "commune": ("district", "province"),  # narrowed by the tree's shape below
}
_UNIT_KEYS: Final = frozenset(
    {"id", "name", "name_en", "level", "parent", "sector", "officials", "facts", "kind"}
)
_TOP_KEYS: Final = frozenset({"province", "name", "shape", "as_of", "source", "units", "mapping"})
_MAPPING_KEYS: Final = frozenset({"from", "to", "name", "note"})


class OrgError(ConfigError):
    """An organisation file problem: the file, where in it, and what is wrong."""


@dataclass(frozen=True, slots=True)
class Unit:
    """One unit of the tree: what no agent can observe (name, level, declared facts)."""

    id: str
    name: str
    level: Level
    parent: str | None = None
    sector: Sector = "state"
    officials: int | None = None  # declared; the denominator of computers_per_official
    kind: str | None = None  # free Vietnamese type word: "xã", "phường", "đặc khu", "sở"...
    name_en: str | None = None
    facts: Mapping[str, str | int | float | bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Succession:
    """A pre-2025 unit (``from``, an id of the old tree) and the units that absorbed it."""

    old_id: str
    new_ids: tuple[str, ...]
    old_name: str | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Org:
    """A validated tree: units in file order, with lookups by id, level and parent."""

    province: str
    name: str
    units: tuple[Unit, ...]
    mapping: tuple[Succession, ...] = ()
    source: str | None = None
    as_of: str | None = None
    _by_id: Mapping[str, Unit] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {unit.id: unit for unit in self.units})

    @property
    def shape(self) -> Shape:
        """Three-level when any district exists, else two-level."""
        return "three-level" if any(u.level == "district" for u in self.units) else "two-level"

    def get(self, unit_id: str) -> Unit | None:
        """Return the unit with this id, or None."""
        return self._by_id.get(unit_id)

    def __contains__(self, unit_id: object) -> bool:
        return unit_id in self._by_id

    def of_level(self, level: Level) -> list[Unit]:
        """Return the units of one level, in file order."""
        return [unit for unit in self.units if unit.level == level]

    def children(self, unit_id: str) -> list[Unit]:
        """Return the units whose parent is ``unit_id``."""
        return [unit for unit in self.units if unit.parent == unit_id]

    def subtree(self, unit_id: str) -> list[Unit]:
        """The unit and every unit under it, in file order (empty for an unknown id)."""
        if unit_id not in self._by_id:
            return []
        inside = {unit_id}
        changed = True
        while changed:  # file order need not put parents first
            changed = False
            for unit in self.units:
                if unit.parent in inside and unit.id not in inside:
                    inside.add(unit.id)
                    changed = True
        return [unit for unit in self.units if unit.id in inside]

    def successors(self, old_id: str) -> tuple[str, ...]:
        """Return the ids of the units that absorbed a pre-2025 unit (empty if unmapped)."""
        for entry in self.mapping:
            if entry.old_id == old_id:
                return entry.new_ids
        return ()


def load_org(path: str | Path) -> Org:
    """Load and validate an org file; raise OrgError naming the unit and key."""
    data, file = load_yaml(
        path,
        OrgError,
        empty_hint="expected province: and units:",
        max_bytes=MAX_FILE_BYTES,
        max_nodes=MAX_NODES,
    )
    return parse_org(data, file)


def parse_org(data: Any, file: str = "<org>") -> Org:
    """Validate already-parsed YAML; ``file`` is used in error messages."""
    if not isinstance(data, dict):
        raise OrgError(file, "", "expected a mapping with keys province and units")
    fields = Fields(OrgError, file)
    fields.reject_unknown(data, _TOP_KEYS, "")
    province = data.get("province")
    if province is None:
        raise OrgError(file, "province", "missing (the province's unit id, e.g. bac-kan)")
    if not isinstance(province, str) or not UNIT_ID.fullmatch(province) or "/" in province:
        raise OrgError(file, "province", f"invalid id {show(province)} (e.g. bac-kan)")
    raw_units = data.get("units")
    if not isinstance(raw_units, list) or not raw_units:
        raise OrgError(file, "units", "missing or empty (a list of units)")

    units: list[Unit] = []
    where: dict[str, str] = {}
    for index, raw in enumerate(raw_units):
        unit = _parse_unit(raw, index, fields)
        if unit.id in where:
            raise OrgError(file, _at(index, unit.id), f"id: duplicate (also {where[unit.id]})")
        where[unit.id] = f"units[{index}]"
        units.append(unit)

    by_id = {unit.id: unit for unit in units}
    provinces = [unit for unit in units if unit.level == "province"]
    if len(provinces) != 1 or provinces[0].id != province:
        raise OrgError(
            file, "units", f"expected exactly one unit of level province with id {show(province)}"
        )
    for index, unit in enumerate(units):
        if unit.parent is not None and unit.parent not in by_id:
            raise OrgError(file, _at(index, unit.id), f"parent: unknown unit {show(unit.parent)}")
    for index, unit in enumerate(units):
        _check_cycle(unit, by_id, file, index)
    three_level = any(unit.level == "district" for unit in units)
    for index, unit in enumerate(units):
        _check_parent_level(unit, by_id, file, index, three_level)

    mapping = _parse_mapping(data.get("mapping"), by_id, fields)
    name = data.get("name", provinces[0].name)
    if not isinstance(name, str):
        fields.fail("", "name", f"must be text, got {show(name)}")
    return Org(
        province=province,
        name=name,
        units=tuple(units),
        mapping=mapping,
        source=fields.optional_text(data, "source", ""),
        as_of=str(data["as_of"]) if data.get("as_of") is not None else None,
    )


def _parse_unit(raw: Any, index: int, fields: Fields) -> Unit:
    file = fields.file
    if not isinstance(raw, dict):
        raise OrgError(file, f"units[{index}]", "expected a mapping with id, name, level")
    unit_id = raw.get("id")
    if unit_id is None:
        raise OrgError(file, f"units[{index}]", "id: missing")
    if not isinstance(unit_id, str) or len(unit_id) > UNIT_ID_MAX or not UNIT_ID.fullmatch(unit_id):
        raise OrgError(
            file,
            f"units[{index}]",
            f"id: invalid {show(unit_id)} (lowercase ascii words with '-', joined by '/',"
            " e.g. bac-kan/cho-don/bang-lung)",
        )
    at = _at(index, unit_id)
    fields.reject_unknown(raw, _UNIT_KEYS, at)
    name = raw.get("name")
    if name is None:
        raise OrgError(file, at, "name: missing (the unit's Vietnamese name)")
    if not isinstance(name, str) or not name.strip() or len(name) > NAME_MAX:
        raise OrgError(file, at, f"name: must be non-empty text of at most {NAME_MAX} characters")
    level = raw.get("level")
    if level is None:
        raise OrgError(file, at, f"level: missing (one of {', '.join(LEVELS)})")
    level = fields.choice(level, LEVELS, at, "level")
    parent = raw.get("parent")
    if parent is not None and not isinstance(parent, str):
        raise OrgError(file, at, f"parent: must be a unit id, got {show(parent)}")
    sector = fields.choice(raw.get("sector", "state"), SECTORS, at, "sector")
    officials = raw.get("officials")
    if officials is not None and (
        isinstance(officials, bool)
        or not isinstance(officials, int)
        or not 0 <= officials <= MAX_OFFICIALS
    ):
        raise OrgError(
            file, at, f"officials: must be a whole number 0..{MAX_OFFICIALS}, got {show(officials)}"
        )
    facts = raw.get("facts", {})
    if not isinstance(facts, dict) or not all(
        isinstance(key, str) and isinstance(value, str | int | float | bool)
        for key, value in facts.items()
    ):
        raise OrgError(file, at, "facts: must map names to numbers, text or true/false")
    return Unit(
        id=unit_id,
        name=name.strip(),
        level=level,
        parent=parent,
        sector=sector,
        officials=officials,
        kind=fields.optional_text(raw, "kind", at),
        name_en=fields.optional_text(raw, "name_en", at),
        facts=dict(facts),
    )


def _check_cycle(unit: Unit, by_id: Mapping[str, Unit], file: str, index: int) -> None:
    seen = [unit.id]
    current = unit
    while current.parent is not None:
        current = by_id[current.parent]
        if current.id in seen:
            chain = " -> ".join([*seen[seen.index(current.id) :], current.id])
            raise OrgError(file, _at(index, unit.id), f"parent: cycle {chain}")
        seen.append(current.id)


def _check_parent_level(
    unit: Unit, by_id: Mapping[str, Unit], file: str, index: int, three_level: bool
) -> None:
    at = _at(index, unit.id)
    allowed = _PARENT_LEVELS[unit.level]
    if unit.level == "commune":
        # A three-level tree puts every commune under a district, a two-level one under
        # the province.
        allowed = ("district",) if three_level else ("province",)
    if unit.parent is None:
        if allowed:
            raise OrgError(file, at, f"parent: missing (a {unit.level} needs a {allowed[0]})")
        return
    if not allowed:
        raise OrgError(file, at, "parent: a province has no parent")
    parent_level = by_id[unit.parent].level
    if parent_level not in allowed:
        raise OrgError(
            file,
            at,
            f"parent: a {unit.level} cannot be under {parent_level} {unit.parent!r}"
            f" (expected {' or '.join(allowed)})",
        )


def _parse_mapping(raw: Any, by_id: Mapping[str, Unit], fields: Fields) -> tuple[Succession, ...]:
    file = fields.file
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise OrgError(file, "mapping", "must be a list of {from, to} entries")
    entries: list[Succession] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(raw):
        at = f"mapping[{index}]"
        if not isinstance(item, dict):
            raise OrgError(file, at, "expected a mapping with from and to")
        fields.reject_unknown(item, _MAPPING_KEYS, at)
        old = item.get("from")
        if not isinstance(old, str) or not UNIT_ID.fullmatch(old) or len(old) > UNIT_ID_MAX:
            raise OrgError(file, at, f"from: missing or invalid unit id {show(old)}")
        if old in seen:
            raise OrgError(
                file, at, f"from: {show(old)} is mapped twice (also mapping[{seen[old]}])"
            )
        seen[old] = index
        targets = item.get("to")
        if isinstance(targets, str):
            targets = [targets]
        if not isinstance(targets, list) or not targets:
            raise OrgError(file, f"{at} ({old})", "to: missing (the unit ids that absorbed it)")
        for target in targets:
            if not isinstance(target, str) or target not in by_id:
                raise OrgError(file, f"{at} ({old})", f"to: unknown unit {show(target)}")
        entries.append(
            Succession(
                old_id=old,
                new_ids=tuple(targets),
                old_name=fields.optional_text(item, "name", at),
                note=fields.optional_text(item, "note", at),
            )
        )
    return tuple(entries)


def _at(index: int, unit_id: str) -> str:
    return f"units[{index}] ({unit_id})"
