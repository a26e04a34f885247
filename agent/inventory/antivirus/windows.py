"""Antivirus on Windows: Security Center, Microsoft Defender, then vendor services.

Sources, in order of authority:

1. ``root/SecurityCenter2`` ``AntiVirusProduct`` (client editions): every registered
   product with its ``productState``. Windows Server has no such namespace
   ("Invalid namespace", HRESULT 0x8004100e), which is where other inventory agents go
   blind; hatang falls through to the next sources.
2. ``Get-MpComputerStatus`` (or the ``MSFT_MpComputerStatus`` CIM class behind it):
   Defender's real-time protection, signature version, last update and engine.
3. Services and processes via psutil (``vendors.VENDORS``): BKAV, CMC, Kaspersky, ESET,
   Trend Micro, Symantec, McAfee, Sophos, Defender. It confirms Security Center entries
   and is the only source for third-party products on Windows Server.

``run_*`` functions run PowerShell; ``parse_*`` functions are pure and tested on
recorded output in ``tests/fixtures/windows/``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

from agent.inventory.antivirus.command import CommandResult, Runner, first_line, run_command
from agent.inventory.antivirus.policy import evaluate, product_state
from agent.inventory.antivirus.vendors import (
    ProcessInfo,
    ServiceInfo,
    VendorMatch,
    list_processes,
    list_windows_services,
    match_vendors,
)
from agent.inventory.settings import AntivirusConfig
from agent.report import AntivirusProduct, AntivirusStatus

POWERSHELL: Final = "powershell.exe"
# PowerShell writes to a pipe in the OEM code page unless told otherwise; progress
# records would otherwise leak into stderr as CLIXML.
_PRELUDE: Final = (
    "$ProgressPreference='SilentlyContinue';[Console]::OutputEncoding=[System.Text.Encoding]::UTF8;"
)
SECURITY_CENTER_SCRIPT: Final = (
    "Get-CimInstance -Namespace root/SecurityCenter2 -ClassName AntiVirusProduct"
    " -ErrorAction Stop | Select-Object displayName,instanceGuid,pathToSignedProductExe,"
    "pathToSignedReportingExe,productState,timestamp,PSComputerName | ConvertTo-Json -Depth 3"
)
_MP_FIELDS: Final = (
    "AMServiceEnabled,AntivirusEnabled,RealTimeProtectionEnabled,OnAccessProtectionEnabled,"
    "AntivirusSignatureVersion,AntivirusSignatureLastUpdated,AntivirusSignatureAge,"
    "AMEngineVersion,AMProductVersion,AMRunningMode,DefenderSignaturesOutOfDate"
)
DEFENDER_SCRIPT: Final = (
    f"Get-MpComputerStatus -ErrorAction Stop | Select-Object {_MP_FIELDS} | ConvertTo-Json -Depth 3"
)
DEFENDER_CIM_SCRIPT: Final = (
    "Get-CimInstance -Namespace root/Microsoft/Windows/Defender -ClassName"
    f" MSFT_MpComputerStatus -ErrorAction Stop | Select-Object {_MP_FIELDS}"
    " | ConvertTo-Json -Depth 3"
)


class ParseError(ValueError):
    """Tool output that is not what the tool documents."""


def powershell_args(script: str) -> list[str]:
    """The argument list that runs one PowerShell script (no shell, no profile)."""
    return [POWERSHELL, "-NoProfile", "-NonInteractive", "-Command", _PRELUDE + script]


# --- parsing helpers -----------------------------------------------------------------


def load_json_objects(text: str) -> list[dict[str, Any]]:
    """ConvertTo-Json output as a list of objects: one object, an array, or nothing."""
    text = text.lstrip("\ufeff").strip()
    if not text:
        return []  # ConvertTo-Json prints nothing for an empty pipeline
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0:
        raise ParseError(f"no JSON in output: {first_line(text, 120)!r}")
    try:
        data = json.loads(text[start:])
    except json.JSONDecodeError as exc:
        raise ParseError(f"invalid JSON at line {exc.lineno}: {exc.msg}") from None
    items = data if isinstance(data, list) else [data]
    return [item for item in items if isinstance(item, dict)]


def ps_field(obj: dict[str, Any], name: str) -> Any:
    """A property by name, ignoring case as PowerShell does; CIM wrappers are unwrapped."""
    wanted = name.lower()
    for key, value in obj.items():
        if key.lower() == wanted:
            return value
    # Unselected Get-CimInstance output nests values under CimInstanceProperties.
    props = obj.get("CimInstanceProperties")
    if isinstance(props, list):
        for prop in props:
            if isinstance(prop, dict) and str(prop.get("Name", "")).lower() == wanted:
                return prop.get("Value")
    return None


def ps_text(value: Any) -> str | None:
    """A non-empty stripped string, or None for null and blanks."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def ps_bool(value: Any) -> bool | None:
    """PowerShell booleans as JSON true/false, "True"/"False", localised words, 1/0."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return {1: True, 0: False}.get(int(value))
    text = (ps_text(value) or "").lower()
    if text in {"true", "yes", "on", "có", "bật", "đúng", "1"}:
        return True
    if text in {"false", "no", "off", "không", "tắt", "sai", "0"}:
        return False
    return None


def ps_int(value: Any) -> int | None:
    """An integer from a JSON number or a decimal/hex string; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    text = ps_text(value)
    if text is None:
        return None
    try:
        return int(text, 0) if text.lower().startswith("0x") else int(text)
    except ValueError:
        return None


