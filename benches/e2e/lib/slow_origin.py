#!/usr/bin/env python3
"""Slow origin for the cold-burst (request coalescing) test. Standard library only.

  slow_origin.py --port P [--delay-ms 500] [--size 1024] [--max-age 60]

Every GET sleeps DELAY ms, then answers 200 with `Cache-Control: public, max-age=MAX_AGE`,
a SIZE-byte body and `X-Origin-Seq: <n>` (n counts the answered requests). Not counted:
  GET /__hits?prefix=/x/   -> {"total": n, "matched": requests whose path starts with prefix}
  GET /__health            -> 200
Listens on 127.0.0.1 only. One thread per connection (ThreadingHTTPServer): fine for a burst
of a few hundred requests, far too slow for throughput tests (the fast origin is nginx).
"""
import argparse
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
SEQ = 0
BY_PATH = {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "slow-origin"

    def log_message(self, *_):  # quiet
        pass

    def _send(self, status, body, ctype, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        global SEQ
        u = urllib.parse.urlsplit(self.path)
        if u.path == "/__health":
            self._send(200, b"ok\n", "text/plain", [("Cache-Control", "no-store")])
            return
        if u.path == "/__hits":
            q = urllib.parse.parse_qs(u.query)
            prefix = q.get("prefix", [""])[0]
            with LOCK:
                total = SEQ
                matched = sum(v for k, v in BY_PATH.items() if k.startswith(prefix))
            self._send(200, json.dumps({"total": total, "matched": matched}).encode(),
                       "application/json", [("Cache-Control", "no-store")])
            return
        time.sleep(self.server.delay_s)
        with LOCK:
            SEQ += 1
            seq = SEQ
            BY_PATH[u.path] = BY_PATH.get(u.path, 0) + 1
        self._send(200, self.server.body, "application/octet-stream",
                   [("Cache-Control", f"public, max-age={self.server.max_age}"),
                    ("X-Origin-Seq", str(seq))])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--delay-ms", type=int, default=500)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--max-age", type=int, default=60)
    a = ap.parse_args()
    ThreadingHTTPServer.request_queue_size = 1024
    ThreadingHTTPServer.daemon_threads = True
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    srv.delay_s = a.delay_ms / 1000.0
    srv.max_age = a.max_age
    srv.body = (b"abcdefghijklmnopqrstuvwxyz" * (a.size // 26 + 1))[: a.size]
    srv.serve_forever()


if __name__ == "__main__":
    main()
