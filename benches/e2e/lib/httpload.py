#!/usr/bin/env python3
"""Small HTTP/1.1 clients for the e2e benchmark (standard library only, loopback only).

  httpload.py burst --url http://127.0.0.1:P/path --n 200 [--timeout 30]
      Opens N connections first, then releases N identical GETs at one instant (one per
      connection) and waits for all responses. Prints one JSON line: ok, errors, statuses,
      client latency percentiles (ms, from the release to the last body byte), and how many
      distinct X-Origin-Seq values the clients saw (1 = everybody got the same origin response).

  httpload.py fill --base http://127.0.0.1:P --prefix /p/ --count N [--conc 32] [--timeout 120]
      Fetches PREFIX0 .. PREFIX{N-1} exactly once each over CONC keep-alive connections.
      Prints one JSON line: requests, ok, non_2xx, errors, seconds, rps.

Every run is bounded by --timeout (seconds).
"""
import argparse
import asyncio
import json
import sys
import time
import urllib.parse


def parse_url(url):
    u = urllib.parse.urlsplit(url)
    if u.scheme != "http":
        raise SystemExit("only http:// URLs")
    host = u.hostname or "127.0.0.1"
    port = u.port or 80
    target = u.path or "/"
    if u.query:
        target += "?" + u.query
    return host, port, target


def request_bytes(host, port, target):
    return (f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"User-Agent: seawall-e2e\r\nAccept: */*\r\n\r\n").encode()


async def read_response(reader):
    """Returns (status, headers_dict_lowercase, body_len, keep_alive)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1])
    version = parts[0]
    headers = {}
    for line in lines[1:]:
        if not line:
            continue
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    body = 0
    te = headers.get("transfer-encoding", "").lower()
    if "chunked" in te:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                # trailers until empty line
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                break
            await reader.readexactly(size + 2)
            body += size
        keep = True
    elif "content-length" in headers:
        n = int(headers["content-length"])
        if n:
            await reader.readexactly(n)
        body = n
        keep = True
    elif status in (204, 304) or 100 <= status < 200:
        keep = True
    else:
        data = await reader.read()
        body = len(data)
        keep = False
    conn = headers.get("connection", "").lower()
    if conn == "close" or (version == "HTTP/1.0" and conn != "keep-alive"):
        keep = False
    return status, headers, body, keep


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


async def burst(args):
    host, port, target = parse_url(args.url)
    req = request_bytes(host, port, target)
    conns = []
    connect_errors = 0

    async def connect():
        try:
            return await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        except Exception:  # noqa: BLE001
            return None

    results = await asyncio.gather(*[connect() for _ in range(args.n)])
    for r in results:
        if r is None:
            connect_errors += 1
        else:
            conns.append(r)
    go = asyncio.Event()
    lat = []
    statuses = {}
    seqs = {}
    errors = connect_errors

    async def one(reader, writer):
        nonlocal errors
        await go.wait()
        t0 = time.perf_counter()
        try:
            writer.write(req)
            await writer.drain()
            status, headers, _, _ = await read_response(reader)
            lat.append((time.perf_counter() - t0) * 1000.0)
            statuses[status] = statuses.get(status, 0) + 1
            s = headers.get("x-origin-seq")
            if s is not None:
                seqs[s] = seqs.get(s, 0) + 1
        except Exception:  # noqa: BLE001
            errors += 1
        finally:
            writer.close()

    tasks = [asyncio.ensure_future(one(r, w)) for r, w in conns]
    await asyncio.sleep(0.05)  # let every task park on the event
    t_start = time.perf_counter()
    go.set()
    done, pending = await asyncio.wait(tasks, timeout=args.timeout)
    for t in pending:
        t.cancel()
        errors += 1
    wall = time.perf_counter() - t_start
    lat.sort()
    out = {
        "n": args.n, "ok": sum(v for k, v in statuses.items() if 200 <= k < 300),
        "errors": errors, "connect_errors": connect_errors,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "distinct_origin_seq": len(seqs),
        "p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90), "p99_ms": pct(lat, 99),
        "max_ms": lat[-1] if lat else None, "min_ms": lat[0] if lat else None,
        "wall_s": round(wall, 3),
    }
    print(json.dumps(out))


async def fill(args):
    host, port, _ = parse_url(args.base)
    nxt = 0
    ok = non2xx = errors = done_n = 0

    async def worker():
        nonlocal nxt, ok, non2xx, errors, done_n
        reader = writer = None
        while True:
            if nxt >= args.count:
                break
            i = nxt
            nxt += 1
            target = f"{args.prefix}{i}{args.suffix}"
            for attempt in range(3):
                try:
                    if writer is None:
                        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
                    writer.write(request_bytes(host, port, target))
                    await writer.drain()
                    status, _, _, keep = await asyncio.wait_for(read_response(reader), 30)
                    if 200 <= status < 300:
                        ok += 1
                    else:
                        non2xx += 1
                    if not keep:
                        writer.close()
                        reader = writer = None
                    break
                except Exception:  # noqa: BLE001
                    if writer is not None:
                        writer.close()
                    reader = writer = None
                    if attempt == 2:
                        errors += 1
            done_n += 1
        if writer is not None:
            writer.close()

    t0 = time.perf_counter()
    tasks = [asyncio.ensure_future(worker()) for _ in range(args.conc)]
    _, pending = await asyncio.wait(tasks, timeout=args.timeout)
    for t in pending:
        t.cancel()
    secs = time.perf_counter() - t0
    print(json.dumps({"requests": done_n, "ok": ok, "non_2xx": non2xx, "errors": errors,
                      "timed_out": bool(pending), "seconds": round(secs, 3),
                      "rps": round(done_n / secs, 1) if secs > 0 else None}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("burst")
    b.add_argument("--url", required=True)
    b.add_argument("--n", type=int, default=200)
    b.add_argument("--timeout", type=float, default=30)
    f = sub.add_parser("fill")
    f.add_argument("--base", required=True)
    f.add_argument("--prefix", required=True)
    f.add_argument("--suffix", default="")
    f.add_argument("--count", type=int, required=True)
    f.add_argument("--conc", type=int, default=32)
    f.add_argument("--timeout", type=float, default=120)
    args = ap.parse_args()
    asyncio.run(burst(args) if args.cmd == "burst" else fill(args))


if __name__ == "__main__":
    sys.exit(main())
