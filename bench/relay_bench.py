"""Relay throughput: a pre-filled topic into Redis, Rust relay against Python.

Run: `make bench-relay` (or `.venv/bin/python bench/relay_bench.py [--jobs N]`).
Fills a 3-partition topic with N ~100-byte jobs, then times, one after the
other on the same data: the Rust relay (`conveyor relay`, one process), the
same relay in Python (bench/py_relay.py: confluent-kafka and redis-py,
batched and pipelined, the same Lua script), and the raw limits of this
machine in the same run: `redis-benchmark` pipelined LPUSH and a
confluent-kafka consumer that only reads. Peak RSS of each relay process is
read from /proc. Use --jobs 5000000 for the memory-at-a-large-backlog figure.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

import conveyor
from bench_topics import delete_new_topics_at_exit
from conveyor import _core
from conveyor.devservers import DevServers
from py_relay import FETCH_TUNING

HERE = Path(__file__).resolve().parent
TEXT = "You have 3 new messages in #general from @alice"


def fill(app: conveyor.Conveyor, jobs: int) -> None:
    done = 0
    while done < jobs:
        n = min(50_000, jobs - done)
        app.enqueue_many("notify.push", [(i, TEXT) for i in range(done, done + n)]).wait(120)
        done += n
        print(f"\r  filling the topic: {done:,}/{jobs:,}", end="", flush=True)
    print()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def time_relay(
    argv: list[str],
    env: dict[str, str],
    store: _core.RedisStore,
    *,
    namespace: str,
    jobs: int,
    limit_s: float,
) -> tuple[float, float]:
    """(jobs/s from first job in Redis to the last, peak RSS MB) of a relay process."""
    proc = subprocess.Popen(argv, env=env, cwd=HERE, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + limit_s
        while store.ready_len(namespace, "default") == 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("relay did not start relaying")
            time.sleep(0.005)
        start = time.perf_counter()
        while (held := store.ready_len(namespace, "default")) < jobs:
            if time.monotonic() > deadline:
                raise SystemExit(f"relay too slow: {held:,}/{jobs:,}")
            time.sleep(0.01)
        took = time.perf_counter() - start
        rss = peak_rss_mb(proc.pid)
        time.sleep(0.2)
        if (held := store.ready_len(namespace, "default")) != jobs:
            raise SystemExit(f"relay wrote {held:,} jobs for {jobs:,} records")
        return jobs / took, rss
    finally:
        proc.terminate()
        proc.wait(30)


def consume_rate(bootstrap: str, topic: str, jobs: int) -> float:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"raw-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            **FETCH_TUNING,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
    seen, start = 0, None
    deadline = time.monotonic() + 120
    while seen < jobs and time.monotonic() < deadline:
        batch = consumer.consume(num_messages=10_000, timeout=0.5)
        if batch and start is None:
            start = time.perf_counter()
        seen += len(batch)
    consumer.close()
    assert start is not None
    return seen / (time.perf_counter() - start)


#: The list `redis_lpush_rate` fills, deleted after: redis-benchmark's own
#: `-t lpush` writes to `mylist` and leaves it behind (1,000,000 items a run,
#: which grew a dev Redis to gigabytes over many runs).
LPUSH_KEY = "conveyor-bench:lpush"


def redis_lpush_rate(port: int) -> float:
    """redis-benchmark's pipelined LPUSH of 100-byte values, 1,000,000 of them."""
    try:
        out = subprocess.run(
            [
                *("redis-benchmark", "-p", str(port), "-P", "100", "-n", "1000000", "-q"),
                *("lpush", LPUSH_KEY, "x" * 100),
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    finally:
        subprocess.run(
            ["redis-cli", "-p", str(port), "UNLINK", LPUSH_KEY],
            check=False,
            capture_output=True,
            timeout=30,
        )
    match = re.search(r"lpush[^:]*:\s*([\d.]+)", out.replace("\r", "\n"), re.IGNORECASE)
    assert match, out
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1_000_000, help="backlog size (max 10M)")
    args = parser.parse_args()
    jobs = min(args.jobs, 10_000_000)
    servers = DevServers.default()
    servers.up()
    delete_new_topics_at_exit(servers.kafka.bootstrap)
    ns = f"rb{uuid.uuid4().hex[:6]}"
    settings = conveyor.Settings(
        kafka_bootstrap=servers.kafka.bootstrap, redis_url=servers.redis.url, namespace=ns
    )
    app = conveyor.Conveyor(settings)
    app.ensure_topics()
    topic = settings.topic_for("default")
    fill(app, jobs)
    store = _core.RedisStore(servers.redis.url)
    env = {
        **os.environ,
        "CONVEYOR_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "CONVEYOR_REDIS_URL": settings.redis_url,
        "CONVEYOR_NAMESPACE": ns,
        "PYTHONPATH": str(HERE),
    }
    limit = 60 + jobs / 20_000
    rows = []
    try:
        print("  Rust relay ...", flush=True)
        rust, rust_rss = time_relay(
            [sys.executable, "-m", "conveyor", "relay", "--report-every", "60"],
            env,
            store,
            namespace=ns,
            jobs=jobs,
            limit_s=limit,
        )
        rows.append(("Conveyor relay (Rust), 1 process", rust, f"{rust_rss:.0f}"))
        py_ns = ns + "py"
        print("  Python relay ...", flush=True)
        py, py_rss = time_relay(
            [
                sys.executable,
                str(HERE / "py_relay.py"),
                settings.kafka_bootstrap,
                settings.redis_url,
                topic,
                py_ns,
                "default",
                f"py-{ns}",
            ],
            env,
            store,
            namespace=py_ns,
            jobs=jobs,
            limit_s=limit,
        )
        rows.append(("Python relay (confluent-kafka + redis-py), 1 process", py, f"{py_rss:.0f}"))
        print("  raw limits ...", flush=True)
        rows.append(
            (
                "limit: Kafka consume only (confluent-kafka)",
                consume_rate(settings.kafka_bootstrap, topic, jobs),
                "-",
            )
        )
        rows.append(
            (
                "limit: redis-benchmark LPUSH, pipeline 100, 100 B",
                redis_lpush_rate(servers.redis.port),
                "-",
            )
        )
    finally:
        store.purge(ns, "default")
        store.purge(ns + "py", "default")
    print(
        f"\n{jobs:,} jobs of ~170 bytes (envelope) from a 3-partition topic into Redis, "
        f"on {os.cpu_count()} cores with Kafka and Redis colocated"
    )
    print("| relay | jobs/s | peak RSS MB |")
    print("|---|---:|---:|")
    for name, rate, rss in rows:
        print(f"| {name} | {rate:,.0f} | {rss} |")
    print(f"\nRust vs Python relay: {rows[0][1] / rows[1][1]:.1f}x")


if __name__ == "__main__":
    main()
