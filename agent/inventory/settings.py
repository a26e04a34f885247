"""The settings of inventory, antivirus/firewall posture and patches (config sections).

Apart from ``agent.config`` so that the daemon's inventory child
(``agent.inventory.child``) reads them without importing the probes and the YAML
reader; ``agent.config`` re-exports them.
"""

from __future__ import annotations

from agent.units import Duration
from agent.units import Section as _Section


class InventoryConfig(_Section, frozen=True):
    enabled: bool = True
    interval: Duration = Duration(3600.0)


class AntivirusConfig(_Section, frozen=True):
    """Antivirus and firewall posture (see docs/security-posture.md)."""

    enabled: bool = True
    interval: Duration = Duration(900.0)
    max_signature_age: Duration = Duration(7 * 86400.0)  # older signatures are "outdated"
    command_timeout: Duration = Duration(30.0)  # per command (PowerShell, nft, clamd, ...)
    clamav_config: str = "/etc/clamav/clamd.conf"  # Linux: where DatabaseDirectory is read
    clamav_database_dir: str | None = None  # Linux: overrides clamd.conf's DatabaseDirectory
    # A management agent that last reached its console longer ago is "not managed".
    max_console_age: Duration = Duration(7 * 86400.0)
    # ClamAV has no management console; a province that manages it centrally (its own
    # configuration management pushes clamd.conf and watches freshclam) says so here.
    clamav_managed: bool = False

    def __post_init__(self) -> None:
        if self.command_timeout <= 0:
            raise ValueError("command_timeout: must be more than 0s")
        if self.max_signature_age <= 0:
            raise ValueError("max_signature_age: must be more than 0s")
        if self.max_console_age <= 0:
            raise ValueError("max_console_age: must be more than 0s")


class PatchesConfig(_Section, frozen=True):
    """Patch currency (docs/security-posture.md): slow commands on a sparse schedule."""

    enabled: bool = True
    interval: Duration = Duration(6 * 3600.0)
    # Per command (apt-get -s, dnf, PowerShell): apt-get took 2 s here, and 3 min once while
    # another apt run had just changed the package cache; every 6 h, so be generous.
    command_timeout: Duration = Duration(300.0)

    def __post_init__(self) -> None:
        if self.interval < 600:
            raise ValueError("interval: at least 10m (the package managers are slow)")
        if not 0 < self.command_timeout <= 1800:
            raise ValueError("command_timeout: must be between 0s and 30m")
