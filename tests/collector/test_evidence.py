"""Evidence bundles end to end: a year of history written through the store's ingest path,
exported with the real command, read back with openpyxl, LibreOffice, poppler and
openssl; tampering and hostile bundles are named."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import io
import json
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import msgspec
import openpyxl
import pytest
import yaml

from collector.compliance import ComplianceError, in_force, load_all, load_rules
from collector.evidence.render import NO_DATA
from collector.store.sqlite import SQLiteStore
from tests.collector.conftest import DEMO_ORG, REPO, MakeClient, collector_config, run_cli
from tests.collector.evidence_history import (
    OUTAGE,
    SITE_A,
    SITE_B,
    SITE_C,
    TZ,
    UNPROTECTED,
    write_history,
)

TARGETS = REPO / "configs" / "targets" / "thai-nguyen-2026.yaml"
TITLE = "BÁO CÁO BẰNG CHỨNG AN TOÀN THÔNG TIN"


@pytest.fixture(scope="module")
def collector_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A collector config over a store holding the year 2025 (written through ingest)."""
    root = tmp_path_factory.mktemp("evidence")
    config = {
        "org": str(DEMO_ORG),
        "store": {"url": "sqlite:collector.db"},
        "targets": [str(TARGETS)],
        "listen": {"host": "127.0.0.1", "port": 0},
    }
    (root / "collector.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")

    async def fill() -> int:
        store = SQLiteStore(root / "collector.db")
        await store.open()
        try:
            return await write_history(store)
        finally:
            await store.close()

    assert asyncio.run(fill()) > 3000
    return root


