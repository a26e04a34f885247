"""SNMP polling of the office switch/router (site probe only; imports pysnmp lazily)."""
