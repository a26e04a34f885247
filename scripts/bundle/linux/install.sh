#!/usr/bin/env bash
# Cài hatang-agent từ gói ngoại tuyến này / Install hatang-agent from this offline bundle.
#
#   sudo ./install.sh                                   # asks for the collector URL and code
#   sudo ./install.sh --collector URL --code CODE [--role host|site-probe] [--ca-file F]
#   sudo ./install.sh --config FILE                     # an agent config written beforehand
#
# Creates a venv in /opt/hatang from wheels/ (no network), the system user `hatang`,
# /etc/hatang (0750, config and credential), /var/lib/hatang (spool), /var/log/hatang,
# enrolls the agent (`hatang-agent enroll`), shows `hatang-agent check`, then installs and
# starts the systemd service. Run again to upgrade: the config and spool are kept.
#
# --root DIR installs into DIR instead of / (tests, images): no user is created, nothing
# is started, and systemd only links the unit (`systemctl --root`).
# Other options: --python PY (default python3; 3.11 to 3.13), --no-check, --no-service.
set -euo pipefail
BUNDLE=$(cd "$(dirname "$0")" && pwd)
ROOT=/
PYTHON=${PYTHON:-python3}
ROLE=""
COLLECTOR=""
CODE=""
CA_FILE=""
CONFIG_IN=""
CHECK=1
SERVICE=1

say() { printf '%s\n' "$*"; }
die() { printf 'Lỗi / Error: %s\n' "$1" >&2; exit "${2:-1}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT=$2; shift 2 ;;
    --python) PYTHON=$2; shift 2 ;;
    --role) ROLE=$2; shift 2 ;;
    --collector) COLLECTOR=$2; shift 2 ;;
    --code) CODE=$2; shift 2 ;;
    --ca-file) CA_FILE=$2; shift 2 ;;
    --config) CONFIG_IN=$2; shift 2 ;;
    --no-check) CHECK=""; shift ;;
    --no-service) SERVICE=""; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" 2 ;;
  esac
done
case "$ROLE" in ""|host|site-probe) ;; *) die "--role must be host or site-probe, not $ROLE" 2 ;; esac
if [ -n "$CONFIG_IN" ] && [ -n "$CODE$COLLECTOR" ]; then
  die "give either --config or --collector/--code, not both" 2
fi
if [ "$ROOT" = / ] && [ "$(id -u)" != 0 ]; then
  die "chạy bằng quyền root / run as root: sudo $0 $*" 2
fi
mkdir -p "$ROOT"
ROOT=$(cd "$ROOT" && pwd)
R=${ROOT%/}  # prefix for paths: "" on the real system

if ! command -v "$PYTHON" >/dev/null; then
  die "không thấy Python / Python not found ($PYTHON): install python3 (3.11 to 3.13) and python3-venv" 2
fi
if ! "$PYTHON" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] <= (3, 13)))'; then
  die "cần Python 3.11 đến 3.13 / needs Python 3.11 to 3.13 (found $("$PYTHON" --version 2>&1)); use --python" 2
fi

PREFIX=$R/opt/hatang
CONF_DIR=$R/etc/hatang
CONFIG=/etc/hatang/agent.yaml
AGENT=$PREFIX/bin/hatang-agent

say "1/5 Cài chương trình / Installing the program into $PREFIX ..."
if [ ! -x "$PREFIX/bin/python" ]; then
  "$PYTHON" -m venv "$PREFIX" ||
    die "cannot create a venv: install python3-venv (apt-get install python3-venv)"
fi
pip_install() {
  "$PREFIX/bin/python" -m pip install -q --no-index --find-links "$BUNDLE/wheels" --upgrade "$1" ||
    die "pip could not install $1 from $BUNDLE/wheels (is the bundle complete? check SHA256SUMS)"
}
pip_install hatang

say "2/5 Người dùng và thư mục / User and directories ..."
if [ "$ROOT" = / ]; then
  if ! getent passwd hatang >/dev/null; then
    useradd --system --user-group --home-dir /var/lib/hatang --no-create-home \
      --shell /usr/sbin/nologin --comment "hatang agent" hatang
  fi
fi
install -d -m 0750 "$CONF_DIR" "$R/var/lib/hatang" "$R/var/log/hatang"

say "3/5 Cấu hình / Configuration ($CONFIG) ..."
if [ -n "$CONFIG_IN" ]; then
  install -m 0640 "$CONFIG_IN" "$R$CONFIG"
elif [ -n "$CODE$COLLECTOR" ] || [ ! -f "$R$CONFIG" ]; then
  if [ -z "$COLLECTOR" ]; then
    [ -t 0 ] || die "no --collector given and no terminal to ask" 2
    read -r -p "Địa chỉ máy chủ tỉnh / Collector URL (vd. https://10.10.0.10:8443): " COLLECTOR
  fi
  if [ -z "$CODE" ]; then
    [ -t 0 ] || die "no --code given and no terminal to ask" 2
    read -r -p "Mã đăng ký / Enrollment code (XXXX-XXXX-XXXX-XXXX): " CODE
  fi
  enroll=("$AGENT" enroll --config "$R$CONFIG" --collector "$COLLECTOR" --code "$CODE" --role "${ROLE:-host}")
  if [ -n "$CA_FILE" ]; then enroll+=(--ca-file "$CA_FILE"); fi
  set +e
  "${enroll[@]}"
  rc=$?
  set -e
  case $rc in
    0) ;;
    1) die "máy chủ từ chối mã đăng ký / the collector refused the code (wrong, used up or expired): ask the provincial IT centre for a new one" 1 ;;
    *) die "enrollment failed (exit $rc): check the collector URL and the options above" "$rc" ;;
  esac
else
  say "   giữ cấu hình cũ / keeping the existing configuration"
fi
# The site probe (ARP discovery, SNMP) needs its extra wheels: the role comes from the
# config, whichever way it was written.
role=$("$PREFIX/bin/python" - "$R$CONFIG" <<'PY'
import sys
from agent.config import ConfigError, load_config
try:
    print(load_config(sys.argv[1]).role)
except ConfigError as exc:
    sys.exit(f"Lỗi cấu hình / Configuration error: {exc}")
PY
) || exit 2
if [ "$role" = site-probe ]; then pip_install "hatang[site-probe]"; fi
if [ "$ROOT" = / ]; then
  # The service user reads its config and credential; nobody else does.
  chown -R root:hatang "$CONF_DIR"
  find "$CONF_DIR" -type f -exec chmod 0640 {} +
  chown -R hatang:hatang /var/lib/hatang /var/log/hatang
fi

if [ -n "$CHECK" ]; then
  say "4/5 Kiểm tra / Checking (hatang-agent check) ..."
  set +e
  if [ "$ROOT" = / ] && command -v runuser >/dev/null; then
    runuser -u hatang -- "$AGENT" check --config "$CONFIG"
  else
    "$AGENT" check --config "$R$CONFIG"
  fi
  rc=$?
  set -e
  case $rc in
    0) say "   mọi mạng đều thông / every network is up" ;;
    1) say "   có mạng chưa thông (xem trên) / some network is down (see above): docs/install.md lists each reason and its fix" ;;
    *) die "the configuration is not valid (message above)" 2 ;;
  esac
fi

if [ -n "$SERVICE" ]; then
  say "5/5 Dịch vụ / Service (systemd) ..."
  service=("$AGENT" service install --config "$CONFIG")
  if [ "$ROOT" != / ]; then service+=(--root "$ROOT"); fi
  "${service[@]}"
fi
say "Xong / Done. Trạng thái / status: $AGENT service status"