@pytest.fixture(scope="module")
def exported(collector_dir: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    proc = run_cli(
        "evidence",
        "export",
        "--config",
        str(collector_dir / "collector.yaml"),
        "--period",
        "2025",
        "--out",
        str(collector_dir / "out"),
        "--by",
        "Nguyễn Văn An",
    )
    assert proc.returncode == 0, proc.stderr
    return Path(proc.stdout.splitlines()[-1]), proc


@pytest.fixture(scope="module")
def bundle(exported: tuple[Path, Any]) -> Path:
    return exported[0]


@pytest.fixture(scope="module")
def members(bundle: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(bundle) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


@pytest.fixture(scope="module")
def workbook(members: dict[str, bytes]) -> Any:
    return openpyxl.load_workbook(io.BytesIO(members["evidence.xlsx"]), read_only=True)


@pytest.fixture(scope="module")
def public_pem(collector_dir: Path, bundle: Path) -> Path:
    proc = run_cli("evidence", "public-key", "--config", str(collector_dir / "collector.yaml"))
    assert proc.returncode == 0, proc.stderr
    pem = proc.stdout[: proc.stdout.index("-----END PUBLIC KEY-----") + 25]
    path = collector_dir / "pub.pem"
    path.write_text(pem, encoding="ascii")
    return path


def sheet_rows(workbook: Any, prefix: str) -> list[dict[str, Any]]:
    """A sheet as dicts keyed by the English half of each header."""
    sheet = next(s for s in workbook.worksheets if s.title.startswith(prefix))
    rows = list(sheet.iter_rows(values_only=True))
    keys = [str(h).split(" / ")[-1] for h in rows[0]]
    return [dict(zip(keys, row, strict=False)) for row in rows[1:]]


def local(value: dt.datetime) -> dt.datetime:
    return value.astimezone(TZ).replace(tzinfo=None)


# -- the command ---------------------------------------------------------------------------


def test_export_prints_the_path_alone_and_says_where_it_created_the_key(
    exported: tuple[Path, subprocess.CompletedProcess[str]], collector_dir: Path
) -> None:
    path, proc = exported
    assert path.is_file() and path.suffix == ".zip" and path.parent == collector_dir / "out"
    assert proc.stdout.strip() == str(path)  # piped: no progress, the path alone
    key = collector_dir / "evidence-signing-key.pem"
    assert f"created the evidence signing key {key}" in proc.stderr
    assert key.stat().st_mode & 0o777 == 0o600


def test_bundle_holds_workbook_pdf_csvs_manifest_and_signature(members: dict[str, bytes]) -> None:
    names = set(members)
    assert {"evidence.xlsx", "evidence.pdf", "manifest.json", "manifest.sig", "SHA256SUMS"} <= names
    tables = "goals units computers antivirus firewall_patch connectivity outages agents"
    for table in (*tables.split(), "completeness", "declarations", "findings", "rules"):
        assert f"csv/{table}.csv" in names
    manifest = json.loads(members["manifest.json"])
    assert manifest["period"]["name"] == "2025"
    assert manifest["unit"]["id"] == "demo"
    assert manifest["org"]["sha256"] == hashlib.sha256(DEMO_ORG.read_bytes()).hexdigest()
    assert manifest["targets"][0]["sha256"] == hashlib.sha256(TARGETS.read_bytes()).hexdigest()
    assert manifest["compliance"]["framework"] == "vn-attt-2016"  # in force on 31/12/2025
    assert {b["id"] for b in manifest["compliance"]["legal_basis"]} >= {"luat-attt-2015"}
    assert manifest["chain_heads"][SITE_A]["seq"] > 1000
    assert manifest["exported_by"] == "Nguyễn Văn An"
    for entry in manifest["members"]:
        data = members[entry["name"]]
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (entry["sha256"], entry["size"])
    assert len(members["manifest.sig"]) == 64


# -- the numbers equal what was put in -----------------------------------------------------


def test_a_site_down_three_days_in_march_shows_90_percent_and_one_outage(workbook: Any) -> None:
    rows = sheet_rows(workbook, "Kết nối")
    march = next(
        r for r in rows if r["Unit id"] == SITE_A and r["Network class"] == "Internet"
        and r["Month"] == "2025-03"
    )  # fmt: skip
    assert march["Checks"] == 124 and march["Checks up"] == 112  # 4 a day, 12 down
    assert march["Share of time up"] == pytest.approx(112 / 124)  # ≈ 90 %
    assert march["Coverage"] == pytest.approx(1.0)
    assert march["Outages"] == 1 and march["Downtime (hours)"] == pytest.approx(72.0)
    lan = next(
        r for r in rows if r["Unit id"] == SITE_A and r["Network class"] == "LAN"
        and r["Month"] == "2025-03"
    )  # fmt: skip
    assert lan["Share of time up"] == pytest.approx(1.0)
    outages = [r for r in sheet_rows(workbook, "Mất kết nối") if r["Unit id"] == SITE_A]
    assert len(outages) == 1
    (outage,) = outages
    assert outage["Kind"] == "mất kết nối / down"
    assert outage["Start"] == local(OUTAGE[0]) and outage["End"] == local(OUTAGE[1])
    assert outage["Duration (hours)"] == pytest.approx(72.0)


def test_the_unprotected_computer_shows_its_longest_stretch(workbook: Any) -> None:
    (pc,) = [r for r in sheet_rows(workbook, "Phòng chống") if r["Agent id"] == "pc-a1"]
    days = (UNPROTECTED[1] - UNPROTECTED[0]).days  # 45
    assert pc["Days unprotected"] == days
    assert pc["Days with data"] == 365
    assert pc["Share of days protected"] == pytest.approx((365 - days) / 365)
    assert pc["Longest unprotected (days)"] == pytest.approx(days)
    assert pc["From"] == local(UNPROTECTED[0] + dt.timedelta(hours=9))
    findings = sheet_rows(workbook, "Phát hiện")
    assert any(
        f["Rule"] == "antivirus_unprotected_days" and "pc-a1" in f["Subject"] for f in findings
    )
    assert any(f["Rule"] == "firewall_enabled_share" and "pc-a1" in f["Subject"] for f in findings)


def test_a_silent_unit_says_no_data_and_a_gap_is_a_finding(workbook: Any) -> None:
    units = {r["Unit id"]: r for r in sheet_rows(workbook, "Đơn vị")}
    assert units[SITE_C]["Reports"] == 0
    assert units[SITE_C]["LAN share up"] == NO_DATA
    assert units[SITE_C]["Internet share up"] == NO_DATA
    assert units[SITE_B]["Longest silence (days)"] == pytest.approx(19.25)
    connectivity = [r for r in sheet_rows(workbook, "Kết nối") if r["Unit id"] == SITE_C]
    assert connectivity[0]["Share of time up"] == NO_DATA
    august = next(
        r for r in sheet_rows(workbook, "Kết nối")
        if r["Unit id"] == SITE_B and r["Month"] == "2025-08" and r["Network class"] == "LAN"
    )  # fmt: skip
    assert august["Share of time up"] == pytest.approx(1.0)  # no data is not "down" ...
    assert august["Coverage"] == pytest.approx(12 / 31, abs=0.01)  # ... and shows as coverage
    findings = {(f["Rule"], f["Unit"]): f for f in sheet_rows(workbook, "Phát hiện")}
    assert ("unit_silent_days", SITE_B) in findings
    assert findings[("unit_silent_days", SITE_C)]["Value"] == NO_DATA
    declarations = sheet_rows(workbook, "Kê khai")
    assert declarations[0]["Unit id"] == NO_DATA  # the empty sheet says so


def test_goals_are_measured_with_coverage_and_never_count_no_data(workbook: Any) -> None:
    goals = sheet_rows(workbook, "Mục tiêu")
    lan_commune = next(g for g in goals if g["Level"] == "commune" and "LAN" in g["Indicator"])
    assert lan_commune["Measured"] == pytest.approx(2 / 3)  # the silent commune is not up
    assert lan_commune["Coverage"] == pytest.approx(2 / 3)
    assert lan_commune["Status"] == "chưa đạt / missed"
    agency = next(g for g in goals if g["Level"] == "agency" and "LAN" in g["Indicator"])
    assert agency["Measured"] == NO_DATA and agency["Status"] == NO_DATA


# -- the files open where auditors open them -----------------------------------------------


def test_patch_state_of_each_computer_is_its_last_in_the_period(
    members: dict[str, bytes],
) -> None:
    import csv

    text = members["csv/firewall_patch.csv"].decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    (pc,) = [r for r in rows if "pc-a1" in r.values() and "demo/xa-an-binh" in r.values()]
    installed = next(v for k, v in pc.items() if k.endswith("Last update installed"))
    pending = next(v for k, v in pc.items() if k.endswith("Security updates pending"))
    source = next(v for k, v in pc.items() if k.endswith("Patch source"))
    assert installed.startswith("2025-12-") and pending == "1" and source == "windows-update"


def test_computers_per_official_is_a_count_not_a_share(members: dict[str, bytes]) -> None:
    goals = members["csv/goals.csv"].decode("utf-8-sig").splitlines()
    (row,) = [line for line in goals if "computers per official" in line]
    # 3 agents over 165 declared officials (units without officials are left out)
    assert ",1.00,2026,0.02," in row and "%" not in row.split(",2026,")[1].split(",")[0]


def test_csv_files_are_utf8_with_bom_and_rfc4180(members: dict[str, bytes]) -> None:
    import csv

    data = members["csv/rules.csv"]
    assert data.startswith(b"\xef\xbb\xbf")
    assert b"\r\n" in data
    rows = list(csv.reader(io.StringIO(data[3:].decode("utf-8"), newline="")))
    assert rows[0][0] == "Mã quy tắc / Rule id"
    assert any("," in cell for row in rows for cell in row)  # quoted, and read back whole


@pytest.mark.skipif(shutil.which("soffice") is None, reason="LibreOffice (soffice) not installed")
def test_the_workbook_converts_with_libreoffice(members: dict[str, bytes], tmp_path: Path) -> None:
    book = tmp_path / "evidence.xlsx"
    book.write_bytes(members["evidence.xlsx"])
    proc = subprocess.run(
        ["soffice", f"-env:UserInstallation=file://{tmp_path}/profile", "--headless",
         "--convert-to", "pdf", "--outdir", str(tmp_path / "out"), str(book)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    converted = tmp_path / "out" / "evidence.pdf"
    assert converted.stat().st_size > 1000, proc.stdout + proc.stderr
    text = subprocess.run(
        ["pdftotext", str(converted), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert "Mục tiêu / Goal" in text  # the goals sheet, Vietnamese intact


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils not installed")
def test_the_pdf_has_the_vietnamese_title_and_the_figures(
    members: dict[str, bytes], tmp_path: Path
) -> None:
    pdf = tmp_path / "evidence.pdf"
    pdf.write_bytes(members["evidence.pdf"])
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert TITLE in text
    assert "Nguyễn Văn An" in text and "Tỉnh Demo" in text
    assert "3209" in text  # reports in the period
    assert "Không được bảo vệ chống mã độc 45 ngày liên tục" in text
    subprocess.run(
        ["pdftoppm", "-png", "-r", "50", "-f", "1", "-l", "1", str(pdf), str(tmp_path / "page")],
        check=True,
        timeout=60,
    )
    assert (tmp_path / "page-1.png").read_bytes().startswith(b"\x89PNG")


# -- verification --------------------------------------------------------------------------


def test_verify_passes_on_a_fresh_bundle(bundle: Path, public_pem: Path) -> None:
    proc = run_cli("evidence", "verify", str(bundle), "--key", str(public_pem))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == "OK"
    assert "signature: valid, the key given" in proc.stdout


def test_an_auditor_verifies_with_sha256sum_and_openssl(
    members: dict[str, bytes], public_pem: Path, tmp_path: Path
) -> None:
    """The commands of docs/evidence.md, with Debian's tools only."""
    for name, data in members.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    shutil.copy(public_pem, tmp_path / "pub.pem")
    openssl = subprocess.run(
        ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin",
         "-in", "manifest.json", "-sigfile", "manifest.sig"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert openssl.returncode == 0 and "Signature Verified Successfully" in openssl.stdout
    sums = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path, capture_output=True, text=True
    )
    assert sums.returncode == 0, sums.stdout + sums.stderr
    listed = hashlib.sha256(members["SHA256SUMS"]).hexdigest()
    assert listed in members["manifest.json"].decode()  # SHA256SUMS itself is signed
    (tmp_path / "manifest.json").write_bytes(members["manifest.json"].replace(b"2025", b"2024", 1))
    forged = subprocess.run(
        ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin",
         "-in", "manifest.json", "-sigfile", "manifest.sig"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert forged.returncode != 0


def rewrite(bundle: Path, out: Path, change: dict[str, bytes | None]) -> Path:
    """A copy of ``bundle`` with members replaced (None removes, a new name adds)."""
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename in change:
                data = change.pop(info.filename)
                if data is not None:
                    dst.writestr(info.filename, data)
            else:
                dst.writestr(info.filename, src.read(info))
        for name, data in change.items():
            assert data is not None
            dst.writestr(name, data)
    return out


def flip(data: bytes, at: int = 200) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


@pytest.mark.parametrize(
    ("member", "action", "named"),
    [
        ("evidence.xlsx", "flip", "evidence.xlsx: changed"),
        ("evidence.pdf", "flip", "evidence.pdf: changed"),
        ("csv/outages.csv", "flip", "csv/outages.csv: changed"),
        ("SHA256SUMS", "flip", "SHA256SUMS: changed"),
        ("manifest.json", "flip", "manifest.json: changed or not signed by this key"),
        ("manifest.sig", "flip", "manifest.json: changed or not signed by this key"),
        ("csv/units.csv", "remove", "csv/units.csv: removed"),
        ("manifest.sig", "remove", "manifest.sig: removed"),
        ("csv/extra.csv", "add", "csv/extra.csv: added"),
    ],
)
def test_verify_names_a_changed_removed_or_added_member(
    bundle: Path,
    members: dict[str, bytes],
    public_pem: Path,
    tmp_path: Path,
    member: str,
    action: str,
    named: str,
) -> None:
    change: dict[str, bytes | None]
    if action == "flip":
        at = 100 if member == "manifest.json" else min(200, len(members[member]) - 1)
        if member == "manifest.sig":
            at = 10
        change = {member: flip(members[member], at)}
    elif action == "remove":
        change = {member: None}
    else:
        change = {member: b"a,b\r\n"}
    bad = rewrite(bundle, tmp_path / "bad.zip", change)
    proc = run_cli("evidence", "verify", str(bad), "--key", str(public_pem))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert named in proc.stdout.splitlines(), proc.stdout
    assert proc.stdout.splitlines()[-1] == "FAILED"


def test_a_bundle_signed_by_another_key_fails(bundle: Path, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from collector.evidence.bundle import public_pem as pem

    other = tmp_path / "other.pem"
    other.write_text(pem(Ed25519PrivateKey.generate().public_key()), encoding="ascii")
    proc = run_cli("evidence", "verify", str(bundle), "--key", str(other))
    assert proc.returncode == 1
    assert "signature: INVALID" in proc.stdout


# -- hostile input -------------------------------------------------------------------------


def hostile_zip(path: Path, entries: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_DEFLATED)
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("text", "not a zip file"),
        ("empty_zip", "no manifest.json: not a hatang evidence bundle"),
        ("not_json", "manifest.json cannot be read as JSON"),
        ("other_json", "is not a hatang evidence manifest"),
        ("traversal", "hostile member name '../../etc/passwd'"),
        ("absolute", "hostile member name '/etc/passwd'"),
        ("bomb", "expands"),
    ],
)
def test_verify_rejects_what_is_not_a_bundle_with_exit_2(
    tmp_path: Path, kind: str, message: str
) -> None:
    path = tmp_path / "x.zip"
    if kind == "text":
        path.write_text("PK? no, just text\n")
    elif kind == "empty_zip":
        hostile_zip(path, [("evidence.pdf", b"%PDF")])
    elif kind == "not_json":
        hostile_zip(path, [("manifest.json", b"{nope")])
    elif kind == "other_json":
        hostile_zip(path, [("manifest.json", b'{"format": "something else"}')])
    elif kind == "traversal":
        hostile_zip(path, [("../../etc/passwd", b"root:x:0:0"), ("manifest.json", b"{}")])
    elif kind == "absolute":
        hostile_zip(path, [("/etc/passwd", b"root:x:0:0"), ("manifest.json", b"{}")])
    else:
        hostile_zip(path, [("manifest.json", b"{}"), ("evidence.xlsx", bytes(64 << 20))])
    proc = run_cli("evidence", "verify", str(path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--period", "2025-Q5"], "--period: period '2025-Q5' is not"),
        (["--period", "last year"], "--period: period 'last year' is not"),
        (["--period", "2025", "--unit", "demo/xa-khong-co"], "--unit: unknown unit"),
    ],
)
def test_export_rejects_a_bad_period_or_unit_with_exit_2(
    collector_dir: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    config = str(collector_dir / "collector.yaml")
    proc = run_cli("evidence", "export", "--config", config, "--out", str(tmp_path), *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert not list(tmp_path.iterdir())


def test_a_unit_export_holds_the_unit_and_what_is_under_it_only(
    collector_dir: Path, tmp_path: Path
) -> None:
    proc = run_cli(
        "evidence", "export", "--config", str(collector_dir / "collector.yaml"),
        "--period", "2025-Q1", "--unit", SITE_A, "--out", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(proc.stdout.splitlines()[-1]) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        book = openpyxl.load_workbook(io.BytesIO(archive.read("evidence.xlsx")), read_only=True)
    assert manifest["unit"]["units"] == [SITE_A]
    assert {r["Unit id"] for r in sheet_rows(book, "Đơn vị")} == {SITE_A}
    months = {r["Month"] for r in sheet_rows(book, "Kết nối")}
    assert months == {"2025-01", "2025-02", "2025-03"}


# -- public key, report, compliance rules --------------------------------------------------


async def test_the_collector_serves_the_public_key_once_one_exists(
    make_client: MakeClient, tmp_path: Path
) -> None:
    config = collector_config(tmp_path)
    client = await make_client(config)
    missing = await client.get("/api/v1/evidence/public-key")
    assert missing.status == 404
    assert (await missing.json())["error"] == "no_evidence_key"
    from collector.evidence.bundle import load_or_create_key, public_key_info

    assert config.evidence.signing_key is not None
    key, created = load_or_create_key(Path(config.evidence.signing_key))
    assert created
    found = await client.get("/api/v1/evidence/public-key")
    assert found.status == 200
    assert await found.json() == public_key_info(key.public_key())


@pytest.mark.parametrize("fmt", ["xlsx", "pdf"])
def test_the_attainment_report_compares_with_the_previous_period(
    collector_dir: Path, tmp_path: Path, fmt: str
) -> None:
    period = "2025-04" if fmt == "xlsx" else "2025-Q2"
    proc = run_cli(
        "report", "--config", str(collector_dir / "collector.yaml"), "--period", period,
        "--format", fmt, "--out", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.splitlines()[-1])
    assert path.suffix == f".{fmt}" and path.is_file()
    if fmt == "xlsx":
        book = openpyxl.load_workbook(path, read_only=True)
        rows = sheet_rows(book, "Chỉ tiêu")
        internet = next(r for r in rows if r["Level"] == "commune" and "Internet" in r["Indicator"])
        # March had the outage (one commune at 90 %, below 95 %), April none: +33.3 points.
        assert internet["Previous period"] == pytest.approx(1 / 3)
        assert internet["This period"] == pytest.approx(2 / 3)
        assert internet["Change (points)"] == pytest.approx(33.3)
        furthest = sheet_rows(book, "Xa mục tiêu")
        assert any(r["Unit id"] == SITE_C and r["Share up"] == NO_DATA for r in furthest)
    else:
        text = subprocess.run(
            ["pdftotext", str(path), "-"], capture_output=True, text=True, check=True
        ).stdout
        assert "BÁO CÁO KẾT QUẢ THỰC HIỆN KẾ HOẠCH" in text
        assert "Quý 1 năm 2025" in text  # the period compared with


def test_shipped_compliance_rules_load_and_the_one_in_force_is_chosen() -> None:
    rule_sets = load_all()
    assert in_force(rule_sets, dt.date(2026, 6, 30)).data.framework == "vn-attt-2016"
    assert in_force(rule_sets, dt.date(2026, 7, 1)).data.framework == "vn-anm-2026"
    for rules in rule_sets:
        facts = {r.evidence.fact for r in rules.data.rules}
        assert {"antivirus_protected_share", "firewall_enabled_share", "unit_silent_days"} <= facts


GOOD_RULES = (REPO / "configs" / "compliance" / "vn-2016.yaml").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("framework:", "framwork:"), "vn.yaml: unknown key 'framwork' (did you mean"),
        (("share, threshold: 1.0}", "share, threshold: 95}"), "is a share, 0..1"),
        (("legal_basis: [nd-85-2016]", "legal_basis: [nd-99-2099]"),
         "vn.yaml: rules[6] (unit-reports).legal_basis: unknown reference 'nd-99-2099'"),
        (("fact: patch_age_days", "fact: patch_days"), "vn.yaml: rules[5].evidence.fact"),
        (("effective_from: 2016-07-01", "effective_from: soon"), "vn.yaml: effective_from"),
        (("version: 1", "version: 1\nversion: 2"), "vn.yaml: line"),
        (("    confirmed: false\n", "    confirmed: false\n    confirmd: true\n"),
         "vn.yaml: legal_basis[2]: unknown key 'confirmd'"),
    ],
)  # fmt: skip
def test_a_bad_compliance_file_is_named_with_its_key(
    tmp_path: Path, edit: tuple[str, str], message: str
) -> None:
    assert edit[0] in GOOD_RULES
    path = tmp_path / "vn.yaml"
    path.write_text(GOOD_RULES.replace(edit[0], edit[1], 1), encoding="utf-8")
    with pytest.raises(ComplianceError) as caught:
        load_rules(path)
    assert message in str(caught.value)


def test_export_with_a_broken_rules_directory_exits_2(collector_dir: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "bad.yaml").write_text("version: 1\nframework: [\n", encoding="utf-8")
    config = yaml.safe_load((collector_dir / "collector.yaml").read_text())
    config["store"]["url"] = f"sqlite:///{collector_dir}/collector.db"
    config["evidence"] = {"compliance": str(rules), "signing_key": str(tmp_path / "k.pem")}
    path = tmp_path / "collector.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    proc = run_cli("evidence", "export", "--config", str(path), "--period", "2025",
                   "--out", str(tmp_path / "out"))  # fmt: skip
    assert proc.returncode == 2
    assert "bad.yaml: line" in proc.stderr


def test_a_terminal_sees_progress_and_the_path_stays_alone_on_stdout(
    collector_dir: Path, tmp_path: Path
) -> None:
    import os
    import pty
    import sys

    master, slave = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "collector", "evidence", "export", "--config",
             str(collector_dir / "collector.yaml"), "--period", "2025-01", "--out", str(tmp_path)],
            stdout=subprocess.PIPE, stderr=slave, text=True, timeout=120, cwd=REPO,
        )  # fmt: skip
        os.close(slave)
        shown = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
    assert proc.returncode == 0
    assert b"[6/6]" in shown  # every unit of the demo province, on the terminal only
    assert proc.stdout.strip().endswith(".zip") and len(proc.stdout.splitlines()) == 1


def test_declarations_given_to_the_builders_are_listed_with_their_attachment() -> None:
    from collector.evidence.render import write_csv
    from collector.evidence.tables import Declaration, declarations_table

    row = Declaration(
        unit_id=SITE_A, unit_name="Xã An Bình", period="2025", key="security_regulation",
        value="Quyết định 12/QĐ-UBND ngày 05/01/2025", declared_by="Trần Thị Bình",
        declared_at=dt.datetime(2025, 1, 6, 9, tzinfo=TZ).timestamp(),
        attachment_name="quyet-dinh-12.pdf", attachment_sha256="ab" * 32,
    )  # fmt: skip
    text = write_csv(declarations_table([row]), TZ).decode("utf-8-sig")
    lines = text.splitlines()
    assert lines[0].startswith("Mã đơn vị / Unit id,")
    assert "Quyết định 12/QĐ-UBND ngày 05/01/2025" in lines[1]
    assert "2025-01-06 09:00" in lines[1] and "ab" * 32 in lines[1]


@pytest.mark.postgres
async def test_a_postgres_store_gives_the_same_evidence_as_sqlite(
    postgres_url: str, tmp_path: Path
) -> None:
    """Same history through each backend's ingest: every CSV of the bundle is equal."""
    from collector.evidence.bundle import verify
    from collector.evidence.export import export, inputs
    from collector.store.postgres import PostgresStore

    moment = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    tables: dict[str, dict[str, bytes]] = {}
    for name, url in (("sqlite", f"sqlite:///{tmp_path}/s.db"), ("postgres", postgres_url)):
        config = collector_config(tmp_path, targets=[str(TARGETS)], store={"url": url})
        store = (
            PostgresStore(postgres_url) if name == "postgres" else SQLiteStore(tmp_path / "s.db")
        )
        await store.open()
        try:
            await write_history(store)
            path = await export(
                config, store, inputs(config, "2025-H1", None), tmp_path / name, "test",
                now=moment,
            )  # fmt: skip
        finally:
            await store.close()
        assert verify(path).ok
        with zipfile.ZipFile(path) as archive:
            tables[name] = {n: archive.read(n) for n in archive.namelist() if n.startswith("csv/")}
    assert tables["sqlite"] == tables["postgres"]
    assert b"72.00" in tables["postgres"]["csv/outages.csv"]


@pytest.mark.parametrize("content", [b"not a key\n", b"-----BEGIN PRIVATE KEY-----\nAAAA\n"])
def test_a_damaged_signing_key_is_named_and_nothing_is_written(
    collector_dir: Path, tmp_path: Path, content: bytes
) -> None:
    key = tmp_path / "damaged.pem"
    key.write_bytes(content)
    config = yaml.safe_load((collector_dir / "collector.yaml").read_text())
    config["store"]["url"] = f"sqlite:///{collector_dir}/collector.db"
    config["evidence"] = {"signing_key": str(key)}
    path = tmp_path / "collector.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    out = tmp_path / "out"
    proc = run_cli("evidence", "export", "--config", str(path), "--period", "2025",
                   "--out", str(out))  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{key}: not an unencrypted PEM private key" in proc.stderr
    assert not out.exists()
    assert key.read_bytes() == content  # never replaced


async def test_declarations_and_attachments_reach_every_part_of_the_bundle(
    collector_dir: Path, tmp_path: Path
) -> None:
    """What a unit declared (stored by the declarations module, with its attached file)
    lands in the workbook, the CSV, the PDF and ``attachments/``."""
    from collector.config import load_config
    from collector.declarations import encode_value
    from collector.evidence import export as export_module
    from collector.evidence.bundle import verify
    from collector.period import parse_period
    from collector.store import NewDeclaration

    pdf_bytes = b"%PDF-1.4 quyet dinh"
    digest = hashlib.sha256(pdf_bytes).hexdigest()
    year = parse_period("2025")
    row = NewDeclaration(
        unit=SITE_A, period=year.name, period_start=year.start_ts, period_end=year.end_ts,
        key="security_regulation_number", value=encode_value("Quyết định 12/QĐ-UBND"),
        declared_by="Trần Thị Bình", source="form.xlsx", attachment_name="Quyết định 12.pdf",
        attachment_sha256=digest,
    )  # fmt: skip
    config = load_config(collector_dir / "collector.yaml")
    key = str(tmp_path / "k.pem")
    config = msgspec.structs.replace(
        config, evidence=msgspec.structs.replace(config.evidence, signing_key=key)
    )
    shutil.copy(collector_dir / "collector.db", tmp_path / "c.db")  # the module's store stays
    store = SQLiteStore(tmp_path / "c.db")
    await store.open()
    try:
        assert await store.declare([row], {digest: pdf_bytes}) == 1
        path = await export_module.export(
            config, store, export_module.inputs(config, "2025-01", SITE_A), tmp_path, "test"
        )
    finally:
        await store.close()
    assert verify(path).ok
    with zipfile.ZipFile(path) as archive:
        assert archive.read("attachments/Quyet_dinh_12.pdf") == pdf_bytes
        book = openpyxl.load_workbook(io.BytesIO(archive.read("evidence.xlsx")), read_only=True)
        (listed,) = sheet_rows(book, "Kê khai")
        assert listed["Value"] == "Quyết định 12/QĐ-UBND"
        assert listed["Attachment SHA-256"] == hashlib.sha256(pdf_bytes).hexdigest()
        assert "Quyết định 12/QĐ-UBND" in archive.read("csv/declarations.csv").decode("utf-8-sig")
        (tmp_path / "e.pdf").write_bytes(archive.read("evidence.pdf"))
    text = await asyncio.to_thread(
        subprocess.run,
        ["pdftotext", str(tmp_path / "e.pdf"), "-"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Quyết định 12/QĐ-UBND" in text.stdout


async def test_declared_officials_are_the_denominator_of_computers_per_official(
    collector_dir: Path, tmp_path: Path
) -> None:
    """As on /metrics: a unit's declared officials for the period replace the org file's
    22 (Xã An Bình) in the evidence's computers-per-official goal."""
    from collector.config import load_config
    from collector.declarations import encode_value
    from collector.evidence.export import evidence_of, inputs
    from collector.period import parse_period
    from collector.store import NewDeclaration

    config = load_config(collector_dir / "collector.yaml")
    given = inputs(config, "2025", None)
    year = parse_period("2025")
    shutil.copy(collector_dir / "collector.db", tmp_path / "c.db")
    store = SQLiteStore(tmp_path / "c.db")
    await store.open()
    try:
        now = dt.datetime(2026, 2, 1, tzinfo=dt.UTC).timestamp()

        async def denominator() -> float:
            ev = await evidence_of(config, store, given, now)
            (goal,) = [g for g in ev.goals if g.goal.indicator == "computers_per_official"]
            return goal.denominator

        before = await denominator()
        declared = NewDeclaration(
            unit=SITE_A, period=year.name, period_start=year.start_ts, period_end=year.end_ts,
            key="officials", value=encode_value(42), declared_by="Trần Thị Bình",
            source="form.xlsx", attachment_name=None, attachment_sha256=None,
        )  # fmt: skip
        assert await store.declare([declared], {}) == 1
        assert await denominator() == before - 22 + 42
    finally:
        await store.close()
