"""Declarations: the facts a unit states for a reporting period that no agent can observe.

Officials (the computers-per-official denominator), IT and security staff, the security
regulation, information systems by approved security level (cấp độ 1–5, Nghị định
85/2016/NĐ-CP), trainings, and the annual inspection. ``KEYS`` is the one table of what can
be declared, with each value's type and its Vietnamese and English labels; the form
(``collector.declaration_form``), the import, ``declare list``, the indicators and the
evidence bundle all read it.

``KEYS`` is Python data rather than a YAML file because its ids are a contract that code
relies on (the indicators read ``officials`` and ``officials_basis``; compliance rules and
the evidence bundle name keys), each type needs its parser here, and mypy and the tests
check the table with the code that uses it. Adding a key is one entry.

Which declaration is in force: for each unit and key, among the declarations whose period
contains the instant asked about, the newest (latest ``declared_at``, then revision). A
yearly declaration is therefore overridden for a quarter by a newer quarterly one, and
comes back in force when that quarter ends.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from collector.org import Org
from collector.period import Period
from collector.store import StoredDeclaration

__all__ = [
    "KEYS",
    "TYPE_WORDS",
    "Choice",
    "DeclarationError",
    "DeclarationKey",
    "DeclarationRow",
    "attachment",
    "declarations_for",
    "decode_value",
    "display",
    "encode_value",
    "in_force",
    "newest",
    "parse_value",
]

ValueType = Literal["count", "text", "date", "choice"]
Value = int | str  # counts are int; text, ISO dates and choice ids are str
MAX_COUNT: Final = 1_000_000
MAX_TEXT: Final = 500
MAX_ATTACHMENT_BYTES: Final = 10 * 1024 * 1024
MIN_YEAR: Final = 2000
MAX_YEAR: Final = 2100
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class DeclarationError(ValueError):
    """A value that cannot be declared; the text says why, for a person to fix it."""


@dataclass(frozen=True, slots=True)
class Choice:
    """One allowed value of a ``choice`` key: stored as ``id``, shown in Vietnamese."""

    id: str
    label_vi: str
    label_en: str


@dataclass(frozen=True, slots=True)
class DeclarationKey:
    """One declarable fact: its id, type and how people see it."""

    id: str
    type: ValueType
    label_vi: str
    label_en: str
    group_vi: str
    group_en: str
    help_vi: str = ""
    choices: tuple[Choice, ...] = ()
    attachable: bool = False  # the form has a column for an attached file (a scan)

    @property
    def label(self) -> str:
        """``Vietnamese / English``, as headers show it."""
        return f"{self.label_vi} / {self.label_en}"


_STAFF = ("Nhân lực", "Staff")
_REGULATION = ("Quy chế an toàn thông tin", "Security regulation")
_SYSTEMS = ("Hệ thống thông tin theo cấp độ (Nghị định 85/2016/NĐ-CP)", "Systems by level")
_TRAINING = ("Tập huấn", "Training")
_INSPECTION = ("Kiểm tra an toàn thông tin", "Security inspection")

OFFICIALS_BASES: Final = (
    Choice(
        "professional_work",
        "Cán bộ, công chức làm công tác chuyên môn",
        "officials doing professional work",
    ),
    Choice(
        "officials_and_employees",
        "Cán bộ, công chức, viên chức",
        "officials and public employees",
    ),
    Choice("all_officials", "Toàn bộ cán bộ, công chức", "every official"),
)

KEYS: Final[tuple[DeclarationKey, ...]] = (
    DeclarationKey(
        "officials",
        "count",
        "Số cán bộ, công chức",
        "Officials",
        *_STAFF,
        help_vi="Mẫu số của chỉ tiêu máy tính/cán bộ; thay số trong tệp tổ chức cho kỳ này.",
    ),
    DeclarationKey(
        "officials_basis",
        "choice",
        "Cách đếm cán bộ",
        "Who the officials count covers",
        *_STAFF,
        help_vi="Kế hoạch nào tính theo cách đếm nào: xem mẫu số của chỉ tiêu.",
        choices=OFFICIALS_BASES,
    ),
    DeclarationKey("it_staff", "count", "Số cán bộ chuyên trách CNTT", "IT staff", *_STAFF),
    DeclarationKey(
        "security_staff",
        "count",
        "Số cán bộ phụ trách an toàn thông tin",
        "Information security staff",
        *_STAFF,
    ),
    DeclarationKey(
        "security_regulation_number",
        "text",
        "Số quyết định ban hành quy chế",
        "Regulation decision number",
        *_REGULATION,
        help_vi="Ví dụ 123/QĐ-STTTT. Đính kèm bản scan quyết định nếu có.",
        attachable=True,
    ),
    DeclarationKey(
        "security_regulation_date",
        "date",
        "Ngày ban hành quy chế",
        "Regulation decision date",
        *_REGULATION,
    ),
    *(
        DeclarationKey(
            f"systems_level_{level}",
            "count",
            f"Số hệ thống được phê duyệt cấp độ {level}",
            f"Systems approved at level {level}",
            *_SYSTEMS,
        )
        for level in range(1, 6)
    ),
    DeclarationKey(
        "systems_unapproved",
        "count",
        "Số hệ thống chưa được phê duyệt cấp độ",
        "Systems without an approved level",
        *_SYSTEMS,
    ),
    DeclarationKey(
        "trainings",
        "count",
        "Số lớp tập huấn an toàn thông tin trong kỳ",
        "Security trainings held in the period",
        *_TRAINING,
    ),
    DeclarationKey(
        "trained_staff",
        "count",
        "Số lượt cán bộ được tập huấn",
        "Staff trained (attendances)",
        *_TRAINING,
    ),
    DeclarationKey("inspection_date", "date", "Ngày kiểm tra", "Inspection date", *_INSPECTION),
    DeclarationKey("inspection_by", "text", "Đơn vị kiểm tra", "Inspected by", *_INSPECTION),
    DeclarationKey(
        "inspection_result",
        "choice",
        "Kết quả kiểm tra",
        "Inspection result",
        *_INSPECTION,
        help_vi="Đính kèm biên bản kiểm tra nếu có.",
        choices=(
            Choice("passed", "Đạt", "passed"),
            Choice("passed_with_remarks", "Đạt, có kiến nghị", "passed with remarks"),
            Choice("failed", "Không đạt", "failed"),
        ),
        attachable=True,
    ),
)
BY_ID: Final[Mapping[str, DeclarationKey]] = {key.id: key for key in KEYS}
TYPE_WORDS: Final[Mapping[ValueType, str]] = {
    "count": "a whole number",
    "text": "text",
    "date": "a date (dd/mm/yyyy)",
    "choice": "one of the listed choices",
}


def _number_text(raw: float) -> str:
    return str(int(raw)) if float(raw).is_integer() else repr(raw)


def _parse_count(raw: object) -> int:
    if isinstance(raw, bool):
        raise DeclarationError(f"{raw!r} is not a whole number")
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if isinstance(raw, str) and re.fullmatch(r"\s*\d{1,7}\s*", raw):
        raw = int(raw)
    if not isinstance(raw, int):
        raise DeclarationError(f"{_shown(raw)} is not a whole number")
    if not 0 <= raw <= MAX_COUNT:
        raise DeclarationError(f"{raw} is outside 0..{MAX_COUNT}")
    return raw


def _parse_date(raw: object) -> str:
    if isinstance(raw, dt.datetime):
        if raw.time() != dt.time(0):
            raise DeclarationError(f"{_shown(raw)} has a time of day; enter a date only")
        raw = raw.date()
    if isinstance(raw, str):
        text = raw.strip()
        for pattern in ("%d/%m/%Y", "%Y-%m-%d", "%d-%m-%Y", "%d.%m.%Y"):
            try:
                raw = dt.datetime.strptime(text, pattern).date()
                break
            except ValueError:
                continue
    if not isinstance(raw, dt.date):
        raise DeclarationError(f"{_shown(raw)} is not a date (dd/mm/yyyy, e.g. 15/03/2026)")
    if not MIN_YEAR <= raw.year <= MAX_YEAR:
        raise DeclarationError(f"{raw:%d/%m/%Y} is outside the years {MIN_YEAR}..{MAX_YEAR}")
    return raw.isoformat()


def _parse_text(raw: object) -> str:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise DeclarationError(f"{_shown(raw)} is not text")
    text = raw.strip() if isinstance(raw, str) else _number_text(raw)
    if _CONTROL.search(text):
        raise DeclarationError("contains control characters")
    if len(text) > MAX_TEXT:
        raise DeclarationError(f"is {len(text)} characters long (at most {MAX_TEXT})")
    return text


def _parse_choice(key: DeclarationKey, raw: object) -> str:
    # Commas are ignored: the form's drop-down list cannot carry them.
    def norm(text: str) -> str:
        return " ".join(text.replace(",", " ").split()).casefold()

    typed = norm(raw) if isinstance(raw, str) else None
    for choice in key.choices:
        if typed in (choice.id, norm(choice.label_vi), norm(choice.label_en)):
            return choice.id
    allowed = "; ".join(c.label_vi for c in key.choices)
    raise DeclarationError(f"{_shown(raw)} is not one of: {allowed}")


def parse_value(key: DeclarationKey, raw: object) -> Value:
    """A cell's value (openpyxl types, or text) as the key's type; DeclarationError if not."""
    if key.type == "count":
        return _parse_count(raw)
    if key.type == "date":
        return _parse_date(raw)
    if key.type == "choice":
        return _parse_choice(key, raw)
    return _parse_text(raw)


def _shown(raw: object) -> str:
    if isinstance(raw, dt.datetime | dt.date):
        return raw.isoformat()
    text = raw if isinstance(raw, str) else repr(raw)
    return json.dumps(text[:60] + ("…" if len(text) > 60 else ""), ensure_ascii=False)


def encode_value(value: Value) -> str:
    """The stored form of a value: canonical JSON."""
    return json.dumps(value, ensure_ascii=False)


def decode_value(key: str, text: str) -> Value:
    """A stored value back (a row a newer or older hatang wrote is checked, not trusted)."""
    value = json.loads(text)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise DeclarationError(f"stored value of {key} is not a number or text: {text[:60]}")
    return value


def display(key: str, value: Value) -> str:
    """How a person reads a value: a choice in Vietnamese, a date as dd/mm/yyyy."""
    spec = BY_ID.get(key)
    if spec is not None and spec.type == "choice":
        for choice in spec.choices:
            if choice.id == value:
                return f"{choice.label_vi} / {choice.label_en}"
    if spec is not None and spec.type == "date" and isinstance(value, str):
        return f"{dt.date.fromisoformat(value):%d/%m/%Y}"
    return str(value)


def newest(stored: Iterable[StoredDeclaration]) -> list[StoredDeclaration]:
    """The revision in force of each (unit, period, key), in the input's order."""
    best: dict[tuple[str, str, str], StoredDeclaration] = {}
    for row in stored:
        key = (row.unit, row.period, row.key)
        held = best.get(key)
        if held is None or row.revision > held.revision:
            best[key] = row
    return list(best.values())


