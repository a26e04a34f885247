#!/usr/bin/env bash
# Shared set-up for the README's two commands: a virtualenv in .venv with hatang installed.
# Safe to run again; installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "hatang needs Python >= 3.11 (found $("$PY" --version 2>&1))" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv 2>/dev/null; then
    # Debian splits venv out of python3; install it when we may.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      "$PY" scripts/aptwait.py --timeout 600  # another apt/dpkg may hold the locks
      apt=(apt-get -q -o DPkg::Lock::Timeout=600)
      "${apt[@]}" update && DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y python3-venv
      rm -rf .venv && "$PY" -m venv .venv
    else
      echo "cannot create .venv: install python3-venv" >&2
      exit 2
    fi
  fi
fi
extras=${HATANG_EXTRAS:-}
stamp=.venv/.hatang-installed${extras:+-$extras}
fresh() { [ -f "$1" ] && [ ! pyproject.toml -nt "$1" ]; }
# The test extra holds every runtime extra: a test venv serves scripts/start.sh as it is.
in_test=1
for extra in ${extras//,/ }; do
  case $extra in collector | site-probe | postgres | test) ;; *) in_test="" ;; esac
done
if [ -n "$in_test" ] && fresh .venv/.hatang-installed-test; then
  stamp=.venv/.hatang-installed-test
fi
if ! fresh "$stamp"; then
  echo "installing hatang into .venv (first run takes a minute)..."
  log=.venv/install.log
  if ! { .venv/bin/python -m pip install -q --upgrade pip &&
         .venv/bin/python -m pip install -q -e ".${extras:+[$extras]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "pip install failed (log above, also in $log)" >&2
    exit 1
  fi
  touch "$stamp"
fi
