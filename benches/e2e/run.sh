#!/usr/bin/env bash
# benches/e2e/run.sh: end-to-end load benchmark of Seawall next to nginx (proxy_cache) and
# Varnish, each in front of the same origin, plus a "ceiling" (the origin nginx serving the
# same bytes directly, started on the proxies' CPU set). Everything runs on 127.0.0.1.
#
# Usage:  benches/e2e/run.sh            (from anywhere; as root on Debian for the installs)
#
# Sections (SECTIONS, default "hit pass burst memory purge"):
#   hit     wrk on a cached 1 KiB and 64 KiB object: req/s, p50/p99, CPU us/request
#   pass    wrk on no-store URLs: a unique URL per request, and ONE URL hammered by CONNS
#   burst   BURST_N clients send the same cold GET at one instant; the origin sleeps
#           BURST_DELAY_MS: how many requests reached the origin, client latency
#   memory  fresh proxy, MEM_OBJECTS distinct MEM_SIZE-byte objects: resident memory
#   purge   fresh proxy, PURGE_OBJECTS tagged objects under /p/: time of a purge by prefix
#           and by tag (Seawall admin API, Varnish `varnishadm ban`, nginx: n/a)
#
# Settings (environment, defaults in brackets):
#   DURATION [10] s per wrk run     ROUNDS [3] interleaved rounds (median reported)
#   CONNS [64]  THREADS [1] (wrk -t/-c)   WARMUP [2] s of unmeasured wrk per hit target
#   PIN [0]     1: proxy (and ceiling) on CPU 1, wrk + origins on CPU 0, Seawall
#               worker_threads=1, nginx worker_processes 1
#   BURST_N [200]  BURST_DELAY_MS [500]  MEM_OBJECTS [10000]  MEM_SIZE [4096]
#   PURGE_OBJECTS [100000]  FILL_CONC [32] (connections of the fill client)
#   TARGETS ["seawall nginx varnish"]  SECTIONS [see above]
#   BASE_PORT [27100] (ports BASE..BASE+31 on 127.0.0.1 must be free)
#   INSTALL [1] apt-get install missing tools   BUILD [1] cargo build --release
#   SEAWALL_BIN [target/release/seawall]   KEEP_WORK [0] keep the tmpfs work dir
#   SW_THREADS [PIN=1: 1, PIN=0: 0 = one per CPU] Seawall's worker_threads
#
# Output: benches/e2e/results/<stamp>.md (printed at the end) and benches/e2e/results/<stamp>/
# (results.jsonl = every measurement, wrk outputs, logs, rendered configs).
# Stops exactly the processes it started (by PID / their session), on success and failure.
set -euo pipefail
set -f # no globbing: URLs contain '?'

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

# ------------------------------------------------------------------------------ settings
KNOBS="DURATION ROUNDS CONNS THREADS WARMUP PIN BURST_N BURST_DELAY_MS MEM_OBJECTS MEM_SIZE
PURGE_OBJECTS FILL_CONC TARGETS SECTIONS BASE_PORT INSTALL BUILD SEAWALL_BIN KEEP_WORK SW_THREADS"
CMDLINE=""
for k in $KNOBS; do
  if [ -n "${!k+x}" ]; then CMDLINE+="$k=$(printf '%q' "${!k}") "; fi
done
CMDLINE+="benches/e2e/run.sh"
[ $# -gt 0 ] && CMDLINE+=" $(printf '%q ' "$@")"
case "${1:-}" in -h | --help) sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d'; exit 0 ;; esac

: "${DURATION:=10}" "${ROUNDS:=3}" "${CONNS:=64}" "${THREADS:=1}" "${WARMUP:=2}" "${PIN:=0}"
: "${BURST_N:=200}" "${BURST_DELAY_MS:=500}" "${MEM_OBJECTS:=10000}" "${MEM_SIZE:=4096}"
: "${PURGE_OBJECTS:=100000}" "${FILL_CONC:=32}"
: "${TARGETS:=seawall nginx varnish}" "${SECTIONS:=hit pass burst memory purge}"
: "${BASE_PORT:=27100}" "${INSTALL:=1}" "${BUILD:=1}" "${KEEP_WORK:=0}"
: "${SEAWALL_BIN:=$REPO/target/release/seawall}"

