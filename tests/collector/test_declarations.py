"""Declarations as a province uses them: ``declare template`` writes the form, a unit fills
it in (openpyxl here, as Excel or LibreOffice would), ``declare import`` reads it back and
``declare list`` shows it. Every bad cell is named by sheet, row and column and nothing is
stored; hostile workbooks (not a zip, zip bombs, huge sheets, formulas, unknown units,
files outside the attachment folder) exit 2 naming the place."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import shutil
import sqlite3
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from collector.cli import main
from tests.collector.conftest import write_config

SOFFICE = shutil.which("soffice")
needs_libreoffice = pytest.mark.skipif(
    SOFFICE is None, reason="LibreOffice (Debian package libreoffice-calc) not installed"
)
SO_TTTT = "demo/so-tttt"
AN_BINH = "demo/xa-an-binh"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``hatang-collector ARGS`` in this process; (exit code, stdout, stderr)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path)


def template(capsys: pytest.CaptureFixture[str], config: Path, out: Path, *extra: str) -> Path:
    code, stdout, stderr = cli(
        capsys, "declare", "template", "--config", str(config), "--period", "2026",
        "--out", str(out), *extra,
    )  # fmt: skip
    assert code == 0, stderr
    assert stdout.splitlines()[-1] == str(out)
    return out


def ids_row(ws: Any) -> list[Any]:
    return next(row for row in ws.iter_rows(values_only=True) if row and row[0] == "hatang:ids")


def fill_per_row(path: Path, values: dict[str, dict[str, Any]], out: Path) -> Path:
    """Fill the per-row form: {unit id: {column id: value}}."""
    book = openpyxl.load_workbook(path)
    ws = book["Kê khai"]
    ids = list(ids_row(ws))
    for row in ws.iter_rows(min_row=4):
        unit = row[0].value
        for column, value in values.get(unit, {}).items():
            ws.cell(row=row[0].row, column=ids.index(column) + 1, value=value)
    book.save(out)
    return out


def fill_per_unit(path: Path, values: dict[str, dict[str, Any]], out: Path) -> Path:
    """Fill the per-unit form: {unit id: {fact id (".file" for its attachment): value}}."""
    book = openpyxl.load_workbook(path)
    for ws in book.worksheets:
        rows = list(ws.iter_rows())
        unit = next((r[1].value for r in rows if len(r) > 3 and r[3].value == "hatang:unit"), None)
        for row in rows:
            if unit not in values or len(row) < 4:
                continue
            fact = row[3].value
            for column, value in values[unit].items():
                if column == fact:
                    row[1].value = value
                elif column == f"{fact}.file":
                    row[2].value = value
    book.save(out)
    return out


def listed(capsys: pytest.CaptureFixture[str], config: Path, *extra: str) -> list[dict[str, Any]]:
    code, out, err = cli(capsys, "declare", "list", "--config", str(config), "--json", *extra)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def store_rows(config: Path) -> int:
    path = config.parent / "collector.db"
    if not path.exists():
        return 0
    conn = sqlite3.connect(path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        if "declarations" not in tables:
            return 0
        return int(conn.execute("SELECT COUNT(*) FROM declarations").fetchone()[0])
    finally:
        conn.close()


def test_per_row_form_round_trip_and_a_second_import_stores_nothing(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path
) -> None:
    form = template(capsys, config, tmp_path / "form.xlsx", "--layout", "per-row")
    filled = fill_per_row(
        form,
        {
            SO_TTTT: {
                "officials": 40,
                "officials_basis": "Cán bộ công chức làm công tác chuyên môn",
                "security_regulation_number": "123/QĐ-STTTT",
                "security_regulation_date": dt.datetime(2025, 3, 15),
                "systems_level_2": 3,
                "inspection_result": "Đạt có kiến nghị",
                "inspection_date": "20/10/2026",
                "hatang:declared_by": "Trần Thị B",
            },
            AN_BINH: {"officials": 25, "it_staff": 1},
        },
        tmp_path / "filled.xlsx",
    )
    code, out, err = cli(capsys, "declare", "import", "--config", str(config), str(filled))
    assert code == 0, err
    assert out.splitlines()[-1] == "9"
    rows = listed(capsys, config)
    values = {(r["unit"], r["key"]): r["value"] for r in rows}
    assert values == {
        (SO_TTTT, "officials"): 40,
        (SO_TTTT, "officials_basis"): "professional_work",
        (SO_TTTT, "security_regulation_number"): "123/QĐ-STTTT",
        (SO_TTTT, "security_regulation_date"): "2025-03-15",
        (SO_TTTT, "systems_level_2"): 3,
        (SO_TTTT, "inspection_result"): "passed_with_remarks",
        (SO_TTTT, "inspection_date"): "2026-10-20",
        (AN_BINH, "officials"): 25,
        (AN_BINH, "it_staff"): 1,
    }
    by = {r["unit"]: r["declared_by"] for r in rows}
    assert by[SO_TTTT] == "Trần Thị B"  # the form's column wins over the OS user
    assert all(r["period"] == "2026" and r["revision"] == 1 for r in rows)
    code, out, _ = cli(capsys, "declare", "import", "--config", str(config), str(filled))
    assert code == 0 and out.splitlines()[-1] == "0"  # idempotent
    # A corrected value supersedes; the old one stays in the history.
    fixed = fill_per_row(filled, {AN_BINH: {"officials": 27}}, tmp_path / "fixed.xlsx")
    code, out, _ = cli(capsys, "declare", "import", "--config", str(config), str(fixed))
    assert code == 0 and out.splitlines()[-1] == "1"
    now = {(r["unit"], r["key"]): r["value"] for r in listed(capsys, config, "--unit", AN_BINH)}
    assert now == {(AN_BINH, "officials"): 27, (AN_BINH, "it_staff"): 1}
    history = listed(capsys, config, "--unit", AN_BINH, "--history")
    assert [(r["value"], r["revision"]) for r in history if r["key"] == "officials"] == [
        (25, 1),
        (27, 2),
    ]
    assert listed(capsys, config, "--period", "2025") == []
    code, out, _ = cli(capsys, "declare", "list", "--config", str(config), "--unit", SO_TTTT)
    assert code == 0 and "Đạt, có kiến nghị / passed with remarks" in out


def test_per_unit_form_with_attachments(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path
) -> None:
    form = template(capsys, config, tmp_path / "form.xlsx", "--unit", SO_TTTT)
    book = openpyxl.load_workbook(form)
    assert book.sheetnames == ["Hướng dẫn", "Sở Thông tin và Truyền thông", "_hatang"]
    assert book["_hatang"].sheet_state == "hidden"
    attach = tmp_path / "files"
    attach.mkdir()
    scan = b"%PDF-1.4 quyet dinh\n"
    (attach / "qd-123.pdf").write_bytes(scan)
    (attach / "bien-ban.pdf").write_bytes(scan)  # the same bytes: stored once
    filled = fill_per_unit(
        form,
        {
            SO_TTTT: {
                "officials": 38,
                "security_regulation_number": "123/QĐ-STTTT",
                "security_regulation_number.file": "qd-123.pdf",
                "inspection_result": "Đạt",
                "inspection_result.file": "bien-ban.pdf",
            }
        },
        tmp_path / "filled.xlsx",
    )
    # Renamed headers and sheets still import: the hidden ids decide.
    book = openpyxl.load_workbook(filled)
    ws = book["Sở Thông tin và Truyền thông"]
    ws.title = "Sở TTTT"
    ws["A3"] = "renamed"
    book.save(filled)
    code, out, err = cli(
        capsys, "declare", "import", "--config", str(config), str(filled),
        "--by", "Lê Văn C", "--attach", str(attach),
    )  # fmt: skip
    assert code == 0, err
    assert out.splitlines()[-1] == "3"
    rows = {r["key"]: r for r in listed(capsys, config)}
    assert rows["officials"]["declared_by"] == "Lê Văn C"
    assert rows["security_regulation_number"]["attachment_name"] == "qd-123.pdf"
    sha = rows["inspection_result"]["attachment_sha256"]
    assert sha == rows["security_regulation_number"]["attachment_sha256"]
    conn = sqlite3.connect(config.parent / "collector.db")
    assert conn.execute("SELECT content FROM declaration_files").fetchall() == [(scan,)]
    conn.close()


@needs_libreoffice
def test_the_form_opens_in_libreoffice_and_a_form_saved_by_it_imports(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path
) -> None:
    form = template(capsys, config, tmp_path / "form.xlsx", "--layout", "per-row")
    filled = fill_per_row(form, {AN_BINH: {"officials": 23}}, tmp_path / "filled.xlsx")
    assert SOFFICE is not None
    profile = tmp_path / "lo-profile"
    out = tmp_path / "lo"
    for what, source in (("pdf", form), ("xlsx:Calc MS Excel 2007 XML", filled)):
        proc = subprocess.run(
            [
                SOFFICE, f"-env:UserInstallation=file://{profile}", "--headless",
                "--convert-to", what, "--outdir", str(out), str(source),
            ],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Error" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert (out / "form.pdf").read_bytes().startswith(b"%PDF")
    # What a unit saves from LibreOffice Calc reads back the same.
    code, stdout, err = cli(
        capsys, "declare", "import", "--config", str(config), str(out / "filled.xlsx")
    )
    assert code == 0, err
    assert stdout.splitlines()[-1] == "1"
    assert [(r["unit"], r["value"]) for r in listed(capsys, config)] == [(AN_BINH, 23)]


def test_a_bad_cell_is_named_and_nothing_is_stored(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path
) -> None:
    form = template(capsys, config, tmp_path / "form.xlsx", "--layout", "per-row")
    good = fill_per_row(form, {AN_BINH: {"officials": 20}}, tmp_path / "good.xlsx")
    assert cli(capsys, "declare", "import", "--config", str(config), str(good))[0] == 0
    bad = fill_per_row(
        form,
        {
            AN_BINH: {"officials": 21},  # a good change in the same form: not stored either
            SO_TTTT: {
                "officials": "bốn mươi",
                "inspection_date": "31/02/2026",
                "inspection_result": "tốt",
                "systems_level_1": -1,
            },
        },
        tmp_path / "bad.xlsx",
    )
    code, _, err = cli(capsys, "declare", "import", "--config", str(config), str(bad))
    assert code == 2
    lines = err.splitlines()
    assert (
        'hatang-collector: bad.xlsx: sheet "Kê khai", row 5, column C (officials): '
        '"bốn mươi" is not a whole number'
    ) in lines
    assert any("row 5, column R (inspection_date)" in line for line in lines)
    assert any('(inspection_result): "tốt" is not one of: Đạt' in line for line in lines)
    assert any("(systems_level_1): -1 is outside 0..1000000" in line for line in lines)
    assert lines[-1] == "hatang-collector: nothing imported; fix the form and import it again"
    assert [r["value"] for r in listed(capsys, config)] == [20]
    assert store_rows(config) == 1


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, body in members.items():
            archive.writestr(name, body)
    return buffer.getvalue()


def _edit(form: Path, change: Callable[[Any], None]) -> bytes:
    book = openpyxl.load_workbook(form)
    change(book)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def _cell(column: str, value: Any, row: int = 5) -> Callable[[Any], None]:
    def change(book: Any) -> None:
        ws = book["Kê khai"]
        ids = list(ids_row(ws))
        ws.cell(row=row, column=ids.index(column) + 1, value=value)

    return change


def _huge(book: Any) -> None:
    ws = book["Kê khai"]
    ws.cell(row=6000, column=1, value=AN_BINH)


def _dimension(
    form: Path, ref: str | None, change: Callable[[Any], None] = lambda b: None
) -> bytes:
    """The form with the data sheet's dimension record replaced (``ref``) or removed."""
    source = zipfile.ZipFile(io.BytesIO(_edit(form, change)))
    members = {}
    for info in source.infolist():
        body = source.read(info)
        if info.filename == "xl/worksheets/sheet2.xml":  # "Kê khai"
            new = b"" if ref is None else f'<dimension ref="{ref}"/>'.encode()
            body = re.sub(rb"<dimension [^>]*/>", new, body)
        members[info.filename] = body
    return _zip(members)


