"""Whether the antivirus is centrally managed: its management agent present and in contact.

The management agents hatang knows are data (``management.yaml`` beside this module,
read with the bounded YAML reader). A product counts as managed when a management agent
of its vendor is present (a service or process, an enrolment file, or an onboarding
registry value) and, where the agent records its last contact with the console, that
contact is no older than ``antivirus.max_console_age``; where it does not, a running
management service stands for contact. A product whose vendor has an entry but no agent
is found is unmanaged; a product whose vendor has no entry is unknown (``None``): its
management is not observable. ClamAV has no console and is unmanaged unless the agent's
``antivirus.clamav_managed`` says the province manages it.

``run_registry`` runs PowerShell; ``parse_*`` and ``assess`` are pure and tested on
recorded output.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from agent.configerror import ConfigError
from agent.inventory.antivirus.command import Runner
from agent.inventory.antivirus.vendors import Platform, ProcessInfo, ServiceInfo, matches_any
from agent.report import AntivirusStatus
from agent.yamlfile import read_yaml

DATA: Final = Path(__file__).with_name("management.yaml")
Means = Literal["onboarded", "last_contact"]
_FILETIME_EPOCH: Final = dt.datetime(1601, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class RegistryValue:
    key: str  # under HKLM
    value: str
    means: Means


@dataclass(frozen=True, slots=True)
class ManagementAgent:
    """One management agent and what reveals it."""

    name: str
    vendor: str
    platforms: tuple[Platform, ...]
    services: tuple[str, ...] = ()
    processes: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    registry: tuple[RegistryValue, ...] = ()


def _strings(entry: dict[str, Any], key: str, at: str, name: str) -> tuple[str, ...]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(name, f"{at}.{key}", "must be a list of names")
    return tuple(value)


def parse_agents(data: Any, name: str = "management.yaml") -> tuple[ManagementAgent, ...]:
    """Validate the management data; errors name the entry and key."""
    if not isinstance(data, dict) or not isinstance(data.get("agents"), list):
        raise ConfigError(name, "agents", "expected a list of management agents")
    agents = []
    known = {"name", "vendor", "platforms", "services", "processes", "files", "registry"}
    for i, entry in enumerate(data["agents"]):
        at = f"agents[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(name, at, "expected a mapping")
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ConfigError(name, f"{at}.{unknown[0]}", "unknown key")
        for key in ("name", "vendor"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise ConfigError(name, f"{at}.{key}", "missing")
        platforms = _strings(entry, "platforms", at, name)
        if not platforms or any(p not in ("windows", "linux") for p in platforms):
            raise ConfigError(name, f"{at}.platforms", "must list windows and/or linux")
        registry = []
        for j, raw in enumerate(entry.get("registry", [])):
            where = f"{at}.registry[{j}]"
            if not isinstance(raw, dict) or raw.get("means") not in ("onboarded", "last_contact"):
                raise ConfigError(name, f"{where}.means", "must be onboarded or last_contact")
            if not isinstance(raw.get("key"), str) or not isinstance(raw.get("value"), str):
                raise ConfigError(name, where, "key and value are required")
            registry.append(RegistryValue(raw["key"], raw["value"], raw["means"]))
        agents.append(
            ManagementAgent(
                name=entry["name"],
                vendor=entry["vendor"],
                platforms=platforms,  # type: ignore[arg-type]
                services=_strings(entry, "services", at, name),
                processes=_strings(entry, "processes", at, name),
                files=_strings(entry, "files", at, name),
                registry=tuple(registry),
            )
        )
    return tuple(agents)


@cache
def management_agents() -> tuple[ManagementAgent, ...]:
    """The shipped management data (read once per process)."""
    return parse_agents(read_yaml(DATA, empty_hint="expected agents:"), DATA.name)


# --- Windows registry ----------------------------------------------------------------


def registry_script(values: Sequence[RegistryValue]) -> str:
    """PowerShell printing each value as {Key, Value, Data} JSON (Data null when absent)."""
    items = ",".join(
        "@{k='HKLM:\\" + v.key.replace("'", "''") + "';v='" + v.value.replace("'", "''") + "'}"
        for v in values
    )
    return (
        f"$o=@();foreach($i in @({items})){{$p=Get-ItemProperty -Path $i.k -Name $i.v"
        " -ErrorAction SilentlyContinue;$d=$null;if($p){$d=$p.($i.v)};"
        "$o+=[pscustomobject]@{Key=$i.k.Substring(6);Value=$i.v;Data=$d}};"
        "ConvertTo-Json -InputObject $o -Depth 2"
    )


def filetime(value: Any) -> dt.datetime | None:
    """A Windows FILETIME (100 ns since 1601, as a REG_QWORD) as aware UTC."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    try:
        return _FILETIME_EPOCH + dt.timedelta(microseconds=value // 10)
    except OverflowError:
        return None


def parse_registry(text: str) -> dict[tuple[str, str], Any]:
    """The script's output as {(key lowercased, value lowercased): data}."""
    from agent.inventory.antivirus.windows import load_json_objects, ps_field

    found = {}
    for obj in load_json_objects(text):
        key, value = ps_field(obj, "Key"), ps_field(obj, "Value")
        if isinstance(key, str) and isinstance(value, str):
            found[(key.lower().lstrip("\\"), value.lower())] = ps_field(obj, "Data")
    return found


def run_registry(runner: Runner, timeout: float, agents: Sequence[ManagementAgent]) -> str | None:
    """Read every registry value the data names; None when PowerShell failed."""
    from agent.inventory.antivirus.windows import powershell_args

    values = [v for a in agents for v in a.registry]
    if not values:
        return ""
    result = runner(powershell_args(registry_script(values)), timeout)
    return result.stdout if result.ok else None


# --- the decision ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Observed:
    """One management agent's state on this computer."""

    agent: ManagementAgent
    present: bool
    managed: bool
    last_contact: dt.datetime | None = None


def observe(
    agent: ManagementAgent,
    *,
    services: Sequence[ServiceInfo],
    processes: Sequence[ProcessInfo],
    registry: dict[tuple[str, str], Any],
    file_exists: Any = os.path.exists,
    now: dt.datetime,
    max_age: float,
) -> Observed:
    """Whether ``agent`` is present and in contact with its console."""
    service = [s for s in services if matches_any(s.name, agent.services)]
    process = [p for p in processes if matches_any(p.name, agent.processes)]
    running = bool(process) or any(s.status == "running" for s in service)
    onboarded = None
    contact = None
    for value in agent.registry:
        data = registry.get((value.key.lower(), value.value.lower()))
        if value.means == "onboarded" and data is not None:
            onboarded = bool(data) and data not in (0, "0")
        elif value.means == "last_contact":
            contact = filetime(data)
    enrolled = any(file_exists(f) for f in agent.files)
    present = bool(service or process) or bool(onboarded) or enrolled
    if not present:
        return Observed(agent, False, False)
    if contact is not None:
        managed = (now - contact).total_seconds() <= max_age
    elif onboarded is not None or enrolled:
        managed = bool(onboarded) or enrolled
    else:
        managed = running
    return Observed(agent, True, managed, contact)


def assess(
    status: AntivirusStatus,
    observed: Sequence[Observed],
    *,
    managed_vendors: frozenset[str],
    clamav_managed: bool = False,
) -> AntivirusStatus:
    """The status with each product's and the computer's management facts filled in."""
    if status.state == "unknown" and not status.products:
        return status  # detection failed: whether it is managed is not known either
    products = []
    for product in status.products:
        mine = [o for o in observed if o.present and o.agent.vendor == (product.vendor or "")]
        best = max(mine, key=lambda o: (o.managed, o.last_contact or _FILETIME_EPOCH), default=None)
        managed: bool | None
        if best is not None:
            managed = best.managed
        elif product.source == "clamav":
            managed = clamav_managed
        elif (product.vendor or "") in managed_vendors:
            managed = False  # the vendor's management agent is known and absent
        else:
            managed = None
        products.append(
            msgspec.structs.replace(
                product,
                managed=managed,
                management_agent=best.agent.name if best is not None else None,
                last_console_contact_at=best.last_contact if best is not None else None,
            )
        )
    flags = [p.managed for p in products]
    computer: bool | None
    if any(f is True for f in flags):
        computer = True
    elif not products or any(f is False for f in flags):
        computer = False  # no product at all is not centrally managed anti-malware
    else:
        computer = None
    contacts = [
        p.last_console_contact_at for p in products if p.managed and p.last_console_contact_at
    ]
    return msgspec.structs.replace(
        status,
        products=products,
        managed=computer,
        last_console_contact_at=max(contacts, default=None),
    )


def annotate(
    status: AntivirusStatus,
    platform: Platform,
    *,
    max_age: float,
    clamav_managed: bool,
    runner: Runner,
    timeout: float,
    services: Sequence[ServiceInfo],
    processes: Sequence[ProcessInfo],
    now: dt.datetime | None = None,
    agents: Sequence[ManagementAgent] | None = None,
) -> AntivirusStatus:
    """Observe this platform's management agents and fill in ``status``'s management facts."""
    now = now or dt.datetime.now(dt.UTC)
    chosen = [a for a in (agents or management_agents()) if platform in a.platforms]
    registry: dict[tuple[str, str], Any] = {}
    warnings = list(status.warnings)
    if platform == "windows":
        text = run_registry(runner, timeout, chosen)
        if text is None:
            warnings.append("management: registry could not be read")
        elif text:
            registry = parse_registry(text)
    observed = [
        observe(a, services=services, processes=processes, registry=registry, now=now,
                max_age=max_age)
        for a in chosen
    ]  # fmt: skip
    vendors = frozenset(a.vendor for a in chosen)
    result = assess(status, observed, managed_vendors=vendors, clamav_managed=clamav_managed)
    return msgspec.structs.replace(result, warnings=warnings[:16])