_MS_DATE = re.compile(r"^/?Date\((-?\d+)([+-]\d{4})?\)/?$")


def parse_ps_datetime(value: Any) -> dt.datetime | None:
    """A date as PowerShell's ConvertTo-Json writes it, as aware UTC.

    Windows PowerShell 5.1 writes ``/Date(1700000000000)/`` (milliseconds since the
    epoch, UTC, sometimes with an offset that does not change the instant), or an object
    ``{"value": "/Date(..)/", "DateTime": "..."}`` for dates with extra notes; PowerShell 7
    writes ISO 8601; Security Center's ``timestamp`` is RFC 1123.
    """
    if isinstance(value, dict):
        return parse_ps_datetime(ps_field(value, "value") or ps_field(value, "DateTime"))
    text = ps_text(value)
    if text is None:
        return None
    if match := _MS_DATE.match(text.replace("\\/", "/")):
        millis = int(match.group(1))
        if millis <= 0:
            return None  # DateTime.MinValue: "never"
        return dt.datetime.fromtimestamp(millis / 1000, dt.UTC)
    iso = text[:-1] + "+00:00" if text.endswith("Z") else text
    # .NET writes 7 fractional digits; Python 3.11 accepts at most 6.
    iso = re.sub(r"(\.\d{6})\d+", r"\1", iso)
    try:
        parsed = dt.datetime.fromisoformat(iso)
    except ValueError:
        try:
            from email.utils import parsedate_to_datetime

            parsed = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
    if parsed.tzinfo is None:
        # A local-time string without offset: the agent runs on the same machine.
        parsed = parsed.astimezone()
    if parsed.year < 1980:
        return None
    return parsed.astimezone(dt.UTC)


# --- Security Center -----------------------------------------------------------------

ScanState = Literal["off", "on", "snoozed", "expired"]
_SCAN_STATES: Final[dict[int, ScanState]] = {0x0: "off", 0x1: "on", 0x2: "snoozed", 0x3: "expired"}


@dataclass(frozen=True, slots=True)
class ProductState:
    """Security Center's ``productState`` decoded.

    Layout (three bytes, as documented by Microsoft's WSC API and confirmed by the values
    Windows reports): bits 16-23 the security providers the product registered for
    (0x04 antivirus, 0x02 auto-update, 0x01 firewall, ...); bits 12-15 the scanner state
    (0x0 off, 0x1 on, 0x2 snoozed, 0x3 expired); bits 8-11 the owner (0x1 Microsoft);
    bits 4-7 the signature status (0x0 up to date, 0x1 out of date).
    """

    raw: int
    providers: int
    scanner: ScanState | None  # None: a value outside the documented ones
    microsoft: bool
    signatures_out_of_date: bool

    @property
    def enabled(self) -> bool | None:
        """Scanning on; an expired subscription still scans but no longer updates."""
        if self.scanner is None:
            return None
        return self.scanner in ("on", "expired")

    @property
    def up_to_date(self) -> bool:
        """Signatures current, as the product itself told Windows."""
        return not self.signatures_out_of_date and self.scanner != "expired"


