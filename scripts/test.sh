#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine (as root): installs the Debian
# packages the tests drive for real (snmpd, promtool, ClamAV, PostgreSQL, ...),
# the Python test dependencies, then runs pytest. Extra arguments go to pytest,
# e.g. `bash scripts/test.sh -m "not slow"` for a quick local run.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the real-parts tests use; installed only when missing.
packages=(iproute2 iputils-ping snmpd snmp prometheus postgresql clamav clamav-daemon nftables iptables dnsmasq-base openssl faketime curl libreoffice-calc poppler-utils systemd)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  # Another apt/dpkg may be running (an unattended upgrade, another install): wait for
  # it, bounded, instead of failing at once; apt-get's own lock timeout covers the rest.
  python3 scripts/aptwait.py --timeout 600
  apt=(apt-get -q -o DPkg::Lock::Timeout=600)
  missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    python3 scripts/aptwait.py --timeout 600  # apt-get update takes the lists lock at once
    "${apt[@]}" update >/dev/null
    # Packages must not start their services on install: tests start what they need.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d
  fi
fi

HATANG_EXTRAS=test bash scripts/env.sh
export PATH="$PWD/.venv/bin:$PATH"
.venv/bin/ruff check agent collector tests bench scripts
.venv/bin/ruff format --check --quiet agent collector tests bench scripts
.venv/bin/mypy
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