def in_force(stored: Iterable[StoredDeclaration], at: float) -> dict[str, dict[str, Value]]:
    """Per unit and key, the value in force at ``at`` (unix seconds): the newest
    declaration whose period contains that instant (see the module docstring)."""
    chosen: dict[tuple[str, str], StoredDeclaration] = {}
    for row in stored:
        if not row.period_start <= at < row.period_end or row.key not in BY_ID:
            continue
        held = chosen.get((row.unit, row.key))
        if held is None or (row.declared_at, row.revision) > (held.declared_at, held.revision):
            chosen[(row.unit, row.key)] = row
    facts: dict[str, dict[str, Value]] = {}
    for (unit, key), row in chosen.items():
        try:
            facts.setdefault(unit, {})[key] = decode_value(key, row.value)
        except (ValueError, DeclarationError):
            continue  # a damaged row is not a declaration
    return facts


@dataclass(frozen=True, slots=True)
class DeclarationRow:
    """One declaration as the evidence bundle and ``declare list`` show it."""

    unit: str
    unit_name: str
    period: str
    key: str
    value: Value
    declared_by: str
    declared_at: dt.datetime
    attachment_name: str | None
    attachment_sha256: str | None
    revision: int = 1
    source: str = ""

    @property
    def label_vi(self) -> str:
        spec = BY_ID.get(self.key)
        return spec.label_vi if spec is not None else self.key

    @property
    def label_en(self) -> str:
        spec = BY_ID.get(self.key)
        return spec.label_en if spec is not None else self.key

    @property
    def display(self) -> str:
        return display(self.key, self.value)


