#!/usr/bin/env bash
# The README's main command: a working hatang on this machine, over loopback only.
#
# Starts hatang-collector (embedded SQLite, the demo organisation configs/org.demo.yaml),
# creates an agent token for one demo commune, starts a small web server on 127.0.0.2
# that stands in for "the internet", and one hatang-agent reporting to the collector.
# Every check targets 127.0.0.0/8: nothing leaves this machine. Ctrl-C stops everything.
#
# Environment: HATANG_PORT (collector port, default 8080), HATANG_DEMO_DIR (state,
# default ./var/demo), HATANG_DEMO_SITE (default demo/xa-an-binh), HATANG_INTERVAL
# (agent check interval, default 15s).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

HATANG_EXTRAS=collector bash scripts/env.sh
PY="$ROOT/.venv/bin/python"
PORT=${HATANG_PORT:-8080}
WEB_PORT=$((PORT + 1))
STATE=${HATANG_DEMO_DIR:-$ROOT/var/demo}
SITE=${HATANG_DEMO_SITE:-demo/xa-an-binh}
INTERVAL=${HATANG_INTERVAL:-15s}
mkdir -p "$STATE/www"
STATE=$(cd "$STATE" && pwd)

# Children run in their own sessions: Ctrl-C reaches only this script, which then stops
# them in order (SIGTERM: the collector finishes queued writes, the agent keeps its spool).
pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping / đang dừng..."
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  exit 0
}
trap stop INT TERM EXIT

cat > "$STATE/collector.yaml" <<EOF
# Written by scripts/start.sh (demo). Every key: configs/collector.example.yaml
listen: {host: 127.0.0.1, port: $PORT}
store: {url: "sqlite:collector.db"}
org: $ROOT/configs/org.demo.yaml
targets: [$ROOT/configs/targets/thai-nguyen-2026.yaml]
window: {duration: 1h, up_ratio: 0.95}
metrics: {refresh_interval: 5s}
EOF

setsid "$PY" -m collector serve --config "$STATE/collector.yaml" >>"$STATE/collector.log" 2>&1 &
pids+=($!)
ready=""
for _ in $(seq 1 100); do
  if ! kill -0 "${pids[0]}" 2>/dev/null; then break; fi
  if "$PY" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$PORT/healthz', timeout=1)" 2>/dev/null; then
    ready=1
    break
  fi
  sleep 0.2
done
if [ -z "$ready" ]; then
  echo "hatang-collector did not start; its log ($STATE/collector.log):" >&2
  tail -n 20 "$STATE/collector.log" >&2
  exit 1
fi

if [ ! -s "$STATE/token" ]; then
  "$PY" -m collector token create --config "$STATE/collector.yaml" --site "$SITE" \
    --note "scripts/start.sh demo agent" | tail -n 1 > "$STATE/token.new"
  mv "$STATE/token.new" "$STATE/token"
  chmod 600 "$STATE/token"
fi

# "The internet" for the demo: a local web server on another loopback address.
echo "<h1>hatang demo: internet</h1>" > "$STATE/www/index.html"
setsid "$PY" -m http.server --bind 127.0.0.2 --directory "$STATE/www" "$WEB_PORT" \
  >>"$STATE/web.log" 2>&1 &
pids+=($!)

cat > "$STATE/agent.yaml" <<EOF
# Written by scripts/start.sh (demo). Every key: configs/agent.example.yaml
site: $SITE
role: host
interval: $INTERVAL
agent_id: demo-agent-1
collector: {url: "http://127.0.0.1:$PORT", token_file: $STATE/token}
spool: {path: $STATE/spool.db}
networks:
  lan:       {targets: [{kind: icmp, address: 127.0.0.1}]}
  wan:       {targets: [{kind: tcp, address: "127.0.0.1:$PORT"}]}
  dedicated: {targets: [{kind: tcp, address: "127.0.0.1:$PORT"}]}
  internet:  {targets: [{kind: http, address: "http://127.0.0.2:$WEB_PORT/"}]}
EOF

setsid "$PY" -m agent run --config "$STATE/agent.yaml" >>"$STATE/agent.log" 2>&1 &
pids+=($!)

cat <<EOF

hatang is running / hatang đang chạy:
  collector   http://127.0.0.1:$PORT   (log: $STATE/collector.log)
  metrics     http://127.0.0.1:$PORT/metrics      e.g. hatang_site_up, hatang_network_up
  health      http://127.0.0.1:$PORT/healthz
  API doc     http://127.0.0.1:$PORT/api/v1/openapi.yaml
  agent       site $SITE, every $INTERVAL   (log: $STATE/agent.log)
  tokens      $PY -m collector token list --config $STATE/collector.yaml

Press Ctrl-C to stop / Nhấn Ctrl-C để dừng.
EOF

# Stop everything as soon as one part exits, so a crash is not hidden.
while true; do
  for pid in "${pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "a hatang process ($pid) exited; see the logs in $STATE" >&2
      exit 1
    fi
  done
  sleep 1
done
