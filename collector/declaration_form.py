"""The declaration form: the XLSX workbook a province sends to its units, and reading it back.

Two layouts: ``per-unit`` (one sheet per unit, one row per fact; what a unit fills in) and
``per-row`` (one sheet, one row per unit, one column per fact; what the IT centre
consolidates). Headers are Vietnamese with English; every value cell carries the data
validation openpyxl can write (whole numbers, dates, text length, choice lists), so a unit
filling the form in Excel or LibreOffice is stopped early. The import never relies on that:
every cell is validated again here, and machine-readable ids (a hidden row or column
starting with ``hatang:ids``, and a hidden sheet ``_hatang`` holding the period and layout)
identify units and facts, so renamed headers, renamed sheets and reordered rows still
import.

The import is hostile-input safe: the file must be a plain XLSX zip within size bounds
(compressed, uncompressed, per-member ratio, members), sheets are read in openpyxl's
streaming mode up to ``MAX_ROWS`` × ``MAX_COLUMNS``, text cells are bounded, and formulas
are refused (an auditor's evidence is the typed value, not whatever the last program to
save the file computed). Every problem is collected with its sheet, row and column; one
problem means nothing is stored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import openpyxl
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation

from collector.declarations import (
    KEYS,
    MAX_ATTACHMENT_BYTES,
    MAX_COUNT,
    MAX_TEXT,
    TYPE_WORDS,
    DeclarationError,
    DeclarationKey,
    encode_value,
    parse_value,
)
from collector.org import Org, Unit
from collector.period import Period, PeriodError
from collector.store import NewDeclaration

Layout = Literal["per-unit", "per-row"]
LAYOUTS: Final[tuple[Layout, ...]] = ("per-unit", "per-row")
FORMAT: Final = "hatang-declarations/1"
META_SHEET: Final = "_hatang"
IDS: Final = "hatang:ids"
UNIT_ID: Final = "hatang:unit"
UNIT_NAME: Final = "hatang:unit_name"
DECLARED_BY: Final = "hatang:declared_by"
FILE_SUFFIX: Final = ".file"
MAX_FILE_BYTES: Final = 20 * 1024 * 1024
MAX_UNCOMPRESSED: Final = 30 * 1024 * 1024  # a form of 1,000 units is under 2 MB
MAX_RATIO: Final = 200  # a member inflating more than this is a zip bomb, not a form
MAX_MEMBERS: Final = 2000
MAX_ROWS: Final = 5000
MAX_COLUMNS: Final = 100
MAX_CELL: Final = 2000  # characters in any cell (values are bounded tighter by their type)
MAX_ERRORS: Final = 100
_FIRST_ROW: Final = 4  # per-row layout: title, headers, ids, then units
_HEADER_FILL: Final = PatternFill("solid", fgColor="DDEBF7")


class FormError(Exception):
    """The form cannot be imported; ``problems`` names every bad place."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass
class FormContents:
    """What a valid form declares: ready for ``Store.declare``."""

    period: Period
    layout: Layout
    declarations: list[NewDeclaration] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    units: set[str] = field(default_factory=set)


# --------------------------------------------------------------------------- template


def _columns() -> list[tuple[str, str]]:
    """(id, header) of the fact columns, attachments after the fact they belong to."""
    columns = []
    for key in KEYS:
        columns.append((key.id, key.label))
        if key.attachable:
            columns.append(
                (
                    key.id + FILE_SUFFIX,
                    f"Tệp đính kèm: {key.label_vi} / Attached file: {key.label_en}",
                )
            )
    return columns


def _validation(key: DeclarationKey) -> DataValidation:
    """What Excel and LibreOffice can check while a unit types (the import checks again)."""
    message = f"{key.label_vi}: {TYPE_WORDS[key.type]}"
    if key.type == "count":
        dv = DataValidation(type="whole", operator="between", formula1="0", formula2=str(MAX_COUNT))
    elif key.type == "date":
        dv = DataValidation(
            type="date", operator="between", formula1="DATE(2000,1,1)", formula2="DATE(2100,12,31)"
        )
    elif key.type == "choice":
        # A list validation splits at commas; the import reads labels without them too.
        labels = ",".join(c.label_vi.replace(",", "") for c in key.choices)
        dv = DataValidation(type="list", formula1=f'"{labels}"')
    else:
        dv = DataValidation(type="textLength", operator="lessThanOrEqual", formula1=str(MAX_TEXT))
    dv.allow_blank = True
    dv.error = message
    dv.errorTitle = "hatang"
    dv.prompt = key.help_vi or message
    dv.showErrorMessage = True
    dv.showInputMessage = True
    return dv


