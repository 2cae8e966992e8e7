#!/usr/bin/env python3
"""Splits a callgrind profile's instructions by crate (self cost), per request.

Usage: benches/profile-split.py PROFILE [REQUESTS]   (a profile kept by `KEEP=DIR benches/overhead.sh`)
Seawall's own code is `seawall`; hyper, h2, httparse and http are the HTTP library; the
allocator, libc (memcpy of moved futures and buffers) and the kernel interface are shown apart.
"""
import re
import subprocess
import sys
from collections import Counter

GROUPS = [
    ("seawall", re.compile(r"^(?!.*(/registry/|/rustc/|/rust/deps/))[^:]*/src/[^:]*\.rs:")),
    ("hyper (server+client)", re.compile(r"/(hyper|hyper-util)-\d")),
    ("http/httparse", re.compile(r"/(http|httparse|http-body|http-body-util)-\d")),
    ("tokio", re.compile(r"/(tokio|tokio-util|mio)-\d")),
    ("allocator (mimalloc)", re.compile(r"mimalloc")),
    ("memcpy/memmove (libc)", re.compile(r"memmove|memcpy")),
    ("other libc/kernel", re.compile(r"libc\.so|ld-linux|vdso|sysdeps")),
    ("metrics (prometheus)", re.compile(r"/prometheus-\d")),
    ("tracing", re.compile(r"/tracing(-core|-opentelemetry|-subscriber)?-\d")),
    ("rust std/core/alloc", re.compile(r"/rustc/|/rust/deps/")),
]


def main() -> None:
    path = sys.argv[1]
    requests = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    out = subprocess.run(
        ["callgrind_annotate", "--threshold=100", "--auto=no", path],
        capture_output=True, text=True, check=True,
    ).stdout
    totals: Counter = Counter()
    program = 0
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(.*)", line)
        if not m:
            continue
        n = int(m.group(1).replace(",", ""))
        where = m.group(2)
        if "PROGRAM TOTALS" in where:
            program = n
            continue
        # Frames still on a thread's stack when the profile was dumped (its start, the
        # runtime's loop) carry the whole total: they are not self cost.
        if n == program:
            continue
        file, _, func = where.partition(":")
        if "/rustc/" in file or "/rust/deps/" in file:
            # std code inlined into a crate's function counts for that crate: name the
            # function's crate as if it were the file.
            m = re.match(r"<*([A-Za-z_][A-Za-z0-9_]*)::", func)
            crate = m.group(1).replace("_", "-") if m else "std"
            where = f"/{crate}-0/src/x.rs:" if crate != "seawall" else "/src/x.rs:"
            if crate in ("core", "alloc", "std", "hashbrown"):
                where = "/rustc/std"
        for name, rx in GROUPS:
            if rx.search(where):
                # The file is the crate's; `[binary]` only says where it was linked.
                totals[name] += n
                break
        else:
            totals["other crates"] += n
    print(f"{'part':28} {'instr/request':>14} {'share':>7}")
    for name, n in totals.most_common():
        print(f"{name:28} {n // requests:>14,} {100 * n / max(program, 1):>6.1f}%")
    print(f"{'total':28} {program // requests:>14,}")


if __name__ == "__main__":
    main()
