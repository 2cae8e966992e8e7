#!/usr/bin/env python3
"""Results helper for benches/e2e/run.sh (standard library only).

  report.py emit key=value ... [@name=JSON]   one JSON line on stdout (numbers parsed;
                                              @name=JSON nests a JSON object under "name")
  report.py brief WRKJSON                     one-line summary of a wrk result
  report.py report RUN_DIR                    Markdown report from RUN_DIR/results.jsonl
                                              and RUN_DIR/meta.json
"""
import json
import os
import re
import statistics
import sys

NUM = re.compile(r"^-?\d+(\.\d+)?$")
ANCHORS = ["nginx", "varnish"]
ORDER = ["ceiling", "seawall", "nginx", "varnish"]


def emit(args):
    d = {}
    for a in args:
        k, _, v = a.partition("=")
        if k.startswith("@"):
            try:
                d[k[1:]] = json.loads(v) if v.strip() else None
            except json.JSONDecodeError:
                d[k[1:]] = {"unparsed": v}
        elif v == "":
            d[k] = None
        elif NUM.match(v) and not (len(v) > 1 and v.startswith("0") and "." not in v):
            d[k] = float(v) if "." in v else int(v)
        else:
            d[k] = v
    print(json.dumps(d))


def wrk_numbers(r):
    w = r.get("wrk") or {}
    req = w.get("requests") or 0
    dur = (w.get("duration_us") or 0) / 1e6
    tck = r.get("clk_tck") or 100
    errors = sum(w.get(k, 0) for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
    cpu_s = (r.get("cpu_ticks") or 0) / tck
    ours = (r.get("cpu_ticks") or 0) + (r.get("origin_cpu_ticks") or 0) + (r.get("loadgen_ticks") or 0)
    wall_s = (r.get("wall_ns") or 0) / 1e9
    cap = wall_s * tck * (r.get("ncpu") or 1)
    foreign = max(0.0, ((r.get("machine_busy_ticks") or 0) - ours) / cap * 100) if cap > 0 else None
    return {
        "rps": req / dur if dur > 0 and req else None,
        "p50_ms": w["p50_us"] / 1000 if req and "p50_us" in w else None,
        "p99_ms": w["p99_us"] / 1000 if req and "p99_us" in w else None,
        "p999_ms": w["p999_us"] / 1000 if req and "p999_us" in w else None,
        "cpu_us": cpu_s * 1e6 / req if req else None,
        "requests": req,
        "errors": errors,
        "upstream": r.get("upstream"),
        "foreign_pct": foreign,
    }


def brief(arg):
    try:
        w = json.loads(arg)
    except json.JSONDecodeError:
        w = {}
    n = wrk_numbers({"wrk": w})
    if not n["rps"]:
        print("no result")
        return
    print(f"{n['rps']:.0f} req/s, p50 {n['p50_ms']:.2f} ms, p99 {n['p99_ms']:.2f} ms, errors {n['errors']}")


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, kind="num"):
    if v is None:
        return "n/a"
    if kind == "int":
        return f"{v:,.0f}"
    if kind == "ms":
        return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:,.0f}"
    if kind == "us":
        return f"{v:.1f}" if v < 100 else f"{v:,.0f}"
    if kind == "x":
        return f"{v:.2f}×"
    if kind == "pct":
        return f"{v:.0f}"
    if isinstance(v, float):
        return f"{v:,.1f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def report(run_dir):
    meta = json.load(open(os.path.join(run_dir, "meta.json")))
    recs = [json.loads(line) for line in open(os.path.join(run_dir, "results.jsonl")) if line.strip()]
    targets = [t for t in ORDER if t == "ceiling" or t in meta.get("targets", "").split()]
    out = []
    p = out.append
    p(f"# Seawall end-to-end benchmark — {meta['stamp']}")
    p("")
    p(f"- **Command:** `{meta['cmdline']}`")
    p(f"- **Machine:** {meta['nproc']} CPUs, {meta['cpu_model']}, kernel {meta['kernel']}, {meta.get('os') or ''}")
    p(f"- **Pinning:** PIN={meta['pin']} — load generator CPUs: {meta['load_cpus']}, proxies + ceiling: "
      f"{meta['proxy_cpus']}, origins: {meta['origin_cpus']}; Seawall worker_threads={meta['seawall_threads']} "
      f"(0 = one per CPU), nginx worker_processes={meta['proxy_workers']}")
    p(f"- **Load:** wrk -t{meta['threads']} -c{meta['conns']} -d{meta['duration']}s, {meta['rounds']} interleaved "
      f"round(s) (order rotated each round), medians reported; {meta['warmup']} s unmeasured warm-up per hit target")
    p(f"- **Versions:** {meta['v_seawall']}; {meta['v_nginx']}; {meta['v_varnish']}; {meta['v_wrk']}")
    p("")
    reduced = []
    if meta["duration"] < 10:
        reduced.append(f"DURATION={meta['duration']} s")
    if meta["rounds"] < 3:
        reduced.append(f"ROUNDS={meta['rounds']}")
    if meta["mem_objects"] < 10000:
        reduced.append(f"MEM_OBJECTS={meta['mem_objects']}")
    if meta["purge_objects"] < 100000:
        reduced.append(f"PURGE_OBJECTS={meta['purge_objects']}")
    if reduced:
        p(f"> **Smoke settings ({', '.join(reduced)}): these numbers check that every section works; "
          "they are not a measurement.**")
        p("")

    wrk = {}
    for r in recs:
        if r.get("kind") == "wrk":
            wrk.setdefault((r["scenario"], r["target"]), []).append(wrk_numbers(r))
    bursts = {}
    for r in recs:
        if r.get("kind") == "burst":
            bursts.setdefault(r["target"], []).append(r)
    mem = {r["target"]: r for r in recs if r.get("kind") == "memory"}
    purge = {(r["target"], r["method"]): r for r in recs if r.get("kind") == "purge"}

    def wmed(scen, t, key):
        rows = wrk.get((scen, t))
        return med([x[key] for x in rows]) if rows else None

    # ---------------------------------------------------------------- summary table
    rows = []  # (label, better, {target: value}, kind)
    scen_names = {"hit-1k": "hit 1 KiB", "hit-64k": "hit 64 KiB", "pass-unique": "pass, unique URLs",
                  "pass-same": "pass, one URL"}
    for scen, name in scen_names.items():
        if not any(s == scen for s, _ in wrk):
            continue
        rows.append((f"{name}: req/s", "↑", {t: wmed(scen, t, "rps") for t in targets}, "int"))
        rows.append((f"{name}: p50 ms", "↓", {t: wmed(scen, t, "p50_ms") for t in targets}, "ms"))
        rows.append((f"{name}: p99 ms", "↓", {t: wmed(scen, t, "p99_ms") for t in targets}, "ms"))
        rows.append((f"{name}: CPU µs/req", "↓", {t: wmed(scen, t, "cpu_us") for t in targets}, "us"))
    if bursts:
        def bmed(t, f):
            return med([f(r) for r in bursts.get(t, [])]) if t in bursts else None
        rows.append((f"cold burst ×{meta['burst_n']}: origin requests", "↓",
                     {t: bmed(t, lambda r: r.get("origin_hits")) for t in targets}, "int"))
        rows.append(("cold burst: client p50 ms", "↓",
                      {t: bmed(t, lambda r: (r.get("burst") or {}).get("p50_ms")) for t in targets}, "ms"))
        rows.append(("cold burst: client p99 ms", "↓",
                      {t: bmed(t, lambda r: (r.get("burst") or {}).get("p99_ms")) for t in targets}, "ms"))
    if mem:
        rows.append((f"RSS after {meta['mem_objects']:,} × {meta['mem_size']} B objects, MiB", "↓",
                     {t: mem[t]["rss_after_kb"] / 1024 if t in mem else None for t in targets}, "num"))
        rows.append(("RSS growth per object, bytes", "↓",
                     {t: (mem[t]["rss_after_kb"] - mem[t]["rss_fresh_kb"]) * 1024 / mem[t]["objects"]
                      if t in mem else None for t in targets}, "int"))
        rows.append(("RSS growth + cache files per object, bytes", "↓",
                     {t: (mem[t]["rss_after_kb"] - mem[t]["rss_fresh_kb"] + (mem[t].get("disk_cache_kb") or 0))
                      * 1024 / mem[t]["objects"] if t in mem else None for t in targets}, "int"))
    for method in ("prefix", "tag"):
        if any(m == method for _, m in purge):
            rows.append((f"purge by {method} among {meta['purge_objects']:,}: ms", "↓",
                         {t: (purge[(t, method)]["call_us"] / 1000
                              if (t, method) in purge and purge[(t, method)].get("call_us") is not None else None)
                          for t in targets}, "ms"))

    p("## Summary")
    p("")
    p("Medians over rounds. ↑ = higher is better, ↓ = lower is better. *Seawall / best anchor* divides "
      "Seawall's number by the better of nginx and Varnish for that row; *Seawall / ceiling* by the origin "
      "nginx serving the same bytes directly (hit and pass rows only).")
    p("")
    hdr = ["metric", ""] + targets + ["Seawall / best anchor", "Seawall / ceiling"]
    p("| " + " | ".join(hdr) + " |")
    p("|" + "|".join(["---", ":-:"] + ["--:"] * (len(targets) + 2)) + "|")
    for label, better, vals, kind in rows:
        anchors = [vals.get(a) for a in ANCHORS if vals.get(a) is not None]
        best = (max(anchors) if better == "↑" else min(anchors)) if anchors else None
        sw = vals.get("seawall")
        cells = [label, better] + [fmt(vals.get(t), kind) for t in targets]
        cells.append(fmt(ratio(sw, best), "x"))
        cells.append(fmt(ratio(sw, vals.get("ceiling")), "x"))
        p("| " + " | ".join(cells) + " |")
    p("")

    # ---------------------------------------------------------------- wrk detail
    if wrk:
        p("## Load runs (wrk)")
        p("")
        p("Per target: median (min–max over rounds). *origin req/run*: requests that reached the origin "
          "during the run (0 expected on the hit path, ≈ requests on the pass path). *foreign CPU*: machine "
          "CPU used by processes outside this benchmark during the run, % of all CPUs (noise).")
        for scen, name in scen_names.items():
            if not any(s == scen for s, _ in wrk):
                continue
            p("")
            p(f"### {name}")
            p("")
            p("| target | req/s | p50 ms | p99 ms | p99.9 ms | CPU µs/req | origin req/run | errors | foreign CPU % | req/s per round |")
            p("|---|--:|--:|--:|--:|--:|--:|--:|--:|---|")
            for t in targets:
                rs = wrk.get((scen, t))
                if not rs:
                    continue
                rps = [x["rps"] for x in rs if x["rps"] is not None]
                span = f" ({fmt(min(rps), 'int')}–{fmt(max(rps), 'int')})" if len(rps) > 1 else ""
                p(f"| {t} | {fmt(med(rps), 'int')}{span} | {fmt(med([x['p50_ms'] for x in rs]), 'ms')} | "
                  f"{fmt(med([x['p99_ms'] for x in rs]), 'ms')} | {fmt(med([x['p999_ms'] for x in rs]), 'ms')} | "
                  f"{fmt(med([x['cpu_us'] for x in rs]), 'us')} | {fmt(med([x['upstream'] for x in rs]), 'int')} | "
                  f"{sum(x['errors'] for x in rs)} | {fmt(max([x['foreign_pct'] or 0 for x in rs]), 'pct')} | "
                  f"{', '.join(fmt(x['rps'], 'int') for x in rs)} |")
        p("")

    if bursts:
        p(f"## Cold burst: {meta['burst_n']} clients, one cold key, origin sleeps {meta['burst_delay_ms']} ms")
        p("")
        p("Connections are opened first, then all requests are released at once. *origin requests*: hits "
          "counted at the slow origin for that key (1 = fully collapsed). *distinct responses*: different "
          "`X-Origin-Seq` values the clients received.")
        p("")
        p("| target | origin requests (per round) | ok | errors | distinct responses | p50 ms | p99 ms | max ms |")
        p("|---|---|--:|--:|--:|--:|--:|--:|")
        for t in targets:
            rs = bursts.get(t)
            if not rs:
                continue
            b = [r.get("burst") or {} for r in rs]
            p(f"| {t} | {', '.join(str(r.get('origin_hits')) for r in rs)} | "
              f"{sum(x.get('ok', 0) for x in b)} | {sum(x.get('errors', 0) for x in b)} | "
              f"{', '.join(str(x.get('distinct_origin_seq', '?')) for x in b)} | "
              f"{fmt(med([x.get('p50_ms') for x in b]), 'ms')} | {fmt(med([x.get('p99_ms') for x in b]), 'ms')} | "
              f"{fmt(med([x.get('max_ms') for x in b]), 'ms')} |")
        p("")

    if mem:
        p(f"## Memory: {meta['mem_objects']:,} distinct {meta['mem_size']}-byte objects into a fresh proxy")
        p("")
        p("RSS = VmRSS summed over the proxy's processes (/proc/PID/status), 1 s after the fill. nginx keeps "
          "cached bodies in files (here on tmpfs): those pages are not in its RSS, see *disk cache*.")
        p("")
        p("| target | RSS fresh MiB | RSS after MiB | growth MiB | growth B/object | objects fetched from origin | entries in cache | disk cache MiB | fill req/s |")
        p("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
        for t in targets:
            m = mem.get(t)
            if not m:
                continue
            g = m["rss_after_kb"] - m["rss_fresh_kb"]
            f = m.get("fill") or {}
            p(f"| {t} | {m['rss_fresh_kb'] / 1024:.1f} | {m['rss_after_kb'] / 1024:.1f} | {g / 1024:.1f} | "
              f"{fmt(g * 1024 / m['objects'], 'int')} | {fmt(m.get('upstream'), 'int')} | "
              f"{fmt(m.get('cache_entries'), 'int')} | {m.get('disk_cache_kb', 0) / 1024:.1f} | {fmt(f.get('rps'), 'int')} |")
        p("")

    if purge:
        p(f"## Purge among {meta['purge_objects']:,} objects")
        p("")
        p("Fresh proxy; the objects `/p/0 … /p/N-1` carry `Surrogate-Key: t`. Seawall: `POST /admin/cache/purge` "
          "`{\"prefix\":\"/p/\"}` / `{\"tag\":\"t\"}` (synchronous: entries are gone when it returns). Varnish: "
          "`varnishadm ban req.url ~ ^/p/` / `ban obj.http.Surrogate-Key ~ (^|[[:space:]])t($|[[:space:]])` "
          "(lazy: the call only records the ban; objects are tested on their next lookup or by the ban "
          "lurker, memory is freed later). Time = wall time of the call, client included. The tag purge "
          "runs after a refill of the same objects.")
        p("")
        p("| target | method | time ms | same client, no-op call ms | entries before → after | next GET /p/1 X-Cache | fill req/s | answer / note |")
        p("|---|---|--:|--:|---|---|--:|---|")
        for t in targets:
            for method in ("prefix", "tag"):
                r = purge.get((t, method))
                if not r:
                    continue
                ms = r["call_us"] / 1000 if r.get("call_us") is not None else None
                ent = (f"{r.get('entries_before')} → {r.get('entries_after')}"
                       if r.get("entries_before") is not None else "n/a")
                f = r.get("fill") or {}
                note = (r.get("note") or r.get("response") or "").strip().replace("|", "\\|")
                noop = r["noop_us"] / 1000 if r.get("noop_us") is not None else None
                p(f"| {t} | {method} | {fmt(ms, 'ms')} | {fmt(noop, 'ms')} | {ent} | {r.get('x_cache_after') or 'n/a'} | "
                  f"{fmt(f.get('rps'), 'int')} | {note[:120]} |")
        p("")

    p("## Reading the numbers")
    p("")
    p("- Compare targets inside one run (they are interleaved); absolute req/s move with the machine. "
      "CPU µs/request of the proxy is less sensitive to contention than req/s.")
    p("- On 2 CPUs the load generator competes with the proxy (unpinned) or saturates its own CPU "
      "(pinned, fastest targets), so req/s ratios to the ceiling understate differences.")
    p("- The ceiling is the origin nginx serving the files directly (sendfile, open_file_cache), not a "
      "minimal server: a proxy answering from memory can beat it (ratio above 1×).")
    p("- nginx's `proxy_cache_lock on` (needed to collapse the cold burst) serialises requests for one "
      "*uncacheable* URL (pass, one URL), as in the shared anchor configuration; Varnish marks such a URL "
      "hit-for-miss (builtin VCL).")
    p("- Cold burst: more than 1 origin request means the proxy let part of the burst through; for "
      "Seawall its coalescing counters after each burst are in `<stamp>/logs/burst.seawall.r*.metrics`.")
    p("- A foreign-CPU figure above ~10 % means other work on the machine disturbed that run.")
    p("")
    return "\n".join(out)


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    cmd = sys.argv[1]
    if cmd == "emit":
        emit(sys.argv[2:])
    elif cmd == "brief":
        brief(sys.argv[2] if len(sys.argv) > 2 else "{}")
    elif cmd == "report":
        print(report(sys.argv[2]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
