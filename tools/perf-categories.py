#!/usr/bin/env python3
"""Groups a `perf record` profile's self samples by what the code does (ed25519, hashing,
sled, tally-log, allocation, HTTP stack, JSON/base64/hex, tracing, kernel), per thread name.

Usage: perf script -i FILE -F comm,ip,sym,dso | python3 tools/perf-categories.py
(BENCHMARKS.md, "Lanes (protocol v2)", uses it on tally-bench's TALLY_BENCH_PERF output).
"""
import re
import sys
from collections import Counter

CATEGORIES = [
    ("ed25519 (curve25519, sha512)", r"curve25519|ed25519|sha512|sha2::|scalar|FieldElement|EdwardsPoint|subtle::"),
    ("blake3", r"blake3"),
    ("sled", r"sled::|crossbeam_epoch|crossbeam"),
    ("tally-log", r"tally_log::"),
    ("JSON / base64 / hex", r"serde_json|serde::|base64|hex::|from_str|Deserialize|Serialize"),
    ("tracing", r"tracing"),
    ("allocation / memcpy", r"malloc|free|_int_|memmove|memcpy|memset|memcmp|realloc|unlink_chunk|alloc::|drop_in_place|clone"),
    ("HTTP (hyper, http, axum, reqwest, tower)", r"hyper|http::|axum|reqwest|tower|h2::|httparse|HeaderMap"),
    ("tokio runtime", r"tokio::|parking_lot|mio::|futures"),
    ("tally (server, client, core, http)", r"tally_"),
]


def category(sym: str, kernel: bool) -> str:
    if kernel:
        return "kernel"
    for name, pattern in CATEGORIES:
        if re.search(pattern, sym):
            return name
    return "other user space"


def main() -> None:
    by_cat = Counter()
    by_thread = Counter()
    total = 0
    for line in sys.stdin:
        parts = line.split()
        if len(parts) < 3:
            continue
        comm = re.sub(r"[-\d]+$", "", parts[0])
        dso = parts[-1]
        sym = " ".join(parts[2:-1])
        kernel = "kernel" in dso or dso.startswith("([k")
        by_cat[category(sym, kernel)] += 1
        by_thread[comm] += 1
        total += 1
    if total == 0:
        print("no samples")
        return
    print(f"{total} samples")
    for name, n in by_cat.most_common():
        print(f"  {100 * n / total:5.1f}%  {name}")
    print("by thread:")
    for name, n in by_thread.most_common():
        print(f"  {100 * n / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
