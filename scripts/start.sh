#!/usr/bin/env bash
# The README's main command: a working hatang on this machine, over loopback only.
#
# Starts hatang-collector (embedded SQLite, the demo organisation configs/org.demo.yaml),
# creates an agent token for one demo commune, starts a small web server on 127.0.0.2
# that stands in for "the internet", and one hatang-agent reporting to the collector.
# Every check targets 127.0.0.0/8: nothing leaves this machine.
#
# Stopping: Ctrl-C, or SIGTERM to this script (`kill PID`, also when it was started in
# the background); both stop every part and exit 0. Exit 1 when a part fails to start
# or exits on its own (its log is shown, with a hint when the port is taken).
#
# Environment: HATANG_PORT (collector port, default 8080; the demo web server uses the
# next one), HATANG_DEMO_DIR (state, default ./var/demo), HATANG_DEMO_SITE (default
# demo/xa-an-binh), HATANG_INTERVAL (agent check interval, default 15s).
set -euo pipefail

# A shell started in the background ignores SIGINT, and bash cannot trap a signal
# ignored at entry: run again with SIGINT restored so that Ctrl-C / kill -INT work.
if [ "$(trap -p INT)" = "trap -- '' SIGINT" ] && [ -z "${HATANG_START_SIGINT:-}" ]; then
  HATANG_START_SIGINT=restored exec env --default-signal=INT bash "$0" "$@"
fi

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

# Children run in their own sessions: a signal reaches only this script, which then stops
# them in order (SIGTERM: the collector finishes queued writes, the agent keeps its spool).
pids=()
stop() {
  local code=$1
  trap - INT TERM EXIT
  if [ ${#pids[@]} -gt 0 ]; then
    echo
    echo "stopping / đang dừng..."
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    # The collector drains within its 10 s shutdown timeout; whatever is left after 20 s
    # is killed, so that stopping never hangs.
    for _ in $(seq 1 200); do
      alive=""
      for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
      [ -z "$alive" ] && break
      sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  fi
  exit "$code"
}
# A requested stop exits 0; any other exit keeps its status (set -e failures included).
trap 'stop 0' INT TERM
trap 'stop $?' EXIT

# Each run starts fresh logs (the previous run's stay in *.log.1), so what is shown
# below is this run's only.
for name in collector agent web; do
  if [ -f "$STATE/$name.log" ]; then mv -f "$STATE/$name.log" "$STATE/$name.log.1"; fi
done

# Whether the part started last answers the Python check $1 within 20 s (not if it exits).
answers() {
  local pid=${pids[-1]}
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || return 1
    "$PY" -c "$1" 2>/dev/null && return 0
    sleep 0.2
  done
  return 1
}

# Explain a part that could not start, from its own log; exit 1.
fail() {
  local name=$1 port=$2
  echo "hatang: $name did not start; its log ($STATE/$name.log):" >&2
  tail -n 20 "$STATE/$name.log" >&2
  if grep -qi "address already in use" "$STATE/$name.log"; then
    local free
    free=$("$PY" - <<'PY'
import socket
for port in range(18080, 19000, 2):
    try:
        for host, p in (("127.0.0.1", port), ("127.0.0.2", port + 1)):
            with socket.socket() as s:
                s.bind((host, p))
    except OSError:
        continue
    print(port)
    break
PY
)
    echo >&2
    echo "hatang: port $port is taken (another program, or hatang already running)." >&2
    echo "        Cổng $port đang bị chiếm. Try / thử: HATANG_PORT=${free:-18080} bash scripts/start.sh" >&2
  fi
  exit 1
}

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
answers "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/healthz', timeout=1)" \
  || fail collector "$PORT"

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
answers "import socket; socket.create_connection(('127.0.0.2', $WEB_PORT), 1).close()" \
  || fail web "$WEB_PORT"

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

Press Ctrl-C (or send SIGTERM to $$) to stop / Nhấn Ctrl-C để dừng.
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
