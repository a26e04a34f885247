#!/usr/bin/env bash
# Gỡ hatang-agent / Remove hatang-agent.
#
#   sudo ./uninstall.sh            # stops and removes the service and /opt/hatang
#   sudo ./uninstall.sh --purge    # also the config and credential, the spool, the logs
#                                  # and the user `hatang` (unsent reports are lost)
#
# --root DIR removes what `install.sh --root DIR` installed.
set -euo pipefail
ROOT=/
PURGE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT=$2; shift 2 ;;
    --purge) PURGE=1; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "Lỗi / Error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$ROOT" = / ] && [ "$(id -u)" != 0 ]; then
  echo "Lỗi / Error: chạy bằng quyền root / run as root: sudo $0" >&2
  exit 2
fi
ROOT=$(cd "$ROOT" && pwd)
R=${ROOT%/}
AGENT=$R/opt/hatang/bin/hatang-agent
if [ -x "$AGENT" ]; then
  if [ "$ROOT" = / ]; then "$AGENT" service uninstall; else "$AGENT" service uninstall --root "$ROOT"; fi
fi
rm -rf "$R/opt/hatang"
if [ -n "$PURGE" ]; then
  rm -rf "$R/etc/hatang" "$R/var/lib/hatang" "$R/var/log/hatang"
  if [ "$ROOT" = / ] && getent passwd hatang >/dev/null; then userdel hatang; fi
  echo "Đã gỡ hết / Removed everything, including the spool and the credential."
else
  echo "Đã gỡ chương trình / Program removed. Kept / giữ lại: $R/etc/hatang $R/var/lib/hatang $R/var/log/hatang (--purge removes them)"
fi
