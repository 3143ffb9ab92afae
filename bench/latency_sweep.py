"""Latency against offered load, from 1,000 jobs/s to saturation: the Kafka
path (Python client), the direct path (no Kafka) and the same pipeline in
pure Python, side by side in one run on this machine; writes
bench/results/latency.md, .json and .png.

Run: `make bench-latency` (or `.venv/bin/python bench/latency_sweep.py`).

Each row is started as `bench/pipeline_bench.py` starts it (same components,
2 worker processes, every component colocated), its saturation throughput
measured first (N jobs as fast as the front door takes them); then no-op jobs
are offered at each rate of the sweep for `--seconds`, from 1,000/s up to the
saturation rate, and the enqueue-to-finish p50/p99 read. The last point of a
row is its measured saturation rate itself: the knee where a queue forms.
A rate the front door cannot offer (achieved < 90% of offered) ends the row.
Every load loop is bounded in jobs and in seconds; all traffic is loopback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import pipeline_bench as pb  # noqa: E402 - bench/ is put on the path just above
from bench_topics import delete_new_topics_at_exit  # noqa: E402
from conveyor.devservers import DevServers  # noqa: E402

#: The three paths the sweep compares (names as pipeline_bench gives them).
ROWS = (
    "Conveyor: Python client > Kafka > relay > workers",
    "Conveyor: direct to Redis > workers",
    "pure Python: confluent-kafka > Python relay > Python worker",
)
#: Offered rates tried below each row's saturation.
RATES = (1_000, 2_000, 5_000, 10_000, 20_000, 40_000, 60_000, 80_000, 120_000, 160_000)


def sweep(
    pipe: pb.Pipeline, env: pb.Env, client: redis.Redis, seconds: float, up_to: int | None
) -> dict[str, Any]:
    """One row: saturation throughput, then latency at each offered rate."""
    print(f"  {pipe.name}", flush=True)
    running = pb.start(pipe, env)
    row: dict[str, Any] = {"pipeline": pipe.name, "points": []}
    try:
        producer = pipe.producer(env)
        producer.send([0.0] * 200)
        producer.close()
        if not pb.wait_counted(client, env.run, 100, 90, running):
            raise RuntimeError("no job came through within 90 s")
        time.sleep(1.0)
        saturation = pb.throughput(pipe, producer, env, client, running)["jobs_per_s"]
        row["saturation_per_s"] = saturation
        print(f"    saturation: {saturation:,.0f} jobs/s", flush=True)
        rates = [r for r in RATES if r < saturation * 0.95] + [int(saturation)]
        for offered in [r for r in rates if up_to is None or r <= up_to]:
            got = pb.latency(producer, env, client, running, offered=offered, seconds=seconds)
            row["points"].append({"offered_per_s": offered, **got})
            print(f"    {pb.point_line(offered, got)}", flush=True)
            if got["achieved_per_s"] < offered * 0.9:
                print("    the front door cannot offer more: row ends", flush=True)
                break
    finally:
        running.stop()
    return row


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"Latency against offered load, {meta['when']}, {meta['cores']} cores, every component "
        f"colocated, {meta['seconds']:.0f} s per point (`{meta['command']}`). "
        "Enqueue to finish of a no-op job, p50 / p99 ms; the last point of each row is its "
        "saturation rate.",
        "",
        "| offered jobs/s | " + " | ".join(r["pipeline"] for r in rows) + " |",
        "|---:|" + "---:|" * len(rows),
    ]
    offered = sorted({p["offered_per_s"] for r in rows for p in r["points"]})
    for rate in offered:
        cells = []
        for r in rows:
            p = next((p for p in r["points"] if p["offered_per_s"] == rate), None)
            cells.append(f"{p['p50_ms']:.1f} / {p['p99_ms']:.1f}" if p else "")
        lines.append(f"| {rate:,} | " + " | ".join(cells) + " |")
    lines.append(
        "| saturation | "
        + " | ".join(f"{r.get('saturation_per_s', float('nan')):,.0f} jobs/s" for r in rows)
        + " |"
    )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 6))
    for r, color in zip(rows, ("#3b6ea8", "#4f9d69", "#c4663a"), strict=False):
        xs = [p["offered_per_s"] for p in r["points"]]
        ax.plot(
            xs, [p["p50_ms"] for p in r["points"]], "o-", color=color, label=f"{r['pipeline']}, p50"
        )
        ax.plot(xs, [p["p99_ms"] for p in r["points"]], "s--", color=color, label="p99")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered jobs/s (log); each row's last point is its saturation rate")
    ax.set_ylabel("enqueue to finish, ms (log)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=200_000, help="jobs of each saturation run")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each point")
    parser.add_argument("--only", help="run only rows whose name contains this")
    parser.add_argument("--up-to", type=int, help="offer no more than this many jobs/s")
    args = parser.parse_args()
    servers = DevServers.default()
    servers.up()
    delete_new_topics_at_exit(servers.kafka.bootstrap)
    client = redis.Redis.from_url(servers.redis.url)
    rows = []
    for name in ROWS:
        if args.only and args.only.lower() not in name.lower():
            continue
        run = f"ls{uuid.uuid4().hex[:6]}"
        with pb.socket_port() as port:
            env = pb.Env(servers.kafka.bootstrap, servers.redis.url, run, port)
        pipe = next(p for p in pb.pipelines(env, min(args.jobs, 2_000_000), 0) if p.name == name)
        rows.append(sweep(pipe, env, client, args.seconds, args.up_to))
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cores": os.cpu_count(),
        "seconds": args.seconds,
        "command": "make bench-latency",
    }
    stem = "latency-only" if args.only or args.up_to else "latency"
    pb.write_results(stem, render(rows, meta), {**meta, "rows": rows})
    plot(rows, pb.RESULTS / f"{stem}.png")
    print(f"plot: {pb.RESULTS / stem}.png")


if __name__ == "__main__":
    main()