ORIGIN_PORT=$BASE_PORT
SLOW_PORT=$((BASE_PORT + 1))
CEIL_PORT=$((BASE_PORT + 2))
SEAWALL_PORT=$((BASE_PORT + 10))
SEAWALL_ADMIN=$((BASE_PORT + 11))
NGINX_PORT=$((BASE_PORT + 20))
VARNISH_PORT=$((BASE_PORT + 30))
VARNISH_ADMIN=$((BASE_PORT + 31))
ORIGIN=127.0.0.1:$ORIGIN_PORT
CLK_TCK=$(getconf CLK_TCK)
NCPU_ALL=$(nproc)

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() { log "FATAL: $*"; exit 1; }
has_section() { [[ " $SECTIONS " == *" $1 "* ]]; }
has_target() { [[ " $TARGETS " == *" $1 "* ]]; }

for v in DURATION ROUNDS CONNS THREADS WARMUP BURST_N BURST_DELAY_MS MEM_OBJECTS MEM_SIZE PURGE_OBJECTS FILL_CONC BASE_PORT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
[ "$PIN" = 0 ] || [ "$PIN" = 1 ] || die "PIN must be 0 or 1"
[[ ${SW_THREADS:-0} =~ ^[0-9]+$ ]] || die "SW_THREADS must be a non-negative integer"
for t in $TARGETS; do
  case $t in seawall | nginx | varnish) ;; *) die "unknown target '$t' (seawall nginx varnish)" ;; esac
done

