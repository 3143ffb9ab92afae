"""Many partitions, few relays: the shape of the production system Conveyor
follows (50 queues x 32 partitions = 1,600 partitions). For each partition
count asked for, the queues' topics are created, the relays started, and
measured: the time until the relays own every partition between them (the
assignment settled), then, with no jobs flowing, the CPU each relay and the
broker use (share of one core) and each relay's memory, then how long the
assignment takes to settle again when one more relay joins and when it
leaves (stopped as an operator would). Last, a backlog: the relays are
stopped, `--jobs` no-op jobs are written to Kafka spread over every
partition, the relays started again, and measured: the rate they move the
backlog into Redis (10% to 90% of it there) and their peak memory. Topics
are deleted at exit.

    python bench/scale_bench.py [--partitions 100,400,1600] [--relays 1]
        [--per-queue 32] [--idle-seconds 10] [--jobs 200000]

Writes bench/results/scale.md and scale.json (for the README's run:
`--partitions 100,400,1600,3200 --relays 1,2,4`; other runs write
scale-only.md and .json). All loopback; every wait is
bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import conveyor
from bench_topics import delete_new_topics_at_exit
from conveyor import _core
from conveyor.devservers import DevServers
from idle_cpu import busiest_threads, threads
from pipeline_bench import Progress, cpu_share, peak_rss_mb, write_results


def settled(store: _core.RedisStore, namespace: str, relays: int, total: int) -> bool:
    """Whether `relays` relays publish statuses whose partitions cover all
    `total` once each (no partition claimed twice, none missing)."""
    statuses = [json.loads(raw) for _, raw in store.relay_statuses(namespace)]
    claimed = [(p["topic"], p["partition"]) for s in statuses for p in s.get("partitions", [])]
    return (
        len(statuses) == relays
        and all(s.get("partitions") for s in statuses)
        and len(claimed) == len(set(claimed)) == total
    )


def wait_settled(
    store: _core.RedisStore, namespace: str, procs: list[subprocess.Popen[bytes]], total: int
) -> float:
    """Seconds until the running relays own every partition between them, as
    their statuses (refreshed each second) show it."""
    began = time.monotonic()
    while not settled(store, namespace, len(procs), total):
        if time.monotonic() - began > 300 or any(p.poll() is not None for p in procs):
            raise SystemExit(f"{len(procs)} relay(s) never owned the {total} partitions")
        time.sleep(0.1)
    return time.monotonic() - began


def backlog(
    servers: DevServers,
    settings: conveyor.Settings,
    queues: list[str],
    *,
    jobs: int,
    start: Callable[[], subprocess.Popen[bytes]],
    relays: int,
) -> tuple[float, list[float]]:
    """`jobs` written to Kafka over every queue's partitions while no relay
    runs, then `relays` relays started: the jobs/s they move into Redis
    (10% to 90% there) and each relay's peak RSS (MB)."""
    producer = _core.KafkaProducer(servers.kafka.bootstrap)
    payload = _core.encode_call([0.0], {})
    per_queue = max(1, jobs // len(queues))
    handles = []
    for queue in queues:
        for at in range(0, per_queue, 5000):
            handles.append(
                producer.send(
                    settings.topic_for(queue), "bench.noop", [payload] * min(5000, per_queue - at)
                )
            )
    for handle in handles:
        handle.wait(120)
    total = per_queue * len(queues)
    store = _core.RedisStore(settings.redis_url)
    procs = [start() for _ in range(relays)]
    progress = Progress(total)
    deadline = time.monotonic() + 120 + total / 2000
    try:
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            there = progress.see(sum(store.ready_len(settings.namespace, q) for q in queues))
            if there >= total:
                break
            time.sleep(0.05)
        rss = [peak_rss_mb([p.pid]) for p in procs]
    finally:
        stop(procs)
    return progress.rate(), rss


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()


def queue_names(partitions: int, per_queue: int) -> list[str]:
    """A row's queues: as many as make `partitions` at `per_queue` each."""
    return [f"q{i}" for i in range(max(1, partitions // per_queue))]


def measure(
    servers: DevServers, partitions: int, per_queue: int, *, relays: int, idle_s: float, jobs: int
) -> dict[str, Any]:
    """One row; its topics (and the dead-letter topics its relays made) are
    deleted after it: partitions left from earlier rows would load the
    broker (a run once stalled it with 11,000 of them). So are its queues'
    keys: each row's backlog left in Redis (a full run left 190 MB) would
    weigh on the rows and runs after it."""
    namespace = f"sc{uuid.uuid4().hex[:6]}"
    try:
        return measure_in(
            servers, namespace, partitions, per_queue, relays=relays, idle_s=idle_s, jobs=jobs
        )
    finally:
        store = _core.RedisStore(servers.redis.url)
        for queue in queue_names(partitions, per_queue):
            store.purge(namespace, queue)
        bootstrap = servers.kafka.bootstrap
        mine = [t for t in _core.kafka_cluster_info(bootstrap)[2] if f".{namespace}." in t]
        _core.kafka_delete_topics(bootstrap, mine)
        time.sleep(5.0)  # the broker drops their partitions before the next row


def measure_in(
    servers: DevServers,
    namespace: str,
    partitions: int,
    per_queue: int,
    *,
    relays: int,
    idle_s: float,
    jobs: int,
) -> dict[str, Any]:
    queues = queue_names(partitions, per_queue)
    settings = conveyor.Settings(
        kafka_bootstrap=servers.kafka.bootstrap, redis_url=servers.redis.url, namespace=namespace
    )
    for queue in queues:
        _core.kafka_create_topic(servers.kafka.bootstrap, settings.topic_for(queue), per_queue, 1)
    total = len(queues) * per_queue
    broker = [pid for _, pid in servers.kafka.status() if pid is not None]
    print(f"  {total:,} partitions ({len(queues)} queues x {per_queue}), {relays} relay(s)")
    broker_alone = cpu_share({"broker": broker}, idle_s)["broker"]
    env = {
        **os.environ,
        "CONVEYOR_KAFKA_BOOTSTRAP": servers.kafka.bootstrap,
        "CONVEYOR_REDIS_URL": servers.redis.url,
        "CONVEYOR_NAMESPACE": namespace,
    }
    argv = [sys.executable, "-m", "conveyor", "relay", *queues, "--report-every", "3600"]
    store = _core.RedisStore(servers.redis.url)

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)

    procs = [start() for _ in range(relays)]
    try:
        first = wait_settled(store, namespace, procs, total)
        print(f"    every partition owned after {first:.1f} s", flush=True)
        time.sleep(2.0)  # the first lag readings and status writes
        groups = {"broker": broker, **{f"relay {i + 1}": [p.pid] for i, p in enumerate(procs)}}
        ticks_before = threads(procs[0].pid)
        cpu = cpu_share(groups, idle_s)
        busiest = busiest_threads(ticks_before, threads(procs[0].pid), idle_s)
        rss = {f"relay {i + 1}": peak_rss_mb([p.pid]) for i, p in enumerate(procs)}
        shown = ", ".join(f"{k} {v:.1%}" for k, v in cpu.items())
        print(f"    idle CPU: {shown} (broker alone {broker_alone:.1%})", flush=True)
        print(
            "    relay 1's busiest threads: "
            + ", ".join(f"{name} {pct:.2f}%" for name, pct in busiest),
            flush=True,
        )
        # One more relay joins, then leaves: how long until the partitions
        # are spread over the relays running again.
        procs.append(start())
        joined = wait_settled(store, namespace, procs, total)
        leaving = procs.pop()
        leaving.terminate()
        left = wait_settled(store, namespace, procs, total)
        leaving.wait(timeout=60)
        print(f"    a relay joining: {joined:.1f} s, leaving: {left:.1f} s", flush=True)
    finally:
        stop(procs)
    rate, load_rss = backlog(servers, settings, queues, jobs=jobs, start=start, relays=relays)
    shown_rss = ", ".join(f"{v:.0f}" for v in load_rss)
    print(
        f"    a backlog of {jobs:,}: {rate:,.0f} jobs/s into Redis, RSS {shown_rss} MB", flush=True
    )
    return {
        "partitions": total,
        "queues": len(queues),
        "relays": relays,
        "first_s": first,
        "join_s": joined,
        "leave_s": left,
        "idle_cpu": cpu,
        "relay_1_busiest_threads": busiest,
        "broker_alone": broker_alone,
        "relay_rss_mb": rss,
        "backlog_jobs_per_s": rate,
        "backlog_rss_mb": load_rss,
    }


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"Relays and many partitions, {meta['when']}, {meta['cores']} cores, idle for "
        f"{meta['idle_s']:.0f} s each (`{meta['command']}`).",
        "",
        "| partitions | relays | all owned after start, s | one more relay joins / leaves, s "
        "(goal < 10) | idle CPU per relay (goal < 2%) | broker idle CPU (without relays) "
        "| relay RSS MB, idle | backlog into Redis, jobs/s | relay peak RSS MB, backlog |",
        "|---:|---:|---:|---:|---|---|---|---:|---|",
    ]
    for r in rows:
        per_relay = ", ".join(f"{v:.1%}" for k, v in r["idle_cpu"].items() if k != "broker")
        rss = ", ".join(f"{v:.0f}" for v in r["relay_rss_mb"].values())
        lines.append(
            f"| {r['partitions']:,} | {r['relays']} | {r['first_s']:.1f} "
            f"| {r['join_s']:.1f} / {r['leave_s']:.1f} | {per_relay} "
            f"| {r['idle_cpu']['broker']:.1%} ({r['broker_alone']:.1%}) | {rss} "
            f"| {r['backlog_jobs_per_s']:,.0f} "
            f"| {', '.join(f'{v:.0f}' for v in r['backlog_rss_mb'])} |"
        )
    return "\n".join(lines) + "\n"


#: The run bench/results/scale.md holds; any other writes scale-only.md.
FULL_PARTITIONS, FULL_RELAYS = [100, 400, 1600, 3200], [1, 2, 4]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--partitions", default="100,400,1600", help="comma-separated counts")
    parser.add_argument("--per-queue", type=int, default=32, help="partitions per queue")
    parser.add_argument("--relays", default="1", help="comma-separated relay counts")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--jobs", type=int, default=200_000, help="jobs of the backlog")
    args = parser.parse_args()
    counts = [min(int(n), 4000) for n in args.partitions.split(",")]
    relay_counts = [max(1, min(int(n), 8)) for n in args.relays.split(",")]
    idle_s = max(2.0, min(args.idle_seconds, 120.0))
    servers = DevServers.default()
    servers.up()
    delete_new_topics_at_exit(servers.kafka.bootstrap)
    jobs = max(1000, min(args.jobs, 2_000_000))
    rows = [
        measure(servers, n, args.per_queue, relays=r, idle_s=idle_s, jobs=jobs)
        for n in counts
        for r in relay_counts
    ]
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cores": os.cpu_count(),
        "idle_s": idle_s,
        "command": "python bench/scale_bench.py " + " ".join(sys.argv[1:]),
    }
    # A partial run must not replace the README's full table.
    full = counts == FULL_PARTITIONS and relay_counts == FULL_RELAYS
    write_results("scale" if full else "scale-only", render(rows, meta), {**meta, "rows": rows})


if __name__ == "__main__":
    main()
