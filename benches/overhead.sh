#!/usr/bin/env bash
# Instructions per request with request metrics and tracing (10% sampling) on vs off, counted by
# callgrind: deterministic, unlike req/s on a shared 2-core machine.
# Usage: benches/overhead.sh [REQUESTS]   (default 2000; BIN=path measures that binary instead of a fresh release build)
#   MODE=hit (default): keep-alive cache hits on one stored object.
#   MODE=pass: pass-through of `no-store` responses, a unique URL per request (the e2e
#     pass-unique scenario, sequentially on one connection): cache miss, coalescing leader,
#     breaker, upstream client, and the body streamed straight through.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
MODE=${MODE:-hit}
case $MODE in hit | pass) ;; *) echo "MODE must be hit or pass" >&2; exit 2 ;; esac
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
[ -n "${BIN:-}" ] || cargo build --release --quiet
BIN=${BIN:-$PWD/target/release/seawall}
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # KEEP=DIR keeps the callgrind profiles for callgrind_annotate.
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP"; cp "$tmp"/cg.* "$KEEP"/ 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1]);s.close()'; }
wait_ok() { for _ in $(seq 1 600); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; echo "timeout waiting for $1" >&2; return 1; }

ORIGIN=$(port)
"$BIN" demo --latency 0ms --listen 127.0.0.1:"$(port)" --admin-listen 127.0.0.1:"$(port)" --origin 127.0.0.1:"$ORIGIN" >/dev/null 2>&1 &
pids+=($!)
wait_ok "http://127.0.0.1:$ORIGIN/hits"
DEAD=$(port)   # a collector that is not there: export fails in the background, never in requests

measure() { # mode metrics tracing
  local mode=$1 metrics=$2 tracing=$3 p a
  p=$(port); a=$(port)
  cat > "$tmp/$mode.toml" <<TOML
[server]
listen = "127.0.0.1:$p"
admin_listen = "127.0.0.1:$a"
worker_threads = 1
[log]
level = "warn"
[telemetry]
metrics = $metrics
enabled = $tracing
otlp_endpoint = "http://127.0.0.1:$DEAD"
sampling_ratio = 0.1
[[upstreams]]
name = "demo"
endpoints = ["http://127.0.0.1:$ORIGIN"]
[[routes]]
upstream = "demo"
TOML
  valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.$mode" "$BIN" run --config "$tmp/$mode.toml" >"$tmp/$mode.log" 2>&1 &
  local vg=$!
  pids+=($vg)
  wait_ok "http://127.0.0.1:$a/readyz"
  if [ "$MODE" = hit ]; then
    curl -fs -o /dev/null "http://127.0.0.1:$p/cacheable"     # store it
  fi
  # Warm-up (also opens the pooled upstream connection), then the measured requests.
  python3 - "$p" 50 "$MODE" warm <<'PY'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
for i in range(int(sys.argv[2])):
    path = "/cacheable" if sys.argv[3] == "hit" else f"/uncacheable?u={sys.argv[4]}-{i}"
    c.request("GET", path); r = c.getresponse(); r.read()
    assert r.status == 200, r.status
    assert r.getheader("x-cache") == ("HIT" if sys.argv[3] == "hit" else "MISS"), r.getheader("x-cache")
PY
  callgrind_control -z "$vg" >/dev/null
  python3 - "$p" "$N" "$MODE" run <<'PY'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
for i in range(int(sys.argv[2])):
    path = "/cacheable" if sys.argv[3] == "hit" else f"/uncacheable?u={sys.argv[4]}-{i}"
    c.request("GET", path); r = c.getresponse(); r.read()
PY
  callgrind_control -d "$vg" >/dev/null
  sleep 1
  local ir
  ir=$(for f in "$tmp"/cg."$mode"*; do grep -h '^summary:' "$f" 2>/dev/null | awk '{print $2}'; done | sort -n | tail -1)
  kill "$vg" 2>/dev/null || true
  wait "$vg" 2>/dev/null || true
  echo "$ir"
}

off=$(measure off false false)
on=$(measure on true true)
python3 - "$off" "$on" "$N" "$MODE" <<'PY'
import sys
off, on, n, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
what = {"hit": ("keep-alive cache hits (1 KiB-ish body)", "hit"),
        "pass": ("keep-alive pass-through requests (no-store, unique URLs)", "request")}[mode]
print(f"requests per mode: {n} {what[0]}, 1 worker thread")
print(f"metrics+tracing off: {off/n:,.0f} instructions per {what[1]}")
print(f"metrics+tracing on (10% sampling): {on/n:,.0f} instructions per {what[1]}")
print(f"overhead: {100*(on-off)/off:+.1f}%")
PY