# ------------------------------------------------------------------------------ install
need_cmds="nginx:nginx varnishd:varnish varnishadm:varnish wrk:wrk python3:python3 curl:curl
taskset:util-linux setsid:util-linux ss:iproute2 ps:procps"
missing=""
for pair in $need_cmds; do
  c=${pair%%:*} p=${pair##*:}
  command -v "$c" >/dev/null 2>&1 || [ -x "/usr/sbin/$c" ] || missing+=" $p"
done
missing=$(tr ' ' '\n' <<<"$missing" | sort -u | xargs)
if [ -n "$missing" ]; then
  [ "$INSTALL" = 1 ] || die "missing packages: $missing (INSTALL=0)"
  command -v apt-get >/dev/null || die "missing packages: $missing (and no apt-get: install them by hand)"
  [ "$(id -u)" = 0 ] || die "missing packages: $missing (run as root, or install them by hand)"
  log "installing: $missing"
  tmp_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    # keep apt from starting nginx / varnish as system services (port 80/6081)
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && tmp_policy=1
  fi
  rc=0
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing; } >&2 || rc=$?
  [ "$tmp_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "$rc" = 0 ] || die "apt-get install failed ($rc)"
fi
export PATH=$PATH:/usr/sbin:/sbin

if [ "$BUILD" = 1 ]; then
  log "cargo build --release"
  (cd "$REPO" && cargo build --release) >&2 || die "cargo build --release failed"
fi
[ -x "$SEAWALL_BIN" ] || die "no Seawall binary at $SEAWALL_BIN"

# ------------------------------------------------------------------------------ preflight
if [ "$PIN" = 1 ]; then
  [ "$NCPU_ALL" -ge 2 ] || die "PIN=1 needs 2 CPUs"
  LOAD_CPUS=0 ORIGIN_CPUS=0 PROXY_CPUS=1
  SEAWALL_THREADS=1 PROXY_WORKERS=1 ORIGIN_WORKERS=1
else
  LOAD_CPUS="" ORIGIN_CPUS="" PROXY_CPUS=""
  SEAWALL_THREADS=0 PROXY_WORKERS=$NCPU_ALL ORIGIN_WORKERS=$NCPU_ALL
fi
SEAWALL_THREADS=${SW_THREADS:-$SEAWALL_THREADS}
pin() { [ -n "$1" ] && echo "taskset -c $1" || true; }
LOADPIN=$(pin "$LOAD_CPUS")

eph_lo=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
[ $((BASE_PORT + 31)) -lt "$eph_lo" ] || die "BASE_PORT+31 must be below the ephemeral range ($eph_lo)"
port_in_use() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
for p in $ORIGIN_PORT $SLOW_PORT $CEIL_PORT $SEAWALL_PORT $SEAWALL_ADMIN $NGINX_PORT $VARNISH_PORT $VARNISH_ADMIN; do
  port_in_use "$p" && die "port $p is in use: pick another BASE_PORT"
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

STAMP=$(date +%Y%m%d-%H%M%S)
RES_DIR=$HERE/results
RUN=$RES_DIR/$STAMP
OUT_MD=$RES_DIR/$STAMP.md
mkdir -p "$RUN/logs" "$RUN/wrk" "$RUN/configs"
JSONL=$RUN/results.jsonl
: >"$JSONL"
SHM=/dev/shm
[ -d "$SHM" ] && [ -w "$SHM" ] || SHM=${TMPDIR:-/tmp}
WORK=$(mktemp -d "$SHM/seawall-e2e.XXXXXX")
chmod 755 "$WORK" # Varnish's worker process runs as an unprivileged user

# ------------------------------------------------------------------------------ processes
declare -A PID_OF=()
STARTED=() # PIDs (= session ids) in start order

session_pids() { ps -e -o pid=,sid= | awk -v s="$1" '$2 == s { print $1 }'; }
proc_cpu_ticks() { # utime+stime of the processes in session $1
  local p s total=0 f
  for p in $(session_pids "$1"); do
    s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    s=${s##*) }
    read -ra f <<<"$s"
    total=$((total + f[11] + f[12]))
  done
  echo "$total"
}
proc_rss_kb() { # VmRSS summed over the processes in session $1
  local p r total=0
  for p in $(session_pids "$1"); do
    r=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
    total=$((total + ${r:-0}))
  done
  echo "$total"
}
machine_busy_ticks() { awk '/^cpu / { print $2+$3+$4; exit }' /proc/stat; }

stop_session() { # SIGTERM the PID we started, then SIGKILL what is left of its session
  local pid=$1 i left
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    left=$(session_pids "$pid")
    [ -z "$left" ] && break
    sleep 0.1
  done
  left=$(session_pids "$pid")
  if [ -n "$left" ]; then
    log "session $pid still running after SIGTERM: $(echo $left) -> SIGKILL"
    kill -KILL $left 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do stop_session "${STARTED[$i]}"; done
  if [ "$KEEP_WORK" = 1 ]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  [ "$rc" = 0 ] || log "FAILED (exit $rc); logs in $RUN/logs"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CPUS CMD... : start in the background in its own session (setsid), optionally
# pinned; stdout+stderr to logs/NAME.log (first line: the exact command).
start() {
  local name=$1 cpus=$2
  shift 2
  local logf=$RUN/logs/$name.log
  echo "# $(pin "$cpus") $*" >>"$logf"
  if [ -n "$cpus" ]; then
    setsid taskset -c "$cpus" "$@" >>"$logf" 2>&1 </dev/null &
  else
    setsid "$@" >>"$logf" 2>&1 </dev/null &
  fi
  local pid=$!
  STARTED+=("$pid")
  PID_OF[$name]=$pid
  sleep 0.05
  local sid
  sid=$(ps -o sid= -p "$pid" 2>/dev/null | tr -d ' ' || true)
  [ -z "$sid" ] || [ "$sid" = "$pid" ] || log "warning: $name (pid $pid) is not its own session leader (sid $sid)"
}

# wait_ok NAME URL [SECONDS]: bounded wait for a 200 from URL while NAME's process is alive
wait_ok() {
  local name=$1 url=$2 secs=${3:-30} i code pid=${PID_OF[$1]}
  for ((i = 0; i < secs * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || { tail -20 "$RUN/logs/$name.log" >&2; die "$name exited during start-up"; }
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" 2>/dev/null || true)
    [ "$code" = 200 ] && return 0
    sleep 0.1
  done
  tail -20 "$RUN/logs/$name.log" >&2
  die "$name not ready after ${secs}s ($url)"
}

stop() { # stop NAME (one we started) and forget it
  local name=$1 pid=${PID_OF[$1]:-} i
  [ -n "$pid" ] || return 0
  stop_session "$pid"
  unset "PID_OF[$name]"
  for i in "${!STARTED[@]}"; do [ "${STARTED[$i]}" = "$pid" ] && unset "STARTED[$i]"; done
  STARTED=("${STARTED[@]}")
}

render() { # render TEMPLATE OUT KEY=VALUE...
  local tmpl=$1 out=$2 kv
  shift 2
  local text
  text=$(<"$tmpl")
  for kv in "$@"; do text=${text//@${kv%%=*}@/${kv#*=}}; done
  if [[ $text =~ @[A-Z_]+@ ]]; then die "unrendered placeholder ${BASH_REMATCH[0]} in $out"; fi
  printf '%s\n' "$text" >"$out"
  cp "$out" "$RUN/configs/"
}

# ------------------------------------------------------------------------------ origin
DOCROOT=$WORK/docroot
mkdir -p "$DOCROOT/obj"
mkobj() { python3 -c 'import sys; n=int(sys.argv[1]); sys.stdout.buffer.write((b"abcdefghijklmnopqrstuvwxyz"*(n//26+1))[:n])' "$2" >"$DOCROOT/obj/$1.bin"; }
mkobj 1k 1024
mkobj 64k 65536
mkobj mem "$MEM_SIZE"
mkobj purge 128
chmod -R a+rX "$DOCROOT"

start_origin_nginx() { # NAME PORT WORKERS CPUS ACCESS_LOG
  local name=$1 port=$2 workers=$3 cpus=$4 dir=$WORK/$1
  mkdir -p "$dir/tmp"
  render "$HERE/conf/origin-nginx.conf.in" "$dir/$name.conf" NAME="$name" PORT="$port" WORKERS="$workers" \
    DIR="$dir" DOCROOT="$DOCROOT" SLOW_PORT="$SLOW_PORT" ACCESS_LOG=off
  start "$name" "$cpus" nginx -p "$dir" -c "$dir/$name.conf"
  wait_ok "$name" "http://127.0.0.1:$port/__health"
}

start_seawall() {
  local dir=$WORK/seawall
  mkdir -p "$dir"
  render "$HERE/conf/seawall.toml.in" "$dir/seawall.toml" PORT="$SEAWALL_PORT" ADMIN_PORT="$SEAWALL_ADMIN" \
    THREADS="$SEAWALL_THREADS" ORIGIN="$ORIGIN"
  start seawall "$PROXY_CPUS" env -u SEAWALL_ADMIN_TOKEN "$SEAWALL_BIN" run --config "$dir/seawall.toml"
  wait_ok seawall "http://127.0.0.1:$SEAWALL_ADMIN/readyz"
  wait_ok seawall "http://127.0.0.1:$SEAWALL_PORT/__health"
}

start_nginx() {
  local dir=$WORK/nginx
  rm -rf "$dir"
  mkdir -p "$dir/tmp" "$dir/cache"
  render "$HERE/conf/proxy-nginx.conf.in" "$dir/nginx.conf" PORT="$NGINX_PORT" WORKERS="$PROXY_WORKERS" \
    DIR="$dir" ORIGIN="$ORIGIN"
  start nginx "$PROXY_CPUS" nginx -p "$dir" -c "$dir/nginx.conf"
  wait_ok nginx "http://127.0.0.1:$NGINX_PORT/__health"
}

start_varnish() {
  local dir=$WORK/varnish
  rm -rf "$dir"
  mkdir -p "$dir"
  chmod 755 "$dir"
  render "$HERE/conf/varnish.vcl.in" "$dir/bench.vcl" ORIGIN_PORT="$ORIGIN_PORT"
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/secret"
  chmod 600 "$dir/secret"
  start varnish "$PROXY_CPUS" varnishd -F -n "$dir/n" -a "127.0.0.1:$VARNISH_PORT" \
    -T "127.0.0.1:$VARNISH_ADMIN" -S "$dir/secret" -f "$dir/bench.vcl" -s malloc,1G
  wait_ok varnish "http://127.0.0.1:$VARNISH_PORT/__health" 60
}
varnishadm_() { timeout 60 varnishadm -n "$WORK/varnish/n" "$@"; }

start_target() { case $1 in seawall) start_seawall ;; nginx) start_nginx ;; varnish) start_varnish ;; esac; }
port_of() {
  case $1 in
    ceiling) echo "$CEIL_PORT" ;; seawall) echo "$SEAWALL_PORT" ;;
    nginx) echo "$NGINX_PORT" ;; varnish) echo "$VARNISH_PORT" ;; origin) echo "$ORIGIN_PORT" ;;
  esac
}

