"""Envelope encode+decode: the Rust core against the same format in pure Python.

Run: `make bench` (or `.venv/bin/python bench/envelope_bench.py [--count N]`).
Prints a table; ratios are measured side by side in one run, the figure to
compare on a noisy 2-core machine. Not part of the test run.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable

import conveyor
import pure_envelope


def _jobs(count: int) -> list[conveyor.Envelope]:
    return [
        conveyor.Envelope(
            "notify.push",
            json.dumps({"user": i, "text": "You have new messages", "badge": i % 9}).encode(),
            dedup_key=f"user-{i}" if i % 4 == 0 else None,
            trace_context="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            stages=[(1, 1_700_000_000_000_000 + i)],
        )
        for i in range(count)
    ]


def _best_of(runs: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=100_000, help="envelopes per run")
    parser.add_argument("--runs", type=int, default=5, help="runs per variant (best is kept)")
    args = parser.parse_args()
    count = args.count
    envs = _jobs(count)
    encoded = [e.encode() for e in envs]
    py_envs = [pure_envelope.decode(b) for b in encoded]
    assert [p.encode() for p in py_envs] == encoded, "pure Python must write the same bytes"

    variants: dict[str, Callable[[], object]] = {
        "pure Python (struct), one call per job": lambda: [
            pure_envelope.decode(p.encode()) for p in py_envs
        ],
        "Rust core, one call per job": lambda: [conveyor.Envelope.decode(e.encode()) for e in envs],
        "Rust core, one call per batch": lambda: conveyor.decode_many(conveyor.encode_many(envs)),
    }
    print(
        f"encode+decode of {count:,} envelopes ({statistics.mean(map(len, encoded)):.0f} "
        f"bytes each), best of {args.runs} runs, Python {sys.version.split()[0]}"
    )
    results: dict[str, float] = {}
    for name, fn in variants.items():
        results[name] = _best_of(args.runs, fn)
        print(f"  measured: {name}", flush=True)
    base = results["pure Python (struct), one call per job"]
    print("\n| variant | seconds | envelopes/s | speed-up vs pure Python |")
    print("|---|---:|---:|---:|")
    for name, seconds in results.items():
        print(f"| {name} | {seconds:.3f} | {count / seconds:,.0f} | {base / seconds:.1f}x |")


if __name__ == "__main__":
    main()
