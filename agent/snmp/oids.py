"""OIDs the poller reads, numeric so no MIB files are loaded (names in comments)."""

from __future__ import annotations

from typing import Final

# SNMPv2-MIB system group (RFC 3418)
SYS_DESCR: Final = "1.3.6.1.2.1.1.1.0"  # sysDescr.0
SYS_OBJECT_ID: Final = "1.3.6.1.2.1.1.2.0"  # sysObjectID.0
SYS_UPTIME: Final = "1.3.6.1.2.1.1.3.0"  # sysUpTime.0, TimeTicks (1/100 s)
SYS_NAME: Final = "1.3.6.1.2.1.1.5.0"  # sysName.0

# IF-MIB ifTable (RFC 2863), index ifIndex
IF_DESCR: Final = "1.3.6.1.2.1.2.2.1.2"
IF_SPEED: Final = "1.3.6.1.2.1.2.2.1.5"  # Gauge32 bit/s, saturates at 4294967295
IF_PHYS_ADDRESS: Final = "1.3.6.1.2.1.2.2.1.6"
IF_ADMIN_STATUS: Final = "1.3.6.1.2.1.2.2.1.7"
IF_OPER_STATUS: Final = "1.3.6.1.2.1.2.2.1.8"
IF_IN_OCTETS: Final = "1.3.6.1.2.1.2.2.1.10"  # Counter32
IF_IN_ERRORS: Final = "1.3.6.1.2.1.2.2.1.14"
IF_OUT_OCTETS: Final = "1.3.6.1.2.1.2.2.1.16"  # Counter32
IF_OUT_ERRORS: Final = "1.3.6.1.2.1.2.2.1.20"

# IF-MIB ifXTable, index ifIndex
IF_NAME: Final = "1.3.6.1.2.1.31.1.1.1.1"
IF_HC_IN_OCTETS: Final = "1.3.6.1.2.1.31.1.1.1.6"  # Counter64
IF_HC_OUT_OCTETS: Final = "1.3.6.1.2.1.31.1.1.1.10"  # Counter64
IF_HIGH_SPEED: Final = "1.3.6.1.2.1.31.1.1.1.15"  # Gauge32 Mbit/s
IF_ALIAS: Final = "1.3.6.1.2.1.31.1.1.1.18"

IF_STATUS: Final = {
    1: "up",
    2: "down",
    3: "testing",
    4: "unknown",
    5: "dormant",
    6: "notPresent",
    7: "lowerLayerDown",
}

# IP-MIB ipNetToPhysicalTable (RFC 4293), index ifIndex.addrType.len.addr
IP_NET_TO_PHYSICAL_PHYS_ADDRESS: Final = "1.3.6.1.2.1.4.35.1.4"
IP_NET_TO_PHYSICAL_TYPE: Final = "1.3.6.1.2.1.4.35.1.6"  # 2 = invalid
IP_NET_TO_PHYSICAL_STATE: Final = "1.3.6.1.2.1.4.35.1.7"  # 5 invalid, 7 incomplete

# RFC1213-MIB / IP-MIB ipNetToMediaTable (deprecated, still the only one on many
# switches), index ifIndex.a.b.c.d
IP_NET_TO_MEDIA_PHYS_ADDRESS: Final = "1.3.6.1.2.1.4.22.1.2"
IP_NET_TO_MEDIA_TYPE: Final = "1.3.6.1.2.1.4.22.1.4"  # 2 = invalid

# BRIDGE-MIB dot1dTpFdbTable (RFC 4188), index MAC (6 sub-ids)
DOT1D_TP_FDB_PORT: Final = "1.3.6.1.2.1.17.4.3.1.2"
DOT1D_TP_FDB_STATUS: Final = "1.3.6.1.2.1.17.4.3.1.3"
# Q-BRIDGE-MIB dot1qTpFdbTable (RFC 4363), index dot1qFdbId.MAC
DOT1Q_TP_FDB_PORT: Final = "1.3.6.1.2.1.17.7.1.2.2.1.2"
DOT1Q_TP_FDB_STATUS: Final = "1.3.6.1.2.1.17.7.1.2.2.1.3"

FDB_LEARNED: Final = 3  # dot1dTpFdbStatus: other(1) invalid(2) learned(3) self(4) mgmt(5)