origin_requests() { # requests the fast origin has answered (stub_status), minus this query
  local n
  n=$(curl -s --max-time 5 "http://$ORIGIN/__status" | awk 'NR==3 {print $3}')
  echo "${n:-0}"
}
slow_hits() { # slow origin requests for paths starting with $1
  curl -s --max-time 5 "http://127.0.0.1:$SLOW_PORT/__hits?prefix=$1" |
    python3 -c 'import sys,json; print(json.load(sys.stdin)["matched"])'
}
emit() { python3 "$HERE/lib/report.py" emit "$@" >>"$JSONL"; }

# ------------------------------------------------------------------------------ scenarios
# run_wrk SCENARIO TARGET PATH UNIQUE ROUND
run_wrk() {
  local scen=$1 target=$2 path=$3 unique=$4 round=$5
  local pid=${PID_OF[$target]} port
  port=$(port_of "$target")
  local url="http://127.0.0.1:$port$path"
  local out=$RUN/wrk/$scen.$target.r$round.txt
  local cmd="$LOADPIN wrk -t$THREADS -c$CONNS -d${DURATION}s --timeout 5s --latency -s $HERE/lib/wrk.lua $url"
  local up0 up1 c0 c1 o0 o1 b0 b1 t0 t1 lg
  up0=$(origin_requests)
  c0=$(proc_cpu_ticks "$pid")
  o0=$(proc_cpu_ticks "${PID_OF[origin]}")
  b0=$(machine_busy_ticks)
  t0=$(date +%s%N)
  echo "# WRK_UNIQUE=$unique $cmd" >"$out"
  # the bash -c reports its children's CPU (cutime+cstime: timeout + wrk) after wrk exits
  WRK_UNIQUE=$unique bash -c "timeout $((DURATION + 30)) $cmd; read -r s < /proc/\$\$/stat; s=\${s##*) }; set -- \$s; echo \"LOADGEN_TICKS \$((\${14} + \${15}))\"" >>"$out" 2>&1 || true
  t1=$(date +%s%N)
  b1=$(machine_busy_ticks)
  c1=$(proc_cpu_ticks "$pid")
  o1=$(proc_cpu_ticks "${PID_OF[origin]}")
  up1=$(origin_requests)
  lg=$(awk '/^LOADGEN_TICKS/ {print $2}' "$out" | tail -1)
  local wj
  wj=$(grep '^WRKJSON ' "$out" | tail -1 | cut -d' ' -f2-)
  [ -n "$wj" ] || { log "warning: no wrk result for $scen/$target (see $out)"; wj='{}'; }
  emit kind=wrk scenario="$scen" target="$target" round="$round" url="$url" \
    "cpu_ticks=$((c1 - c0))" "origin_cpu_ticks=$((o1 - o0))" "loadgen_ticks=${lg:-0}" \
    "machine_busy_ticks=$((b1 - b0))" clk_tck="$CLK_TCK" ncpu="$NCPU_ALL" \
    "wall_ns=$((t1 - t0))" "upstream=$((up1 - up0 - 1))" "@wrk=$wj"
  log "  $scen $target r$round: $(python3 "$HERE/lib/report.py" brief "$wj")"
}

