#!/bin/bash
# Compression bench: 10,000 JSON docs of ~4 KiB through Seawall with [cache.compression] off and on;
# stored bytes per object (admin stats), RSS, and CPU per hit for identity and gzip clients (wrk).
# Usage: run.sh <seawall-bin> ; prints the fill stats (compression off/on) and per-hit CPU.
set -u
BIN=$1; D=$(cd "$(dirname "$0")" && pwd); OP=24811; PP=24812; AP=24813
python3 $D/origin.py $OP & OPID=$!
sleep 1
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
for mode in ${MODES:-off on}; do
  en=$([ $mode = on ] && echo true || echo false)
  cat > $D/proxy-$mode.toml <<T
[server]
listen = "127.0.0.1:$PP"
admin_listen = "127.0.0.1:$AP"
[cache]
max_size = "256MiB"
[cache.compression]
enabled = $en
[[upstreams]]
name = "o"
endpoints = ["http://127.0.0.1:$OP"]
[[routes]]
upstream = "o"
T
  SEAWALL_ADMIN_TOKEN=benchtoken $BIN run --config $D/proxy-$mode.toml > $D/seawall-$mode.log 2>&1 & SPID=$!
  sleep 1.5
  rss0=$(awk '/VmRSS/{print $2}' /proc/$SPID/status)
  echo "compression=$mode fill: $(python3 $D/fill.py $PP $AP ${N:-10000})"
  rss1=$(awk '/VmRSS/{print $2}' /proc/$SPID/status)
  echo "compression=$mode rss_kib fresh=$rss0 after_fill=$rss1"
  for ae in "" "gzip"; do
    hdr=(); [ -n "$ae" ] && hdr=(-H "Accept-Encoding: $ae")
    c0=$(cpu $SPID)
    out=$(wrk -t1 -c16 -d8s "${hdr[@]}" http://127.0.0.1:$PP/doc/1 2>&1)
    c1=$(cpu $SPID)
    reqs=$(echo "$out" | awk '/requests in/{print $1}')
    rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
    echo "compression=$mode client_ae='${ae:-none}' requests=$reqs rps=$rps cpu_ticks=$((c1-c0)) us_cpu_per_hit=$(python3 -c "print(round(($c1-$c0)*10000/$reqs,2))")"
  done
  kill $SPID; wait $SPID 2>/dev/null
done
kill $OPID; wait $OPID 2>/dev/null
