#!/usr/bin/env bash
# The main job: build, generate a demo city, start a gateway on embedded
# defaults, run a short simulated drill against it (steady group voice, floor
# contention, dispatch alerts with receipts, then a timed 1-3-8 drill whose
# report is exported as CSV), print the summaries, stop the gateway.
#
# --keep-running: then create a demo operator at a police station's
# command-room console, print the console's URL and the operator's name and
# password, and keep a living city going (terminal-sim's living-city
# scenario: members patrolling, talking, answering alerts, reporting) until
# Ctrl-C; then stop the gateway.
set -euo pipefail
cd "$(dirname "$0")/.."

keep_running=0
for arg in "$@"; do
  case $arg in
    --keep-running) keep_running=1 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "demo.sh: unknown argument $arg (only --keep-running)" >&2
      exit 2
      ;;
  esac
done

bash scripts/setup.sh

units=${DEMO_UNITS:-300}
groups=${DEMO_GROUPS:-40}
seconds=${DEMO_SECONDS:-15}
port=${DEMO_PORT:-47433}
http=${DEMO_HTTP:-127.0.0.1:47090}
dir=demo-data

echo "== building (release) =="
cargo build --release --bins --quiet
bin=${CARGO_TARGET_DIR:-target}/release

rm -rf "$dir"
mkdir -p "$dir"
echo "== generating a demo city of $units co-governance units =="
"$bin/terminal-sim" gen-city --units "$units" --out "$dir/city.toml"

echo "== starting the gateway on 127.0.0.1:$port =="
# With --keep-running, Ctrl-C is for the living city only: the gateway runs
# in a session of its own (it would stop on SIGINT too) and is stopped after.
detach=()
if [ "$keep_running" = 1 ] && command -v setsid >/dev/null 2>&1; then detach=(setsid); fi
RUST_LOG=${RUST_LOG:-info,quinn=warn} ${detach[@]+"${detach[@]}"} "$bin/ptt-gateway" serve \
  --listen "127.0.0.1:$port" --data-dir "$dir/gateway" --org "$dir/city.toml" \
  --http "$http" >"$dir/gateway.log" 2>&1 &
gw=$!
trap 'kill -TERM $gw 2>/dev/null || true; wait $gw 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  grep -q "gateway listening" "$dir/gateway.log" 2>/dev/null && break
  kill -0 $gw 2>/dev/null || { cat "$dir/gateway.log"; exit 1; }
  sleep 0.1
done

run() {
  local scenario=$1
  echo
  echo "== $scenario: $groups unit groups for $seconds s =="
  "$bin/terminal-sim" run --gateway "127.0.0.1:$port" --ca "$dir/gateway/cert.pem" \
    --org "$dir/city.toml" --scenario "$scenario" --duration "$seconds" --groups "$groups" \
    --gateway-pid $gw --report "$dir/$(basename "$scenario" .toml).json" "${@:2}"
}
run voice-steady --record-dir "$dir/recordings"
run floor-contention
run alert-subtree
run scripts/demo-drill.toml

echo
echo "== drill reports in the gateway's database (ptt-gateway drill-report) =="
"$bin/ptt-gateway" drill-report --data-dir "$dir/gateway" --list
drill=$("$bin/ptt-gateway" drill-report --data-dir "$dir/gateway" --list | awk 'NR==2 {print $1}')
"$bin/ptt-gateway" drill-report --data-dir "$dir/gateway" --org "$dir/city.toml" \
  --alert "$drill" --format csv --out "$dir/drill-$drill.csv"
echo "drill $drill exported to $dir/drill-$drill.csv"

echo
echo "== operations surface: http://$http (token in $dir/gateway/operator.token; docs/OPERATIONS.md) =="
python3 - "$http" "$dir/gateway/operator.token" <<'PY'
import json, sys, urllib.request
base, token_file = "http://" + sys.argv[1], sys.argv[2]
token = next(l.split()[1] for l in open(token_file) if l.startswith("admin "))
def get(path):
    req = urllib.request.Request(base + path, headers={"Authorization": "Bearer " + token})
    return urllib.request.urlopen(req, timeout=10).read().decode()
print("GET /readyz ->", get("/readyz"))
s = json.loads(get("/api/v1/status"))
c = s["counters"]
print(f"GET /api/v1/status -> uptime {s['uptime_s']} s, {s['sessions']} sessions, "
      f"voice in {c['voice_in']}, relayed {c['voice_delivered']}, floor grants {c['floor_granted']}, "
      f"relay p99 {s['relay_latency_us']['p99_us']} us")
metrics = get("/metrics").splitlines()
print("GET /metrics ->", len(metrics), "lines, e.g.:")
for line in metrics:
    if line.startswith(("ptt_voice_delivered_total", "ptt_floor_granted_total", "ptt_relay_latency_seconds_count")):
        print("  " + line)
PY

if [ "$keep_running" = 1 ]; then
  live_groups=${DEMO_LIVE_GROUPS:-$groups}
  # The operator sits at the command-room console of the police station of
  # the first unit the living city runs (the units go by id, so most of the
  # living ones are under it).
  read -r console console_name < <(python3 - "$dir/city.toml" <<'PY'
import sys, tomllib
org = tomllib.load(open(sys.argv[1], "rb"))
nodes = {n["id"]: n for n in org["node"]}
unit = min(n["id"] for n in org["node"] if n["kind"] == "unit")
station = nodes[unit]
while station["kind"] != "police_station":
    station = nodes[station["parent"]]
console = next(t for t in org["terminal"] if t["node"] == station["id"] and t["kind"] == "console")
print(console["id"], console["name"])
PY
  )
  password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(12))')
  echo
  echo "== demo operator at $console_name (terminal $console) =="
  printf '%s\n' "$password" | "$bin/ptt-gateway" operator add demo --terminal "$console" \
    --data-dir "$dir/gateway" --org "$dir/city.toml" --password-stdin
  echo
  echo "== the command-room console: http://$http/console/ =="
  echo "   operator: demo"
  echo "   password: $password"
  echo "   (a self-signed certificate: the page trusts it by its hash; Chromium-based browsers)"
  echo
  echo "== a living city: $live_groups unit groups patrolling, talking, answering; Ctrl-C to stop =="
  # Ctrl-C is for terminal-sim (it writes its report and ends): the script
  # goes on to stop the gateway.
  trap ':' INT
  "$bin/terminal-sim" run --gateway "127.0.0.1:$port" --ca "$dir/gateway/cert.pem" \
    --org "$dir/city.toml" --scenario scripts/demo-city.toml --duration 0 \
    --groups "$live_groups" --gateway-pid $gw --report "$dir/living-city.json" ||
    echo "living city ended with status $?"
  trap - INT
fi

echo
echo "== stopping the gateway (SIGTERM) =="
kill -TERM $gw
wait $gw
trap - EXIT
tail -n 3 "$dir/gateway.log"
echo "reports: $dir/*.json; what listeners heard: $dir/recordings/*.wav"