def decode_product_state(value: int) -> ProductState:
    """Decode a raw ``productState`` (e.g. 397568 = Defender, on, up to date)."""
    return ProductState(
        raw=value,
        providers=(value >> 16) & 0xFF,
        scanner=_SCAN_STATES.get((value >> 12) & 0xF),
        microsoft=(value >> 8) & 0xF == 0x1,
        signatures_out_of_date=(value >> 4) & 0xF != 0,
    )


@dataclass(frozen=True, slots=True)
class SecurityCenterProduct:
    """One ``AntiVirusProduct`` instance."""

    name: str
    guid: str | None = None
    product_exe: str | None = None
    state: ProductState | None = None
    timestamp: dt.datetime | None = None  # when the product last changed its state


def parse_security_center(text: str) -> list[SecurityCenterProduct]:
    """Parse ``Get-CimInstance ... AntiVirusProduct | ConvertTo-Json`` output."""
    products = []
    for obj in load_json_objects(text):
        name = ps_text(ps_field(obj, "displayName"))
        if name is None:
            continue
        raw = ps_int(ps_field(obj, "productState"))
        products.append(
            SecurityCenterProduct(
                name=name[:256],
                guid=ps_text(ps_field(obj, "instanceGuid")),
                product_exe=ps_text(ps_field(obj, "pathToSignedProductExe")),
                state=decode_product_state(raw) if raw is not None and raw >= 0 else None,
                timestamp=parse_ps_datetime(ps_field(obj, "timestamp")),
            )
        )
    return products


_INVALID_NAMESPACE = re.compile(
    r"0x8004100e|invalid namespace|invalidnamespace|không gian tên không hợp lệ",
    re.IGNORECASE,
)


def is_invalid_namespace(text: str) -> bool:
    """True for the error Windows Server gives for ``root/SecurityCenter2``, in any language."""
    return bool(_INVALID_NAMESPACE.search(text))


# --- Defender ------------------------------------------------------------------------

_NEVER_AGE_DAYS: Final = 65535  # Defender's "no signatures ever installed" (also 2**32-1)


@dataclass(frozen=True, slots=True)
class DefenderStatus:
    """The parts of ``MSFT_MpComputerStatus`` the policy needs."""

    service_enabled: bool | None = None
    antivirus_enabled: bool | None = None
    real_time_protection: bool | None = None
    signature_version: str | None = None
    signature_updated_at: dt.datetime | None = None
    signature_age_days: int | None = None
    engine_version: str | None = None
    product_version: str | None = None
    running_mode: str | None = None  # Normal, Passive Mode, SxS Passive Mode, EDR Block Mode
    signatures_out_of_date: bool | None = None

    @property
    def passive(self) -> bool:
        """Defender stands aside for a third-party product and does not scan in real time."""
        return "passive" in (self.running_mode or "").lower()

    def signature_age_seconds(self, now: dt.datetime) -> float | None:
        """Age from the update time when known, else from Defender's whole-day count."""
        if self.signature_updated_at is not None:
            return max(0.0, (now - self.signature_updated_at).total_seconds())
        if self.signature_age_days is not None and 0 <= self.signature_age_days < _NEVER_AGE_DAYS:
            return self.signature_age_days * 86400.0
        return None


def parse_mp_computer_status(text: str) -> DefenderStatus | None:
    """Parse ``Get-MpComputerStatus | ConvertTo-Json`` output; None when it is empty."""
    objects = load_json_objects(text)
    if not objects:
        return None
    obj = objects[0]
    return DefenderStatus(
        service_enabled=ps_bool(ps_field(obj, "AMServiceEnabled")),
        antivirus_enabled=ps_bool(ps_field(obj, "AntivirusEnabled")),
        real_time_protection=ps_bool(ps_field(obj, "RealTimeProtectionEnabled")),
        signature_version=ps_text(ps_field(obj, "AntivirusSignatureVersion")),
        signature_updated_at=parse_ps_datetime(ps_field(obj, "AntivirusSignatureLastUpdated")),
        signature_age_days=ps_int(ps_field(obj, "AntivirusSignatureAge")),
        engine_version=ps_text(ps_field(obj, "AMEngineVersion")),
        product_version=ps_text(ps_field(obj, "AMProductVersion")),
        running_mode=ps_text(ps_field(obj, "AMRunningMode")),
        signatures_out_of_date=ps_bool(ps_field(obj, "DefenderSignaturesOutOfDate")),
    )