warm_hit() { # fetch twice, check the second is a hit, then WARMUP s of unmeasured load
  local target=$1 path=$2 port xc
  port=$(port_of "$target")
  curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$port$path" || true
  xc=$(curl -s -o /dev/null -D - --max-time 5 "http://127.0.0.1:$port$path" | awk -F': *' 'tolower($1)=="x-cache" {print $2}' | tr -d '\r')
  [ "$target" = ceiling ] || [[ ${xc:-} == HIT* ]] || log "warning: $target $path second fetch X-Cache='${xc:-}' (expected HIT)"
  if [ "$WARMUP" -gt 0 ]; then
    timeout $((WARMUP + 30)) $LOADPIN wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" "http://127.0.0.1:$port$path" >/dev/null 2>&1 || true
  fi
}

rotate() { # rotate LIST by N
  local n=$1
  shift
  local a=("$@") k i
  k=${#a[@]}
  for ((i = 0; i < k; i++)); do echo "${a[$(((i + n) % k))]}"; done
}

burst() { # burst TARGET ROUND
  local target=$1 round=$2 port key out hits
  port=$(port_of "$target")
  key="/slow/$target-r$round-$(date +%s%N)"
  out=$RUN/logs/burst.$target.r$round.json
  timeout 90 $LOADPIN python3 "$HERE/lib/httpload.py" burst --url "http://127.0.0.1:$port$key" \
    --n "$BURST_N" --timeout 60 >"$out" 2>&1 || true
  sleep 0.5
  hits=$(slow_hits "$key")
  if [ "$target" = seawall ]; then # Seawall's own coalescing counters, for diagnosis
    curl -s --max-time 5 "http://127.0.0.1:$SEAWALL_ADMIN/metrics" | grep -i coalesc >"$RUN/logs/burst.seawall.r$round.metrics" || true
  fi
  emit kind=burst target="$target" round="$round" url="http://127.0.0.1:$port$key" \
    origin_hits="$hits" n="$BURST_N" delay_ms="$BURST_DELAY_MS" "@burst=$(tail -1 "$out")"
  log "  burst $target r$round: origin hits $hits; $(tail -1 "$out")"
}

fill() { # fill TARGET PREFIX COUNT -> prints the fill JSON line
  local port
  port=$(port_of "$1")
  timeout 900 $LOADPIN python3 "$HERE/lib/httpload.py" fill --base "http://127.0.0.1:$port" \
    --prefix "$2" --count "$3" --conc "$FILL_CONC" --timeout 840 2>&1 | tail -1
}

seawall_entries() {
  curl -s --max-time 10 "http://127.0.0.1:$SEAWALL_ADMIN/admin/cache/stats" |
    python3 -c 'import sys,json; d=json.load(sys.stdin); print(d["entries"], d["bytes"])'
}
varnish_objects() { timeout 10 varnishstat -n "$WORK/varnish/n" -1 -f MAIN.n_object 2>/dev/null | awk '{print $2}'; }
x_cache() { curl -s -o /dev/null -D - --max-time 5 "$1" | awk -F': *' 'tolower($1)=="x-cache" {print $2}' | tr -d '\r'; }

memory() { # fresh proxy, fill MEM_OBJECTS objects, RSS before/after
  local target=$1 r0 r1 up0 up1 f extra="" cache_kb=0
  stop "$target"
  start_target "$target"
  sleep 1
  r0=$(proc_rss_kb "${PID_OF[$target]}")
  up0=$(origin_requests)
  f=$(fill "$target" "/m/$target/" "$MEM_OBJECTS")
  up1=$(origin_requests)
  sleep 1
  r1=$(proc_rss_kb "${PID_OF[$target]}")
  [ "$target" = nginx ] && cache_kb=$(du -sk "$WORK/nginx/cache" | awk '{print $1}')
  if [ "$target" = seawall ]; then
    read -r e b < <(seawall_entries)
    extra="cache_entries=$e cache_bytes=$b"
  fi
  [ "$target" = varnish ] && extra="cache_entries=$(varnish_objects)"
  # shellcheck disable=SC2086
  emit kind=memory target="$target" objects="$MEM_OBJECTS" object_bytes="$MEM_SIZE" rss_fresh_kb="$r0" \
    rss_after_kb="$r1" "upstream=$((up1 - up0 - 1))" disk_cache_kb="$cache_kb" $extra "@fill=$f"
  log "  memory $target: RSS ${r0} -> ${r1} KiB; $f"
}

time_cmd_us() { # run a command, print "<microseconds> <output, or 'ok'> [rc=N]"
  local t0 t1 o rc=0
  t0=$(date +%s%N)
  o=$("$@" 2>&1) || rc=$?
  t1=$(date +%s%N)
  o=$(tr '\n' ' ' <<<"$o")
  [ -n "${o// /}" ] || o=ok
  [ "$rc" = 0 ] || o="$o rc=$rc"
  echo "$(((t1 - t0) / 1000))" "$o"
}

purge() { # fresh proxy, fill PURGE_OBJECTS under /p/, time purge by prefix, refill, by tag
  local target=$1 method f before after us out xc body noop
  stop "$target"
  start_target "$target"
  for method in prefix tag; do
    f=$(fill "$target" "/p/" "$PURGE_OBJECTS")
    if [ "$target" = seawall ]; then
      read -r before _ < <(seawall_entries)
      if [ "$method" = prefix ]; then body='{"prefix":"/p/"}'; else body='{"tag":"t"}'; fi
      read -r us out < <(time_cmd_us curl -s --max-time 300 -X POST -H 'Content-Type: application/json' \
        -d "$body" "http://127.0.0.1:$SEAWALL_ADMIN/admin/cache/purge")
      read -r after _ < <(seawall_entries)
    else
      before=$(varnish_objects)
      if [ "$method" = prefix ]; then
        read -r us out < <(time_cmd_us varnishadm_ ban req.url '~' '^/p/')
      else
        read -r us out < <(time_cmd_us varnishadm_ ban obj.http.Surrogate-Key '~' '(^|[[:space:]])t($|[[:space:]])')
      fi
      after=$(varnish_objects)
    fi
    # the same client with a no-op call: its start-up and round trip are part of the time above
    if [ "$target" = seawall ]; then
      read -r noop _ < <(time_cmd_us curl -s --max-time 10 "http://127.0.0.1:$SEAWALL_ADMIN/healthz")
    else
      read -r noop _ < <(time_cmd_us varnishadm_ ping)
    fi
    xc=$(x_cache "http://127.0.0.1:$(port_of "$target")/p/1")
    emit kind=purge target="$target" method="$method" objects="$PURGE_OBJECTS" call_us="$us" noop_us="$noop" \
      entries_before="${before:-}" entries_after="${after:-}" x_cache_after="${xc:-}" response="$out" "@fill=$f"
    log "  purge $target by $method: $((us / 1000)) ms, entries $before -> $after, next GET /p/1: X-Cache ${xc:-?}; $out"
  done
}

# ------------------------------------------------------------------------------ main
log "run $STAMP: $CMDLINE (PIN=$PIN, work dir $WORK)"
mkdir -p "$WORK/slow"
start slow "$ORIGIN_CPUS" python3 "$HERE/lib/slow_origin.py" --port "$SLOW_PORT" --delay-ms "$BURST_DELAY_MS"
wait_ok slow "http://127.0.0.1:$SLOW_PORT/__health"
start_origin_nginx origin "$ORIGIN_PORT" "$ORIGIN_WORKERS" "$ORIGIN_CPUS"
if has_section hit || has_section pass; then
  start_origin_nginx ceiling "$CEIL_PORT" "$PROXY_WORKERS" "$PROXY_CPUS"
fi
for t in $TARGETS; do start_target "$t"; done

NV_NGINX=$(nginx -v 2>&1 | head -1)
NV_VARNISH=$(varnishd -V 2>&1 | head -1)
NV_WRK=$(wrk -v 2>&1 | head -1 || true)
NV_SEAWALL="$("$SEAWALL_BIN" --version 2>&1 | head -1) ($(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ', src modified'); binary of $(date -r "$SEAWALL_BIN" '+%F %T'))"
python3 "$HERE/lib/report.py" emit kind=meta stamp="$STAMP" cmdline="$CMDLINE" pin="$PIN" \
  nproc="$NCPU_ALL" cpu_model="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" \
  kernel="$(uname -srm)" os="$(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")" \
  duration="$DURATION" rounds="$ROUNDS" conns="$CONNS" threads="$THREADS" warmup="$WARMUP" \
  burst_n="$BURST_N" burst_delay_ms="$BURST_DELAY_MS" mem_objects="$MEM_OBJECTS" mem_size="$MEM_SIZE" \
  purge_objects="$PURGE_OBJECTS" targets="$TARGETS" sections="$SECTIONS" \
  load_cpus="${LOAD_CPUS:-all}" proxy_cpus="${PROXY_CPUS:-all}" origin_cpus="${ORIGIN_CPUS:-all}" \
  seawall_threads="$SEAWALL_THREADS" proxy_workers="$PROXY_WORKERS" \
  v_nginx="$NV_NGINX" v_varnish="$NV_VARNISH" v_wrk="$NV_WRK" v_seawall="$NV_SEAWALL" >"$RUN/meta.json"

