"""The one place hatang writes documents for people: XLSX, CSV and PDF (with charts).

Evidence bundles and attainment reports (``hatang-collector report``) describe their
content as ``Table``s and hand them here. Libraries do the formats: openpyxl (XLSX,
write-only so a large table streams), the csv module (RFC 4180, UTF-8 with BOM so Excel
reads Vietnamese), fpdf2 (PDF, embedding DejaVu Sans, which has every Vietnamese
diacritic) and matplotlib's Agg backend (charts as PNG). The font is the one matplotlib
ships, found through the package on any OS: no system font is needed.

What no agent measured is never shown as a number: an empty ratio, share or count cell
says ``NO_DATA``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

NO_DATA: Final = "không có dữ liệu / no data"
Kind = Literal["text", "int", "float", "ratio", "time", "date"]
_SHEET_FORBIDDEN: Final = str.maketrans({c: "-" for c in "[]:*?/\\"})
_NUMBER_FORMATS: Final = {
    "ratio": "0.0%",
    "float": "0.00",
    "int": "0",
    "time": "yyyy-mm-dd hh:mm",
    "date": "yyyy-mm-dd",
}


@dataclass(frozen=True, slots=True)
class Column:
    vi: str
    en: str
    kind: Kind = "text"

    @property
    def header(self) -> str:
        return f"{self.vi} / {self.en}"


@dataclass(frozen=True, slots=True)
class Cell:
    """A value shown in another kind than its column's (computers per official is a
    number of computers, not a share, in a column of shares)."""

    value: Any
    kind: Kind


def as_kind(value: Any, kind: Kind) -> tuple[Any, Kind]:
    """The value and kind a cell is written with."""
    return (value.value, value.kind) if isinstance(value, Cell) else (value, kind)


@dataclass(slots=True)
class Table:
    """A titled table; ``rows`` hold plain values (unix seconds for ``time`` columns,
    fractions for ``ratio`` columns, None where nothing was measured)."""

    slug: str  # file name of its CSV, e.g. "antivirus"
    title_vi: str
    title_en: str
    columns: list[Column]
    rows: list[list[Any]] = field(default_factory=list)

    @property
    def sheet_name(self) -> str:
        """Vietnamese with English beside; Excel allows 31 characters and no ``/``."""
        return f"{self.title_vi} - {self.title_en}".translate(_SHEET_FORBIDDEN)[:31]


def _local(ts: float, tz: ZoneInfo) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz)


def text(value: Any, kind: Kind, tz: ZoneInfo) -> str:
    """A cell as text (CSV, PDF)."""
    value, kind = as_kind(value, kind)
    if value is None:
        return NO_DATA if kind in ("ratio", "float", "int") else ""
    if kind == "ratio":
        return f"{float(value) * 100:.1f} %"
    if kind == "float":
        return f"{float(value):.2f}"
    if kind == "int":
        return str(int(value))
    if kind == "time":
        return _local(float(value), tz).strftime("%Y-%m-%d %H:%M")
    if kind == "date":
        return str(value)
    return str(value)


def write_csv(table: Table, tz: ZoneInfo) -> bytes:
    """UTF-8 with BOM, CRLF rows, RFC 4180 quoting (the csv module's default dialect)."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([c.header for c in table.columns])
    for row in table.rows:
        writer.writerow([text(v, c.kind, tz) for v, c in zip(row, table.columns, strict=True)])
    return b"\xef\xbb\xbf" + out.getvalue().encode("utf-8")


def write_xlsx(tables: Sequence[Table], tz: ZoneInfo) -> bytes:
    """One sheet per table: a bold header row (Vietnamese / English), typed cells."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font

    book = Workbook(write_only=True)
    bold = Font(bold=True)
    names: set[str] = set()
    for table in tables:
        name = table.sheet_name
        assert name not in names, f"two sheets named {name!r}"
        names.add(name)
        sheet = book.create_sheet(name)
        for index, column in enumerate(table.columns):
            letter = _letter(index)
            sheet.column_dimensions[letter].width = 14 if column.kind != "text" else 24
        header = []
        for column in table.columns:
            cell = WriteOnlyCell(sheet, value=column.header)
            cell.font = bold
            header.append(cell)
        sheet.append(header)
        if not table.rows:
            sheet.append([NO_DATA])
        for row in table.rows:
            cells = []
            for value, column in zip(row, table.columns, strict=True):
                cells.append(_xlsx_cell(WriteOnlyCell, sheet, value, column.kind, tz))
            sheet.append(cells)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def _letter(index: int) -> str:
    from openpyxl.utils import get_column_letter

    return str(get_column_letter(index + 1))


def _xlsx_cell(make: Any, sheet: Any, value: Any, kind: Kind, tz: ZoneInfo) -> Any:
    value, kind = as_kind(value, kind)
    if value is None:
        return make(sheet, value=NO_DATA if kind in ("ratio", "float", "int") else None)
    if kind == "time":
        value = _local(float(value), tz).replace(tzinfo=None)  # Excel has no time zones
    elif kind == "date" and isinstance(value, str):
        value = dt.date.fromisoformat(value)
    elif kind in ("ratio", "float"):
        value = float(value)
    elif kind == "int":
        value = int(value)
    cell = make(sheet, value=value)
    if kind in _NUMBER_FORMATS:
        cell.number_format = _NUMBER_FORMATS[kind]
    return cell


# -- PDF ---------------------------------------------------------------------------------


def font_paths() -> tuple[Path, Path]:
    """DejaVu Sans regular and bold, as shipped inside matplotlib."""
    import matplotlib

    base = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return base / "DejaVuSans.ttf", base / "DejaVuSans-Bold.ttf"


class Pdf:
    """A small document builder over fpdf2: A4, DejaVu Sans, titled tables, PNG charts."""

    def __init__(self, title: str, author: str) -> None:
        from fpdf import FPDF

        logging.getLogger("fontTools").setLevel(logging.WARNING)  # subsetting chatter
        pdf = FPDF(orientation="P", unit="mm", format="A4")
        regular, bold = font_paths()
        pdf.add_font("DejaVu", "", str(regular))
        pdf.add_font("DejaVu", "B", str(bold))
        pdf.set_title(title)
        pdf.set_author(author)
        pdf.set_creator("hatang-collector")
        pdf.set_auto_page_break(auto=True, margin=15)
        pdf.set_font("DejaVu", size=10)
        self.pdf = pdf

    def title_page(self, title: str, subtitle: str, lines: Iterable[tuple[str, str]]) -> None:
        pdf = self.pdf
        pdf.add_page()
        pdf.ln(40)
        pdf.set_font("DejaVu", "B", 20)
        pdf.multi_cell(0, 10, title, align="C", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(4)
        pdf.set_font("DejaVu", "", 13)
        pdf.multi_cell(0, 7, subtitle, align="C", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(16)
        pdf.set_font("DejaVu", "", 11)
        for label, value in lines:
            pdf.set_font("DejaVu", "B", 11)
            pdf.cell(60, 8, label)
            pdf.set_font("DejaVu", "", 11)
            pdf.multi_cell(0, 8, value, new_x="LMARGIN", new_y="NEXT")

    def page(self) -> None:
        self.pdf.add_page()

    def heading(self, text_: str) -> None:
        pdf = self.pdf
        pdf.ln(3)
        pdf.set_font("DejaVu", "B", 13)
        pdf.multi_cell(0, 8, text_, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("DejaVu", "", 9)

    def paragraph(self, text_: str) -> None:
        self.pdf.set_font("DejaVu", "", 9)
        self.pdf.multi_cell(0, 5, text_, new_x="LMARGIN", new_y="NEXT")
        self.pdf.ln(1)

    def table(
        self,
        columns: Sequence[str],
        rows: Iterable[Sequence[str]],
        widths: Sequence[float] | None = None,
    ) -> None:
        pdf = self.pdf
        pdf.set_font("DejaVu", "", 8)
        with pdf.table(
            col_widths=tuple(widths) if widths else None,
            text_align="LEFT",
            line_height=4.5,
            first_row_as_headings=True,
        ) as table:
            head = table.row()
            for name in columns:
                head.cell(name)
            for values in rows:
                row = table.row()
                for value in values:
                    row.cell(value)
        pdf.ln(2)

    def image(self, png: bytes, width: float = 180) -> None:
        self.pdf.image(io.BytesIO(png), w=width)
        self.pdf.ln(2)

    def output(self) -> bytes:
        return bytes(self.pdf.output())


def line_chart(
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    ylabel: str = "%",
) -> bytes:
    """A monthly line chart (values 0..1 shown as %); gaps where there is no data."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # its default font, DejaVu Sans, has Vietnamese

    figure = Figure(figsize=(8, 3.2), dpi=110)
    axes = figure.subplots()
    x = list(range(len(labels)))
    for name, values in series:
        ys = [float("nan") if v is None else v * 100 for v in values]
        axes.plot(x, ys, marker="o", label=name)
    axes.set_xticks(x, labels, rotation=45, fontsize=7)
    axes.set_ylim(0, 105)
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    axes.grid(True, alpha=0.3)
    if series:
        axes.legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