_DEFENDER_NOT_RUNNING = re.compile(r"0x800106ba", re.IGNORECASE)


# --- runners -------------------------------------------------------------------------


def run_security_center(runner: Runner, timeout: float) -> CommandResult:
    """Query Security Center's antivirus products."""
    return runner(powershell_args(SECURITY_CENTER_SCRIPT), timeout)


def run_defender(runner: Runner, timeout: float) -> tuple[CommandResult, CommandResult | None]:
    """Query Defender's status; the CIM class is tried when the cmdlet is unusable."""
    first = runner(powershell_args(DEFENDER_SCRIPT), timeout)
    if first.ok or (first.error and first.error.startswith("timed out")):
        return first, None
    return first, runner(powershell_args(DEFENDER_CIM_SCRIPT), timeout)


# --- assembling the status -----------------------------------------------------------

_DEFENDER_NAME: Final = "Microsoft Defender Antivirus"


def _is_defender(name: str) -> bool:
    lowered = name.lower()
    return "defender" in lowered and ("windows" in lowered or "microsoft" in lowered)


@dataclass(slots=True)
class _Context:
    max_age: float
    now: dt.datetime
    matches: list[VendorMatch]
    used: set[int]

    def claim(self, name: str) -> VendorMatch | None:
        """The service/process match of the product called ``name``, used at most once."""
        lowered = name.lower()
        for i, match in enumerate(self.matches):
            keywords = match.vendor.display_keywords
            if i not in self.used and any(k in lowered for k in keywords):
                self.used.add(i)
                return match
        return None


def _finish(
    product: AntivirusProduct, match: VendorMatch | None, ctx: _Context
) -> AntivirusProduct:
    notes = [product.detail] if product.detail else []
    running = product.running
    vendor = product.vendor
    if match is not None:
        running = match.running
        vendor = vendor or match.vendor.vendor
        notes.append(match.evidence())
    state = product_state(
        enabled=product.enabled,
        up_to_date=product.up_to_date,
        signature_age_seconds=product.signature_age_seconds,
        max_signature_age_seconds=ctx.max_age,
        real_time_protection=product.real_time_protection,
    )
    detail = "; ".join(n for n in notes if n)[:1024] or None
    return AntivirusProduct(
        name=product.name,
        source=product.source,
        state=state,
        vendor=vendor,
        enabled=product.enabled,
        up_to_date=product.up_to_date,
        real_time_protection=product.real_time_protection,
        signature_age_seconds=product.signature_age_seconds,
        signature_version=product.signature_version,
        engine_version=product.engine_version,
        product_state=product.product_state,
        signature_updated_at=product.signature_updated_at,
        running=running,
        detail=detail,
    )


def _defender_fields(mp: DefenderStatus, now: dt.datetime) -> dict[str, Any]:
    rtp = mp.real_time_protection
    if mp.passive:
        rtp = False
    return {
        "real_time_protection": rtp,
        "signature_age_seconds": mp.signature_age_seconds(now),
        "signature_version": mp.signature_version,
        "engine_version": mp.engine_version,
        "signature_updated_at": mp.signature_updated_at,
    }


def _from_security_center(
    sc: SecurityCenterProduct, mp: DefenderStatus | None, ctx: _Context
) -> AntivirusProduct:
    state = sc.state
    notes = []
    if state is not None:
        notes.append(f"Security Center: {state.scanner or 'unknown state'}")
        if state.signatures_out_of_date:
            notes.append("signatures out of date")
    fields: dict[str, Any] = {}
    source = "securitycenter2"
    enabled = state.enabled if state else None
    if mp is not None and _is_defender(sc.name):
        fields = _defender_fields(mp, ctx.now)
        source = "securitycenter2+defender"
        if mp.antivirus_enabled is False:
            enabled = False
        if mp.passive:
            notes.append(f"Defender {mp.running_mode}")
    product = AntivirusProduct(
        name=sc.name,
        source=source,
        state="unknown",
        vendor="Microsoft" if state is not None and state.microsoft else None,
        enabled=enabled,
        up_to_date=(state.up_to_date if state else None),
        product_state=state.raw if state else None,
        detail="; ".join(notes) or None,
        **fields,
    )
    return _finish(product, ctx.claim(sc.name), ctx)


