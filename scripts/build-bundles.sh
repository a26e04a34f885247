#!/usr/bin/env bash
# Offline install bundles of hatang-agent for a USB stick: one for Windows x64, one for
# Linux x86_64. Built here with `pip download` for the target platform from the package
# registry (the only network used) and hatang's own wheel (`pip wheel --no-deps .`).
#
#   bash scripts/build-bundles.sh [--out DIR]      # default DIR: ./dist/bundles
#
# Writes DIR/hatang-agent-<version>-windows-x64/ (+ .zip) and
# DIR/hatang-agent-<version>-linux-x86_64/ (+ .tar.gz), each with wheels/ for Python 3.11
# and 3.12 (Linux also 3.13; host role and the site-probe set), install/uninstall scripts, a
# README (Vietnamese and English) and SHA256SUMS. Downloads go through pip's cache, so a
# second build is fast. Guide: docs/install.md (English), docs/cai-dat.md (Vietnamese).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/dist/bundles
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --out=*) OUT=${1#--out=}; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "build-bundles.sh: unknown option $1 (expected --out DIR)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# HATANG_PYTHON: an interpreter that has hatang importable and pip (the tests pass
# theirs); otherwise .venv, created by scripts/env.sh.
if [ -n "${HATANG_PYTHON:-}" ]; then
  PY=$HATANG_PYTHON
else
  bash scripts/env.sh
  PY="$ROOT/.venv/bin/python"
fi
VERSION=$("$PY" -c 'import agent; print(agent.__version__)')
# Windows: Python 3.11 and 3.12; Linux also 3.13 (Debian 13's python3).
WINDOWS_PYTHONS=(3.11 3.12)
LINUX_PYTHONS=(3.11 3.12 3.13)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "building the hatang wheel..."
"$PY" -m pip wheel -q --no-deps --wheel-dir "$work/self" "$ROOT" >"$work/wheel.log" 2>&1 ||
  { cat "$work/wheel.log" >&2; exit 1; }
WHEEL=$(ls "$work"/self/hatang-"$VERSION"-*.whl)

# download PLATFORM-TAGS... : every wheel hatang[site-probe] needs on those platforms.
# pip evaluates environment markers for this machine, not the target, so dependencies
# behind a Windows marker (pywin32) are named explicitly; tests/test_bundles.py checks
# every marker for the target against the bundle.
download() {
  local dest=$1 extra=$2 versions=$3; shift 3
  local platforms=()
  for p in "$@"; do platforms+=(--platform "$p"); done
  for v in $versions; do
    "$PY" -m pip download -q --only-binary=:all: "${platforms[@]}" --python-version "$v" \
      --implementation cp --dest "$dest" "$WHEEL[site-probe]" $extra \
      >"$work/download.log" 2>&1 || { cat "$work/download.log" >&2; exit 1; }
  done
}

bundle() {
  local name=$1 kind=$2
  local dir="$OUT/$name"
  rm -rf "$dir"
  mkdir -p "$dir/wheels"
  cp "$WHEEL" "$dir/wheels/"
  cp scripts/bundle/"$kind"/* "$dir/"
  mkdir -p "$dir/docs"
  cp docs/install.md docs/cai-dat.md "$dir/docs/"
  sed -i "s/@VERSION@/$VERSION/g" "$dir"/README*.txt
  echo "$dir"
}

echo "downloading Windows x64 wheels (Python ${WINDOWS_PYTHONS[*]})..."
win=$(bundle "hatang-agent-$VERSION-windows-x64" windows)
download "$win/wheels" "pywin32" "${WINDOWS_PYTHONS[*]}" win_amd64
# Windows PowerShell 5.1 reads a script without a BOM in the ANSI code page (cp1258 on a
# Vietnamese Windows), which garbles the Vietnamese messages: scripts and README get a
# UTF-8 BOM, and every text file CRLF line ends for Notepad.
for f in "$win"/*.ps1 "$win"/*.cmd "$win"/*.txt "$win"/docs/*.md; do sed -i 's/$/\r/' "$f"; done
for f in "$win"/*.ps1 "$win"/*.txt; do sed -i '1s/^/\xef\xbb\xbf/' "$f"; done

echo "downloading Linux x86_64 wheels (Python ${LINUX_PYTHONS[*]})..."
lin=$(bundle "hatang-agent-$VERSION-linux-x86_64" linux)
download "$lin/wheels" "" "${LINUX_PYTHONS[*]}" \
  manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64
chmod 755 "$lin"/*.sh

for dir in "$win" "$lin"; do
  (cd "$dir" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort |
    xargs -d '\n' sha256sum > SHA256SUMS)
done
"$PY" - "$win" "$lin" <<'EOF'
import os, sys, tarfile, zipfile
win, lin = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(win + ".zip", "w", zipfile.ZIP_DEFLATED) as z:
    for base, _, files in os.walk(win):
        for f in sorted(files):
            path = os.path.join(base, f)
            z.write(path, os.path.relpath(path, os.path.dirname(win)))
with tarfile.open(lin + ".tar.gz", "w:gz") as t:
    t.add(lin, os.path.basename(lin))
EOF

echo
echo "bundles / gói cài đặt:"
for f in "$win" "$win.zip" "$lin" "$lin.tar.gz"; do
  printf '  %-8s %s\n' "$(du -sh "$f" | cut -f1)" "$f"
done
echo "$OUT"