def _sheet_title(unit: Unit, taken: set[str]) -> str:
    """A unique sheet name from the unit's name (Excel: 31 characters, no []:*?/\\)."""
    clean = "".join(" " if ch in "[]:*?/\\" else ch for ch in unit.name).strip() or unit.id
    title = clean[:31]
    n = 2
    while title.casefold() in taken or title == META_SHEET:
        suffix = f" ({n})"
        title = clean[: 31 - len(suffix)] + suffix
        n += 1
    taken.add(title.casefold())
    return title


def _instructions(book: Any, period: Period, layout: Layout, units: Sequence[Unit]) -> None:
    ws = book.active
    ws.title = "Hướng dẫn"
    lines = [
        f"Phiếu kê khai thông tin an toàn thông tin — {period.title_vi}",
        f"Declaration form — {period.title_en} (period {period.name})",
        "",
        "Cách điền / How to fill in:",
        "1. Điền giá trị vào các ô trống; ô để trống nghĩa là không kê khai mục đó."
        " / Fill in the empty cells; an empty cell declares nothing.",
        "2. Số: số nguyên (ví dụ 42). Ngày: dd/mm/yyyy. Mục có danh sách: chọn trong danh sách."
        " / Numbers are whole numbers, dates dd/mm/yyyy, lists: pick a choice.",
        "3. Không dùng công thức: nhập chính giá trị. / Do not use formulas: type the value.",
        "4. Tệp đính kèm: ghi tên tệp (ví dụ quyet-dinh-123.pdf) và gửi tệp cùng phiếu."
        " / Attached files: write the file name and send the file with the form.",
        "5. Có thể đổi tên cột, tên trang; không xóa hàng/cột ẩn."
        " / Headers and sheets may be renamed; do not delete hidden rows or columns.",
        "",
        f"Bố cục / Layout: {layout}; {len(units)} đơn vị / units.",
        "",
        "Các mục kê khai / Facts:",
    ]
    for line in lines:
        ws.append([line])
    for key in KEYS:
        ws.append([f"{key.group_vi}: {key.label}", TYPE_WORDS[key.type], key.help_vi])
    ws["A1"].font = Font(bold=True, size=14)
    ws.column_dimensions["A"].width = 90
    ws.column_dimensions["B"].width = 28
    ws.column_dimensions["C"].width = 70


