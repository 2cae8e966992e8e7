#!/usr/bin/env bash
# TLS at the edge next to nginx, same certificate, each proxy pinned to CPU 1 with one worker and
# the load on CPU 0: full handshakes per second, and 1 KiB cache hits over keep-alive TLS.
# Usage: benches/tls.sh   env: BIN (default: cargo build --release), KEY=rsa|ec [rsa],
#   DURATION [10] s per run, ROUNDS [3] (interleaved), CONNS [64] wrk connections, HS_CLIENTS [3]
# Handshakes: HS_CLIENTS parallel `openssl s_time -new` (no session reuse, one GET per connection).
# Only the ratio inside one run means anything on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
HS_CLIENTS=${HS_CLIENTS:-3}
KEY=${KEY:-rsa}
for c in nginx wrk openssl taskset curl; do
  command -v "$c" >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx-light wrk openssl util-linux curl >/dev/null; break; }
done
[ -n "${BIN:-}" ] || cargo build --release --quiet
BIN=${BIN:-$PWD/target/release/seawall}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  [ -n "${KEEPTMP:-}" ] && cp -r "$tmp" "$KEEPTMP"; rm -rf "$tmp"
}
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1]);s.close()'; }
wait_ok() { for _ in $(seq 1 300); do curl -kfs -H "Host: bench.test" -o /dev/null "$1" && return 0; sleep 0.1; done; echo "timeout waiting for $1" >&2; return 1; }

# One certificate for both: RSA 2048 by default (the server's signature dominates a handshake).
case $KEY in
  rsa) newkey=(-newkey rsa:2048) ;;
  ec) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
  *) echo "KEY must be rsa or ec" >&2; exit 2 ;;
esac
openssl req -x509 "${newkey[@]}" -nodes -days 30 -subj /CN=bench.test \
  -addext "subjectAltName=DNS:bench.test,DNS:localhost,IP:127.0.0.1" \
  -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null

ORIGIN=$(port)
taskset -c 0 "$BIN" demo --latency 0ms --listen 127.0.0.1:"$(port)" --admin-listen 127.0.0.1:"$(port)" \
  --origin 127.0.0.1:"$ORIGIN" >/dev/null 2>&1 &
pids+=($!)
wait_ok "http://127.0.0.1:$ORIGIN/hits"

SW=$(port)
cat > "$tmp/seawall.toml" <<TOML
[server]
listen = ""
listen_tls = "127.0.0.1:$SW"
admin_listen = "127.0.0.1:$(port)"
worker_threads = 1
[log]
level = "warn"
[[tls.certificates]]
cert_file = "$tmp/cert.pem"
key_file = "$tmp/key.pem"
[[upstreams]]
name = "demo"
endpoints = ["http://127.0.0.1:$ORIGIN"]
[[routes]]
upstream = "demo"
TOML
taskset -c 1 "$BIN" run --config "$tmp/seawall.toml" >"$tmp/seawall.log" 2>&1 &
pids+=($!)

NG=$(port)
mkdir -p "$tmp/ngx/cache" "$tmp/ngx/tmp"
# nginx's workers drop to an unprivileged user when started as root: let them reach their cache.
chmod 755 "$tmp"
chmod -R 777 "$tmp/ngx"
cat > "$tmp/ngx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process on;
pid $tmp/ngx/nginx.pid;
error_log $tmp/ngx/error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $tmp/ngx/tmp/client;
  proxy_temp_path $tmp/ngx/tmp/proxy;
  fastcgi_temp_path $tmp/ngx/tmp/fastcgi;
  uwsgi_temp_path $tmp/ngx/tmp/uwsgi;
  scgi_temp_path $tmp/ngx/tmp/scgi;
  proxy_cache_path $tmp/ngx/cache levels=1:2 keys_zone=bench:16m use_temp_path=off;
  upstream origin { server 127.0.0.1:$ORIGIN; keepalive 64; }
  server {
    listen 127.0.0.1:$NG ssl backlog=4096;
    ssl_certificate $tmp/cert.pem;
    ssl_certificate_key $tmp/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache bench;
    }
  }
}
CONF
taskset -c 1 "$NGINX" -c "$tmp/ngx/nginx.conf" -p "$tmp/ngx" >/dev/null 2>&1 &
pids+=($!)
wait_ok "https://127.0.0.1:$SW/large?size=1024"
wait_ok "https://127.0.0.1:$NG/large?size=1024"
for p in $SW $NG; do curl -kfs -H "Host: bench.test" -o /dev/null "https://127.0.0.1:$p/large?size=1024"; done

hits() { # port -> "req/s p99"
  taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -H "Host: bench.test" "https://127.0.0.1:$1/large?size=1024" 2>/dev/null |
    awk '/Requests\/sec/ {r=$2} / 99%/ {p=$2} END {print r, p}'
}
handshakes() { # port -> full handshakes per second, summed over the clients
  local i cl=()
  for i in $(seq 1 "$HS_CLIENTS"); do
    taskset -c 0 openssl s_time -connect "127.0.0.1:$1" -new -time "$DURATION" -www "/large?size=1024" \
      >"$tmp/st.$i" 2>&1 &
    cl+=($!)
  done
  wait "${cl[@]}"
  cat "$tmp"/st.* | awk -v d="$DURATION" '/connections in [0-9]+ real seconds/ {n += $1; s = ($4 > s ? $4 : s)} END {printf "%.0f\n", n / (s > 0 ? s : d)}'
  rm -f "$tmp"/st.*
}

echo "key: $KEY; ${DURATION}s runs, $ROUNDS rounds, wrk -t1 -c$CONNS, $HS_CLIENTS handshake clients; proxies on CPU 1, load on CPU 0"
printf "%-6s %-8s %12s %10s %14s\n" round proxy "hit req/s" "hit p99" "handshakes/s"
for r in $(seq 1 "$ROUNDS"); do
  for name in nginx seawall; do
    p=$NG; [ $name = seawall ] && p=$SW
    read -r rps p99 < <(hits "$p")
    hs=$(handshakes "$p")
    printf "%-6s %-8s %12s %10s %14s\n" "$r" "$name" "$rps" "$p99" "$hs"
  done
done