def _from_defender(mp: DefenderStatus, source: str, ctx: _Context) -> AntivirusProduct:
    enabled = mp.antivirus_enabled
    if mp.service_enabled is False:
        enabled = False
    up_to_date = None if mp.signatures_out_of_date is None else not mp.signatures_out_of_date
    product = AntivirusProduct(
        name=_DEFENDER_NAME,
        source=source,
        state="unknown",
        vendor="Microsoft",
        enabled=enabled,
        up_to_date=up_to_date,
        detail=f"Defender {mp.running_mode}" if mp.running_mode else None,
        **_defender_fields(mp, ctx.now),
    )
    return _finish(product, ctx.claim(_DEFENDER_NAME), ctx)


def _from_services(match: VendorMatch, ctx: _Context) -> AntivirusProduct:
    product = AntivirusProduct(
        name=match.vendor.product,
        source="service" if match.services else "process",
        state="unknown",
        vendor=match.vendor.vendor,
        enabled=match.running,
        detail="no signature information from this source",
    )
    return _finish(product, match, ctx)


def detect(
    config: AntivirusConfig,
    *,
    runner: Runner = run_command,
    services: Callable[[], Sequence[ServiceInfo]] = list_windows_services,
    processes: Callable[[], Sequence[ProcessInfo]] = list_processes,
    now: dt.datetime | None = None,
) -> AntivirusStatus:
    """Detect the antivirus products of this Windows computer and judge its one state."""
    timeout = float(config.command_timeout)
    now = now or dt.datetime.now(dt.UTC)
    sources: list[str] = []
    warnings: list[str] = []

    sc_result = run_security_center(runner, timeout)
    sc_products: list[SecurityCenterProduct] = []
    sc_answered = sc_missing = False
    if sc_result.ok:
        try:
            sc_products = parse_security_center(sc_result.stdout)
            sc_answered = True
            sources.append("securitycenter2")
        except ParseError as exc:
            warnings.append(f"securitycenter2: {exc}")
    elif is_invalid_namespace(sc_result.stdout + "\n" + sc_result.stderr):
        sc_missing = True
        warnings.append("securitycenter2: not available on this edition (Windows Server)")
    else:
        warnings.append(f"securitycenter2: {sc_result.describe()}")

    mp: DefenderStatus | None = None
    mp_source = "defender"
    defender_stopped = False
    for i, result in enumerate(r for r in run_defender(runner, timeout) if r is not None):
        if not result.ok:
            text = result.stdout + "\n" + result.stderr
            defender_stopped = defender_stopped or bool(_DEFENDER_NOT_RUNNING.search(text))
            warnings.append(f"defender: {result.describe()}")
            continue
        try:
            mp = parse_mp_computer_status(result.stdout)
        except ParseError as exc:
            warnings.append(f"defender: {exc}")
            continue
        if mp is not None:
            mp_source = "defender" if i == 0 else "defender-cim"
            sources.append(mp_source)
            break

    services_ok = True
    found_services: Sequence[ServiceInfo] = ()
    found_processes: Sequence[ProcessInfo] = ()
    try:
        found_services = services()
        found_processes = processes()
        sources.append("services")
    except Exception as exc:  # psutil raises OS-specific errors; none may stop detection
        services_ok = False
        warnings.append(f"services: {type(exc).__name__}: {exc}"[:300])

    ctx = _Context(
        float(config.max_signature_age),
        now,
        match_vendors("windows", found_services, found_processes),
        set(),
    )
    products = [_from_security_center(p, mp, ctx) for p in sc_products]
    if not any(_is_defender(p.name) for p in sc_products):
        # Defender not registered in Security Center (Windows Server, or a third-party
        # product took over): its own status still says whether it scans.
        if mp is not None:
            products.append(_from_defender(mp, mp_source, ctx))
        elif defender_stopped:
            stopped = DefenderStatus(service_enabled=False, antivirus_enabled=False)
            products.append(
                replace(
                    _from_defender(stopped, "defender", ctx),
                    detail="Defender service is not running (0x800106ba)",
                )
            )
    for i, match in enumerate(ctx.matches):
        if i not in ctx.used:
            ctx.used.add(i)
            products.append(_from_services(match, ctx))

    answered = sc_answered or (sc_missing and (mp is not None or services_ok))
    return evaluate(
        products,
        max_signature_age_seconds=float(config.max_signature_age),
        sources=sources,
        warnings=warnings,
        detection_failed=not answered,
    )