def _meta(key: str, value: str) -> Callable[[Any], None]:
    def change(book: Any) -> None:
        ws = book["_hatang"]
        for row in ws.iter_rows():
            if row[0].value == key:
                row[1].value = value

    return change


HOSTILE: list[Any] = [
    pytest.param(lambda form: b"unit,officials\ndemo,40\n", "not an XLSX file", id="csv"),
    pytest.param(lambda form: b"", "not an XLSX file", id="empty"),
    pytest.param(
        lambda form: _zip({"xl/workbook.xml": b"\0" * 50_000_000}),
        "refused as a zip bomb",
        id="zip-bomb",
    ),
    pytest.param(
        lambda form: _zip({"word/document.xml": b"<w/>"}), "not an Excel workbook", id="docx"
    ),
    pytest.param(
        lambda form: _zip({"xl/workbook.xml": b"<broken"}), "not a readable XLSX", id="damaged"
    ),
    pytest.param(
        lambda form: _edit(form, lambda b: b.remove(b["_hatang"])),
        "not a hatang declaration form",
        id="no-meta",
    ),
    pytest.param(
        lambda form: _edit(form, _meta("period", "2026-Q5")),
        "period '2026-Q5' is not",
        id="bad-period",
    ),
    pytest.param(lambda form: _edit(form, _huge), "6000 rows", id="huge-sheet"),
    pytest.param(
        lambda form: _dimension(form, "A1:C3", _huge),
        "row 5001: more than 5000 rows",
        id="lying-dimension",
    ),
    pytest.param(lambda form: _dimension(form, None), "no dimension record", id="no-dimension"),
    pytest.param(
        lambda form: _edit(form, _cell("inspection_by", "x" * 3000)),
        "row 5, column S: 3000 characters (at most 2000)",
        id="long-cell",
    ),
    pytest.param(
        lambda form: _edit(form, _cell("inspection_by", "y" * 600)),
        "(inspection_by): is 600 characters long (at most 500)",
        id="long-text",
    ),
    pytest.param(
        lambda form: _edit(form, _cell("officials", "=20+20")),
        "row 5, column C: a formula; type the value itself",
        id="formula",
    ),
    pytest.param(
        lambda form: _edit(form, _cell("hatang:ids", "demo/xa-khong-co", row=5)),
        "row 5, column A: unknown unit 'demo/xa-khong-co'",
        id="unknown-unit",
    ),
    pytest.param(
        lambda form: _edit(form, _cell("hatang:ids", "demo/xa-an-binh", row=5)),
        "unit demo/xa-an-binh appears twice",
        id="duplicate-unit",
    ),
    pytest.param(
        lambda form: _edit(form, _cell("inspection_result.file", "../../etc/passwd")),
        "'../../etc/passwd' is not a file name",
        id="path-traversal",
    ),
    pytest.param(
        lambda form: _edit(form, _cell("inspection_result.file", "missing.pdf")),
        "pass --attach DIR",
        id="no-attach-dir",
    ),
    pytest.param(
        lambda form: _edit(form, _cell("hatang:declared_by", "a\x7fb")),
        "(declared by): contains control characters",
        id="control-chars",
    ),
]