def _meta(book: Any, period: Period, layout: Layout, org: Org, generated_at: dt.datetime) -> None:
    ws = book.create_sheet(META_SHEET)
    for row in (
        ("format", FORMAT),
        ("period", period.name),
        ("layout", layout),
        ("province", org.province),
        ("generated_at", generated_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")),
    ):
        ws.append(row)
    ws.sheet_state = "hidden"


def _per_row_sheet(book: Any, period: Period, units: Sequence[Unit]) -> None:
    ws = book.create_sheet("Kê khai")
    columns = [
        (UNIT_ID, "Mã đơn vị / Unit id"),
        (UNIT_NAME, "Tên đơn vị / Unit"),
        *_columns(),
        (DECLARED_BY, "Người kê khai / Declared by"),
    ]
    ws.append([f"Kê khai {period.title_vi} / Declarations, {period.title_en}"])
    ws.append([header for _, header in columns])
    ws.append([IDS, *[cid for cid, _ in columns[1:]]])
    ws.row_dimensions[3].hidden = True
    for unit in units:
        ws.append([unit.id, unit.name])
    last = _FIRST_ROW + len(units) - 1
    for index, (cid, _) in enumerate(columns, start=1):
        letter = get_column_letter(index)
        ws.column_dimensions[letter].width = 40 if index <= 2 else 22
        cell = ws.cell(row=2, column=index)
        cell.font = Font(bold=True)
        cell.fill = _HEADER_FILL
        cell.alignment = Alignment(wrap_text=True, vertical="top")
        key = next((k for k in KEYS if k.id == cid), None)
        if key is not None and units:
            dv = _validation(key)
            ws.add_data_validation(dv)
            dv.add(f"{letter}{_FIRST_ROW}:{letter}{last}")
    ws["A1"].font = Font(bold=True, size=13)
    ws.row_dimensions[2].height = 60
    ws.freeze_panes = "C4"


def _per_unit_sheet(book: Any, period: Period, unit: Unit, taken: set[str]) -> None:
    ws = book.create_sheet(_sheet_title(unit, taken))
    ws.append([f"{unit.name} — {period.title_vi} / {period.title_en}"])
    ws.append(["Mã đơn vị / Unit id", unit.id, "", UNIT_ID])
    ws.append(["Mục kê khai / Fact", "Giá trị / Value", "Tệp đính kèm / Attached file", IDS])
    for key in KEYS:
        ws.append([f"{key.group_vi}: {key.label}", None, None, key.id])
        row = ws.max_row
        dv = _validation(key)
        ws.add_data_validation(dv)
        dv.add(f"B{row}")
        if not key.attachable:
            ws.cell(row=row, column=3).fill = PatternFill("solid", fgColor="EEEEEE")
    ws.append(["Người kê khai / Declared by", None, None, DECLARED_BY])
    for col in ("A", "B", "C"):
        ws[f"{col}3"].font = Font(bold=True)
        ws[f"{col}3"].fill = _HEADER_FILL
    ws["A1"].font = Font(bold=True, size=13)
    ws.column_dimensions["A"].width = 80
    ws.column_dimensions["B"].width = 30
    ws.column_dimensions["C"].width = 30
    ws.column_dimensions["D"].hidden = True


def write_template(
    out: Path,
    org: Org,
    units: Sequence[Unit],
    period: Period,
    layout: Layout,
    *,
    generated_at: dt.datetime | None = None,
) -> None:
    """Write the form for ``units`` and ``period`` to ``out`` (replaced atomically)."""
    book = openpyxl.Workbook()
    _instructions(book, period, layout, units)
    if layout == "per-row":
        _per_row_sheet(book, period, units)
    else:
        taken: set[str] = {"hướng dẫn"}
        for unit in units:
            _per_unit_sheet(book, period, unit, taken)
    _meta(book, period, layout, org, generated_at or dt.datetime.now(dt.UTC))
    buffer = io.BytesIO()
    book.save(buffer)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(out)


# --------------------------------------------------------------------------- import


@dataclass
class _Reader:
    """Collects problems with their places while a form is read."""

    name: str
    problems: list[str] = field(default_factory=list)

    def add(
        self, message: str, sheet: str | None = None, row: int = 0, col: int = 0, what: str = ""
    ) -> None:
        place = self.name
        if sheet is not None:
            place += f': sheet "{sheet}"'
        if row:
            place += f", row {row}"
        if col:
            place += f", column {get_column_letter(col)}"
        if what:
            place += f" ({what})"
        if len(self.problems) < MAX_ERRORS:
            self.problems.append(f"{place}: {message}")
        elif len(self.problems) == MAX_ERRORS:
            self.problems.append(f"{self.name}: more problems not shown")

    def fail_if_any(self) -> None:
        if self.problems:
            raise FormError(self.problems)


def _check_zip(path: Path, reader: _Reader) -> bytes:
    """The file's bytes if it is an XLSX-shaped zip within bounds; else FormError."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise FormError([f"{reader.name}: cannot read: {exc.strerror or exc}"]) from None
    if size > MAX_FILE_BYTES:
        raise FormError([f"{reader.name}: {size} bytes, larger than {MAX_FILE_BYTES} allowed"])
    data = path.read_bytes()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
            if len(members) > MAX_MEMBERS:
                raise FormError([f"{reader.name}: {len(members)} zip members (not a form)"])
            total = 0
            for member in members:
                total += member.file_size
                ratio = member.file_size / max(1, member.compress_size)
                if ratio > MAX_RATIO or total > MAX_UNCOMPRESSED:
                    raise FormError(
                        [
                            f"{reader.name}: {member.filename} inflates to "
                            f"{member.file_size} bytes (ratio {ratio:.0f}); refused as a zip bomb"
                        ]
                    )
            if "xl/workbook.xml" not in archive.namelist():
                raise FormError([f"{reader.name}: not an Excel workbook (no xl/workbook.xml)"])
    except zipfile.BadZipFile:
        raise FormError(
            [f"{reader.name}: not an XLSX file (save it as Excel Workbook .xlsx)"]
        ) from None
    return data


def _rows(ws: Any, sheet: str, reader: _Reader) -> Iterator[tuple[int, list[Any]]]:
    """(row number, cells) of a sheet, bounded; formulas and oversized text reported.

    The sheet's dimension record is checked first (every spreadsheet program writes one);
    rows are then counted as they stream, so a dimension that lies can neither hide rows
    nor make the reader go past ``MAX_ROWS``. Cells right of ``MAX_COLUMNS`` are not read
    (a form has some 30 columns).
    """
    rows, cols = ws.max_row, ws.max_column
    if rows is None or cols is None:
        reader.add("no dimension record; save the form again in Excel or LibreOffice", sheet)
        return
    if rows > MAX_ROWS or cols > MAX_COLUMNS:
        reader.add(
            f"{rows} rows × {cols} columns, more than the {MAX_ROWS} × {MAX_COLUMNS} a form "
            "may have; split the form",
            sheet,
        )
        return
    # Read what the file holds, not what its dimension claims: a smaller dimension than
    # the data would otherwise hide rows (openpyxl stops at the recorded last row).
    ws.reset_dimensions()
    for number, row in enumerate(ws.iter_rows(max_col=MAX_COLUMNS), start=1):
        if number > MAX_ROWS:
            reader.add(f"more than {MAX_ROWS} rows; split the form", sheet, number)
            return
        values: list[Any] = []
        for col, cell in enumerate(row, start=1):
            value = getattr(cell, "value", None)
            if value is None:
                values.append(None)
                continue
            if getattr(cell, "data_type", None) == "f" or (
                isinstance(value, str) and value.startswith("=")
            ):
                reader.add("a formula; type the value itself", sheet, number, col)
                values.append(None)
                continue
            if isinstance(value, str) and len(value) > MAX_CELL:
                reader.add(f"{len(value)} characters (at most {MAX_CELL})", sheet, number, col)
                values.append(None)
                continue
            values.append(value)
        yield number, values


def _meta_values(book: Any, reader: _Reader) -> dict[str, str]:
    if META_SHEET not in book.sheetnames:
        raise FormError(
            [
                f"{reader.name}: not a hatang declaration form (no {META_SHEET} sheet); "
                "start from `hatang-collector declare template`"
            ]
        )
    meta: dict[str, str] = {}
    for _, values in _rows(book[META_SHEET], META_SHEET, reader):
        if len(values) >= 2 and isinstance(values[0], str) and values[1] is not None:
            meta[values[0]] = str(values[1])
    if meta.get("format") != FORMAT:
        raise FormError(
            [
                f'{reader.name}: sheet "{META_SHEET}": format {meta.get("format")!r} '
                f"is not {FORMAT!r}"
            ]
        )
    return meta


@dataclass
class _Cell:
    """One filled value cell and where it is."""

    sheet: str
    row: int
    col: int
    unit: str
    key: str  # a KEYS id, or id + ".file", or DECLARED_BY
    value: Any


class _Importer:
    def __init__(
        self, reader: _Reader, org: Org, period: Period, attach_dir: Path | None, default_by: str
    ) -> None:
        self.reader = reader
        self.org = org
        self.period = period
        self.attach_dir = attach_dir
        self.default_by = default_by
        self.seen_units: dict[str, str] = {}

    def unit(self, raw: Any, sheet: str, row: int, col: int) -> str | None:
        unit = raw.strip() if isinstance(raw, str) else raw
        if not isinstance(unit, str) or unit not in self.org:
            self.reader.add(
                f"unknown unit {unit!r} (not a unit of {self.org.province}'s org file)",
                sheet,
                row,
                col,
            )
            return None
        place = f'sheet "{sheet}", row {row}'
        if unit in self.seen_units:
            self.reader.add(
                f"unit {unit} appears twice (also {self.seen_units[unit]})", sheet, row, col
            )
            return None
        self.seen_units[unit] = place
        return unit

    def per_row(self, book: Any) -> list[_Cell]:
        cells: list[_Cell] = []
        found = False
        for sheet in book.sheetnames:
            if sheet == META_SHEET:
                continue
            ids: list[Any] | None = None
            for number, values in _rows(book[sheet], sheet, self.reader):
                if ids is None:
                    if values and values[0] == IDS:
                        ids = values
                        found = True
                        unknown = [
                            (i, v)
                            for i, v in enumerate(values[1:], start=2)
                            if v is not None and not self.known_column(str(v))
                        ]
                        for i, v in unknown:
                            self.reader.add(f"unknown column id {v!r}", sheet, number, i)
                    continue
                if all(v is None for v in values):
                    continue
                unit = self.unit(values[0] if values else None, sheet, number, 1)
                if unit is None:
                    continue
                for col, value in enumerate(values[1:], start=2):
                    cid = ids[col - 1] if col - 1 < len(ids) else None
                    if value is None or cid in (None, UNIT_NAME):
                        continue
                    if not self.known_column(str(cid)):
                        continue
                    cells.append(_Cell(sheet, number, col, unit, str(cid), value))
        if not found:
            self.reader.add(f"no row starting with {IDS} (the hidden header ids) in any sheet")
        return cells

    def per_unit(self, book: Any) -> list[_Cell]:
        cells: list[_Cell] = []
        sheets = 0
        for sheet in book.sheetnames:
            if sheet == META_SHEET:
                continue
            unit: str | None = None
            in_facts = False
            rows = list(_rows(book[sheet], sheet, self.reader))
            for number, values in rows:
                marker = values[3] if len(values) > 3 else None
                if marker == UNIT_ID:
                    sheets += 1
                    unit = self.unit(values[1] if len(values) > 1 else None, sheet, number, 2)
                elif marker == IDS:
                    in_facts = True
                elif in_facts and marker is not None and unit is not None:
                    key = str(marker)
                    if not self.known_column(key):
                        self.reader.add(f"unknown fact id {key!r}", sheet, number, 4)
                        continue
                    for col in (2, 3) if key != DECLARED_BY else (2,):
                        value = values[col - 1] if len(values) >= col else None
                        if value is None:
                            continue
                        cid = key + FILE_SUFFIX if col == 3 else key
                        if col == 3 and not _attachable(key):
                            self.reader.add(f"{key} takes no attached file", sheet, number, col)
                            continue
                        cells.append(_Cell(sheet, number, col, unit, cid, value))
        if not sheets:
            self.reader.add(f"no sheet with a unit id (a hidden {UNIT_ID} cell)")
        return cells

    @staticmethod
    def known_column(cid: str) -> bool:
        if cid in (UNIT_NAME, DECLARED_BY):
            return True
        base = cid.removesuffix(FILE_SUFFIX)
        spec = next((k for k in KEYS if k.id == base), None)
        return spec is not None and (cid == base or spec.attachable)

    def attachment(self, cell: _Cell, files: dict[str, bytes]) -> tuple[str, str] | None:
        name = cell.value.strip() if isinstance(cell.value, str) else None
        where = (cell.sheet, cell.row, cell.col)
        if not name or "/" in name or "\\" in name or name.startswith("."):
            self.reader.add(f"{cell.value!r} is not a file name", *where)
            return None
        if self.attach_dir is None:
            self.reader.add(f"attached file {name!r}: pass --attach DIR with the files", *where)
            return None
        path = self.attach_dir / name
        try:
            info = path.lstat()
        except OSError:
            self.reader.add(f"attached file {name!r} is not in {self.attach_dir}", *where)
            return None
        if not path.is_file() or path.is_symlink():
            self.reader.add(f"attached file {name!r} is not a regular file", *where)
            return None
        if info.st_size > MAX_ATTACHMENT_BYTES:
            self.reader.add(
                f"attached file {name!r} is {info.st_size} bytes (at most {MAX_ATTACHMENT_BYTES})",
                *where,
            )
            return None
        body = path.read_bytes()
        sha = hashlib.sha256(body).hexdigest()
        files[sha] = body
        return name, sha

    def declarations(self, cells: Sequence[_Cell], layout: Layout) -> FormContents:
        contents = FormContents(self.period, layout)
        by_unit: dict[str, str] = {}
        for cell in cells:
            if cell.key == DECLARED_BY:
                try:
                    by_unit[cell.unit] = parse_value(_BY_KEY, cell.value)  # type: ignore[assignment]
                except DeclarationError as exc:
                    self.reader.add(str(exc), cell.sheet, cell.row, cell.col, "declared by")
        files: dict[tuple[str, str], tuple[str, str]] = {}
        for cell in cells:
            if cell.key.endswith(FILE_SUFFIX):
                found = self.attachment(cell, contents.files)
                if found is not None:
                    files[(cell.unit, cell.key.removesuffix(FILE_SUFFIX))] = found
        for cell in cells:
            if cell.key == DECLARED_BY or cell.key.endswith(FILE_SUFFIX):
                continue
            spec = next(k for k in KEYS if k.id == cell.key)
            try:
                value = parse_value(spec, cell.value)
            except DeclarationError as exc:
                self.reader.add(str(exc), cell.sheet, cell.row, cell.col, spec.id)
                continue
            name, sha = files.pop((cell.unit, spec.id), (None, None))
            contents.units.add(cell.unit)
            contents.declarations.append(
                NewDeclaration(
                    unit=cell.unit,
                    period=self.period.name,
                    period_start=self.period.start_ts,
                    period_end=self.period.end_ts,
                    key=spec.id,
                    value=encode_value(value),
                    declared_by=by_unit.get(cell.unit, self.default_by),
                    source=f'{self.reader.name}: sheet "{cell.sheet}", row {cell.row}',
                    attachment_name=name,
                    attachment_sha256=sha,
                )
            )
        for (unit, key), (name, _) in files.items():
            self.reader.add(f"attached file {name!r} for {key} of {unit}, but no {key} value")
        return contents


_BY_KEY: Final = DeclarationKey("declared_by", "text", "Người kê khai", "Declared by", "", "")


def _attachable(key: str) -> bool:
    return any(k.id == key and k.attachable for k in KEYS)


def read_form(
    path: Path,
    org: Org,
    parse_period: Callable[[str], Period],
    *,
    attach_dir: Path | None = None,
    declared_by: str,
) -> FormContents:
    """Read and validate a filled form; FormError naming every bad place."""
    reader = _Reader(path.name)
    data = _check_zip(path, reader)
    try:
        book = openpyxl.load_workbook(
            io.BytesIO(data), read_only=True, data_only=False, keep_links=False
        )
    except Exception as exc:  # openpyxl raises many kinds for a damaged workbook
        raise FormError(
            [f"{path.name}: not a readable XLSX workbook ({type(exc).__name__}: {str(exc)[:200]})"]
        ) from None
    try:
        meta = _meta_values(book, reader)
        try:
            period = parse_period(meta.get("period", ""))
        except PeriodError as exc:
            raise FormError([f'{path.name}: sheet "{META_SHEET}": {exc}']) from None
        layout = meta.get("layout")
        if layout not in LAYOUTS:
            raise FormError([f'{path.name}: sheet "{META_SHEET}": unknown layout {layout!r}'])
        importer = _Importer(reader, org, period, attach_dir, declared_by)
        cells = importer.per_row(book) if layout == "per-row" else importer.per_unit(book)
        contents = importer.declarations(cells, layout)
    finally:
        book.close()
    reader.fail_if_any()
    return contents