class DeclarationStore(Protocol):
    """The part of ``collector.store.Store`` declarations are read from."""

    async def declarations(
        self, since: float, until: float, units: Collection[str] | None = None
    ) -> list[StoredDeclaration]: ...
    async def declaration_file(self, sha256: str) -> bytes | None: ...


def _key_order(key: str) -> int:
    return next((i for i, spec in enumerate(KEYS) if spec.id == key), len(KEYS))


async def declarations_for(
    store: DeclarationStore,
    org: Org,
    units: Collection[str] | None,
    period: Period,
    *,
    history: bool = False,
) -> list[DeclarationRow]:
    """The declarations of ``units`` (None: every unit) whose period overlaps ``period``:
    the revision in force of each (unit, period, key), or every revision with
    ``history``; ordered by unit (org order), period start, key (``KEYS`` order)."""
    stored = await store.declarations(period.start_ts, period.end_ts, units)
    if not history:
        stored = newest(stored)
    order = {unit.id: i for i, unit in enumerate(org.units)}
    starts = {(row.unit, row.period): row.period_start for row in stored}
    rows = []
    for row in stored:
        try:
            value = decode_value(row.key, row.value)
        except (ValueError, DeclarationError):
            continue
        unit = org.get(row.unit)
        rows.append(
            DeclarationRow(
                unit=row.unit,
                unit_name=unit.name if unit is not None else row.unit,
                period=row.period,
                key=row.key,
                value=value,
                declared_by=row.declared_by,
                declared_at=row.declared_at,
                attachment_name=row.attachment_name,
                attachment_sha256=row.attachment_sha256,
                revision=row.revision,
                source=row.source,
            )
        )
    rows.sort(
        key=lambda r: (
            order.get(r.unit, len(order)),
            r.unit,
            starts[(r.unit, r.period)],
            r.period,
            _key_order(r.key),
            r.revision,
        )
    )
    return rows


async def attachment(store: DeclarationStore, sha256: str) -> bytes:
    """An attached file's bytes by its SHA-256 (hex); DeclarationError if not stored."""
    body = await store.declaration_file(sha256)
    if body is None:
        raise DeclarationError(f"no attached file with sha256 {sha256}")
    return body