read -ra WRK_TARGETS <<<"ceiling $TARGETS"
HIT_SCENS=() PASS_SCENS=()
has_section hit && HIT_SCENS=(hit-1k hit-64k)
has_section pass && PASS_SCENS=(pass-unique pass-same)
if [ ${#HIT_SCENS[@]} -gt 0 ]; then
  log "warm-up (hit path)"
  for t in "${WRK_TARGETS[@]}"; do
    warm_hit "$t" "/hit/1k/$t"
    warm_hit "$t" "/hit/64k/$t"
  done
fi
for ((r = 1; r <= ROUNDS; r++)); do
  if [ $((${#HIT_SCENS[@]} + ${#PASS_SCENS[@]})) -gt 0 ]; then
    log "round $r/$ROUNDS: hit + pass-through"
    for scen in "${HIT_SCENS[@]}" "${PASS_SCENS[@]}"; do
      for t in $(rotate $((r - 1)) "${WRK_TARGETS[@]}"); do
        case $scen in
          hit-1k) run_wrk "$scen" "$t" "/hit/1k/$t" 0 "$r" ;;
          hit-64k) run_wrk "$scen" "$t" "/hit/64k/$t" 0 "$r" ;;
          pass-unique) run_wrk "$scen" "$t" "/pass/1k/$t-unique" 1 "$r" ;;
          pass-same) run_wrk "$scen" "$t" "/pass/1k/$t-same" 0 "$r" ;;
        esac
      done
    done
  fi
  if has_section burst; then
    log "round $r/$ROUNDS: cold burst of $BURST_N"
    for t in $(rotate $((r - 1)) $TARGETS); do burst "$t" "$r"; done
  fi
done
if has_section hit || has_section pass; then stop ceiling; fi
if has_section memory; then
  log "memory: $MEM_OBJECTS x $MEM_SIZE B objects into a fresh proxy"
  for t in $TARGETS; do memory "$t"; done
fi
if has_section purge; then
  log "purge: $PURGE_OBJECTS objects"
  for t in $TARGETS; do
    if [ "$t" = nginx ]; then
      emit kind=purge target=nginx method=prefix call_us= note="not supported (no purge in open-source nginx)"
      emit kind=purge target=nginx method=tag call_us= note="not supported (no purge in open-source nginx)"
    else
      purge "$t"
    fi
  done
fi

python3 "$HERE/lib/report.py" report "$RUN" >"$OUT_MD"
log "report: $OUT_MD (raw data: $RUN)"
cat "$OUT_MD"
