"""Workers: no-op jobs/s and enqueue-to-start latency, Conveyor against a
pure-Python worker and the peers (Dramatiq, Celery, RQ) on the same Redis, in
one run; and Conveyor's fetch rate with 1,000 and with 5,000,000 jobs queued.

Run: `make bench-worker` (or `.venv/bin/python bench/worker_bench.py`; the
peers come from requirements-bench.txt).

Every system runs 2 worker processes on this machine, with a no-op handler
that counts (bench/peers/record.py: one Redis call per 100 jobs, the same for
all). Throughput: N jobs are queued first, the workers start, and the rate is
taken between 10% and 90% done (start-up and tail excluded). Latency: jobs
are offered at a fixed rate, each carrying its send time; the handler records
now minus that. Every phase is bounded in jobs and in seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

import conveyor
from conveyor import _core
from conveyor.devservers import DevServers

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


@dataclass
class System:
    """One queue implementation under test."""

    name: str
    #: Commands that start its 2 worker processes (one or two commands).
    commands: list[list[str]]
    #: Module in bench/peers with `enqueue(sent_times)`.
    module: str
    #: Queued jobs for the throughput run (peers enqueue slowly).
    jobs: int


def systems(redis_url: str, run: str, jobs: int, peer_jobs: int) -> list[System]:
    py = sys.executable
    conveyor_cmd = [py, "-m", "conveyor", "worker", "peers.conveyor_app:app", "--no-setup"]
    dramatiq_cmd = [py, "-m", "dramatiq", "peers.dramatiq_app", "-p", "2", "-t", "8"]
    celery_cmd = [py, "-m", "celery", "-A", "peers.celery_app", "worker", "-c", "2"]
    rq_cmd = [py, "-m", "rq.cli", "worker", "-u", redis_url, "-w", "rq.worker.SimpleWorker"]
    return [
        System(
            "Conveyor (Rust core), 2 processes x 4 threads",
            [[*conveyor_cmd, "--processes", "2", "--threads", "4", "--report-every", "0"]],
            "conveyor_app",
            jobs,
        ),
        System(
            "pure Python (redis-py, same Lua scripts), 2 processes",
            [[py, "-m", "peers.pure_worker"]] * 2,
            "conveyor_app",
            jobs,
        ),
        System(
            "Dramatiq 2.2, 2 processes x 8 threads",
            [[*dramatiq_cmd, "--skip-logging"]],
            "dramatiq_app",
            peer_jobs,
        ),
        System(
            "Celery 5.7, prefork -c 2",
            [[*celery_cmd, "--without-gossip", "--without-mingle", "--without-heartbeat"]],
            "celery_app",
            peer_jobs,
        ),
        System(
            "RQ 3.0, 2 SimpleWorker processes",
            [[*rq_cmd, "-q", f"rq-{run}"]] * 2,
            "rq_app",
            peer_jobs,
        ),
    ]


def load(module: str) -> Callable[[list[float]], None]:
    mod = __import__(f"peers.{module}", fromlist=["enqueue"])
    enqueue: Callable[[list[float]], None] = mod.enqueue
    return enqueue


def start(system: System, env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(cmd, cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for cmd in system.commands
    ]


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def done(client: redis.Redis, run: str) -> int:
    return int(client.get(f"bench:{run}:done") or 0)


def throughput(system: System, env: dict[str, str], client: redis.Redis, run: str) -> float:
    enqueue = load(system.module)
    n = system.jobs
    for i in range(0, n, 10_000):
        enqueue([0.0] * min(10_000, n - i))
        print(f"\r    queueing {min(i + 10_000, n):,}/{n:,}", end="", flush=True)
    print()
    client.delete(f"bench:{run}:done")
    procs = start(system, env)
    t10 = t90 = None
    deadline = time.monotonic() + 60 + n / 1000
    try:
        while time.monotonic() < deadline:
            count = done(client, run)
            now = time.monotonic()
            if t10 is None and count >= n * 0.1:
                t10, c10 = now, count
            if t90 is None and count >= n * 0.9:
                t90, c90 = now, count
            # Run to the end (each process may hold back < 100 uncounted), so
            # no leftovers sit in front of the next measurement.
            if count >= n - 200:
                break
            if any(p.poll() is not None for p in procs):
                err = b"".join(p.stderr.read() for p in procs if p.stderr)
                raise RuntimeError(f"{system.name} exited: {err.decode()[-2000:]}")
            time.sleep(0.01)
    finally:
        stop(procs)
    if t10 is None or t90 is None:
        return float("nan")
    return (c90 - c10) / (t90 - t10)


def quiesce(client: redis.Redis) -> None:
    """Let Redis settle after a big run: compact its append-only file now, so
    a rewrite or a long fsync of the last run's writes does not land inside
    the next latency measurement."""
    with contextlib.suppress(redis.ResponseError):  # one is running already
        client.bgrewriteaof()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        info = client.info("persistence")
        if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
            break
        time.sleep(0.1)
    time.sleep(1.0)


def latency(
    system: System,
    env: dict[str, str],
    client: redis.Redis,
    run: str,
    *,
    rate: int,
    seconds: float,
) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, offered jobs/s achieved) at `rate` jobs/s offered."""
    enqueue = load(system.module)
    client.delete(f"bench:{run}:done", f"bench:{run}:latency")
    procs = start(system, env)
    try:
        # Warm up: the workers are up when jobs come back.
        enqueue([0.0] * 200)
        deadline = time.monotonic() + 60
        while done(client, run) < 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        client.delete(f"bench:{run}:latency")
        base = done(client, run)
        tick = 0.01
        per_tick = max(1, round(rate * tick))
        total = int(rate * seconds)
        sent = 0
        began = time.monotonic()
        while sent < total:
            target = began + (sent // per_tick) * tick
            pause = target - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            n = min(per_tick, total - sent)
            enqueue([time.time()] * n)
            sent += n
        offered = sent / (time.monotonic() - began)
        deadline = time.monotonic() + 30
        while done(client, run) < base + sent - 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        stop(procs)
    samples = sorted(float(x) for x in client.lrange(f"bench:{run}:latency", 0, -1))
    if len(samples) < 100:
        return float("nan"), float("nan"), offered
    p50 = samples[len(samples) // 2] * 1000
    p99 = samples[int(len(samples) * 0.99)] * 1000
    return p50, p99, offered


def fetch_rate(redis_url: str, depth: int, fetches: int) -> float:
    """Conveyor fetch+settle jobs/s (batches of 100) with `depth` jobs queued."""
    ns = f"depth{uuid.uuid4().hex[:6]}"
    store = _core.RedisStore(redis_url)
    job = conveyor.Envelope("bench.noop", _core.encode_call([0.0], {})).encode()
    for i in range(0, depth, 5000):
        store.admit(ns, "default", [job] * min(5000, depth - i))
        if i % 500_000 == 0:
            print(f"\r    queueing {i:,}/{depth:,}", end="", flush=True)
    print(f"\r    {depth:,} jobs queued          ")
    wq = _core.WorkQueues(redis_url, ns, [("default", 1)])
    spent = 0.0
    for _ in range(fetches):
        began = time.perf_counter()
        batch = wq.fetch(100)
        assert batch is not None
        wq.settle(batch, [time.time()] * len(batch), {})
        spent += time.perf_counter() - began
        store.admit(ns, "default", [job] * 100)  # keep the depth; not timed
    store.purge(ns, "default")
    return fetches * 100 / spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--jobs", type=int, default=300_000, help="queued for Conveyor and pure Python"
    )
    parser.add_argument("--peer-jobs", type=int, default=30_000, help="queued for each peer")
    parser.add_argument("--rate", type=int, default=5000, help="offered jobs/s for latency")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the latency run")
    parser.add_argument("--deep", type=int, default=5_000_000, help="the long queue's length")
    parser.add_argument("--only", help="run only systems whose name contains this")
    args = parser.parse_args()
    jobs = min(args.jobs, 2_000_000)
    servers = DevServers.default()
    servers.redis.up()
    run = f"wb{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "BENCH_REDIS_URL": servers.redis.url,
        "BENCH_RUN": run,
        "CONVEYOR_REDIS_URL": servers.redis.url,
        "CONVEYOR_NAMESPACE": run,
        "PYTHONPATH": str(HERE),
    }
    os.environ.update({k: v for k, v in env.items() if k.startswith(("BENCH_", "CONVEYOR_"))})
    sys.path.insert(0, str(HERE))
    client = redis.Redis.from_url(servers.redis.url)
    rows: list[dict[str, Any]] = []
    for system in systems(servers.redis.url, run, jobs, args.peer_jobs):
        if args.only and args.only.lower() not in system.name.lower():
            continue
        print(f"  {system.name}: throughput ...", flush=True)
        rate = throughput(system, env, client, run)
        print(f"    {rate:,.0f} jobs/s", flush=True)
        quiesce(client)
        print(f"  {system.name}: latency at {args.rate:,} jobs/s offered ...", flush=True)
        p50, p99, offered = latency(system, env, client, run, rate=args.rate, seconds=args.seconds)
        print(f"    p50 {p50:.2f} ms, p99 {p99:.2f} ms (offered {offered:,.0f}/s)", flush=True)
        rows.append(
            {
                "system": system.name,
                "jobs_per_s": rate,
                "p50_ms": p50,
                "p99_ms": p99,
                "offered_per_s": offered,
            }
        )
    depth_rows: list[dict[str, Any]] = []
    if not args.only:
        for depth in (1000, args.deep):
            print(f"  Conveyor fetch rate with {depth:,} queued ...", flush=True)
            depth_rows.append(
                {"queued": depth, "jobs_per_s": fetch_rate(servers.redis.url, depth, 500)}
            )

    print("\n| workers (no-op jobs) | jobs/s | vs Conveyor | p50 ms | p99 ms | offered/s |")
    print("|---|---:|---:|---:|---:|---:|")
    ours = rows[0]["jobs_per_s"] if rows else float("nan")
    for r in rows:
        print(
            f"| {r['system']} | {r['jobs_per_s']:,.0f} | {ours / r['jobs_per_s']:.1f}x | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['offered_per_s']:,.0f} |"
        )
    if depth_rows:
        print("\n| jobs queued | Conveyor fetch+settle jobs/s (one thread, batches of 100) |")
        print("|---:|---:|")
        for d in depth_rows:
            print(f"| {d['queued']:,} | {d['jobs_per_s']:,.0f} |")
    peers = [r["jobs_per_s"] for r in rows[2:] if r["jobs_per_s"] == r["jobs_per_s"]]
    if rows and peers:
        print(
            f"\nConveyor vs the best peer: {ours / max(peers):.1f}x; "
            f"vs pure Python: {ours / rows[1]['jobs_per_s']:.1f}x"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "worker.json"
    out.write_text(
        json.dumps(
            {
                "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "cores": os.cpu_count(),
                "rows": rows,
                "depth": depth_rows,
                "median_peer": statistics.median(peers) if peers else None,
            },
            indent=2,
        )
    )
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