@pytest.mark.parametrize(("make", "message"), HOSTILE)
def test_hostile_workbooks_exit_2_naming_the_place(
    capsys: pytest.CaptureFixture[str],
    config: Path,
    tmp_path: Path,
    make: Callable[[Path], bytes],
    message: str,
) -> None:
    form = template(capsys, config, tmp_path / "form.xlsx", "--layout", "per-row")
    hostile = tmp_path / "hostile.xlsx"
    hostile.write_bytes(make(form))
    code, out, err = cli(capsys, "declare", "import", "--config", str(config), str(hostile))
    assert code == 2, out + err
    assert message in err, err
    assert "hostile.xlsx" in err and "Traceback" not in err
    assert store_rows(config) == 0


def test_attachments_outside_bounds_exit_2(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path
) -> None:
    form = template(capsys, config, tmp_path / "form.xlsx", "--layout", "per-row")
    attach = tmp_path / "files"
    attach.mkdir()
    (attach / "big.pdf").write_bytes(b"\0" * (10 * 1024 * 1024 + 1))
    (attach / "link.pdf").symlink_to("/etc/hostname")
    filled = fill_per_row(
        form,
        {
            SO_TTTT: {"inspection_result": "Đạt", "inspection_result.file": "big.pdf"},
            AN_BINH: {"inspection_result": "Đạt", "inspection_result.file": "link.pdf"},
            "demo/xa-binh-minh": {"security_regulation_number.file": "nowhere.pdf"},
        },
        tmp_path / "filled.xlsx",
    )
    code, _, err = cli(
        capsys, "declare", "import", "--config", str(config), str(filled), "--attach", str(attach)
    )
    assert code == 2
    assert "attached file 'big.pdf' is 10485761 bytes (at most 10485760)" in err
    assert "attached file 'link.pdf' is not a regular file" in err
    assert "attached file 'nowhere.pdf' is not in" in err
    assert store_rows(config) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--period", "2026-Q9"), "period '2026-Q9' is not"),
        (("--period", "2026", "--unit", "demo/nowhere"), "--unit: unknown unit 'demo/nowhere'"),
    ],
)
def test_template_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str],
    config: Path,
    tmp_path: Path,
    args: tuple[str, ...],
    message: str,
) -> None:
    code, _, err = cli(
        capsys, "declare", "template", "--config", str(config), *args,
        "--out", str(tmp_path / "f.xlsx"),
    )  # fmt: skip
    assert code == 2 and message in err
    assert not (tmp_path / "f.xlsx").exists()


def test_a_dimension_smaller_than_the_data_hides_no_rows(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path
) -> None:
    """openpyxl stops at a sheet's recorded last row; the import reads what is there."""
    form = template(capsys, config, tmp_path / "form.xlsx", "--layout", "per-row")
    filled = fill_per_row(form, {"demo/phuong-hoa-binh": {"officials": 31}}, tmp_path / "f.xlsx")
    lying = tmp_path / "lying.xlsx"
    lying.write_bytes(_dimension(filled, "A1:C3"))
    code, out, err = cli(capsys, "declare", "import", "--config", str(config), str(lying))
    assert code == 0, err
    assert out.splitlines()[-1] == "1"
    assert [(r["unit"], r["value"]) for r in listed(capsys, config)] == [
        ("demo/phuong-hoa-binh", 31)
    ]
