"""Enqueue into the local Kafka: Conveyor's client against confluent-kafka.

Run: `make bench` (or `.venv/bin/python bench/enqueue_bench.py [--jobs N] [--rounds R]`).
Starts the `conveyor dev up` servers if needed. Each variant sends the same
~100-byte jobs to a fresh 3-partition topic and counts as done only when the
broker acknowledged every job, with Conveyor's default acknowledgement for
both (`acks=all` with idempotence since session 7; leader acks before) and lz4.
The peer builds the same envelope in pure Python (bench/pure_envelope.py) and
produces with confluent-kafka, the standard Python client; ratios are measured
side by side in one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Callable
from functools import partial

from confluent_kafka import Producer

import conveyor
import conveyor.payload
import pure_envelope
from bench_topics import delete_new_topics_at_exit
from conveyor import _core
from conveyor.devservers import DevServers

TEXT = "You have 3 new messages in #general from @alice"  # makes ~100-byte payloads


def _topic(bootstrap: str) -> str:
    name = f"bench.enqueue-{uuid.uuid4().hex[:8]}"
    _core.kafka_create_topic(bootstrap, name, 3, 1)
    return name


def conveyor_many(app: conveyor.Conveyor, jobs: int) -> None:
    batch = 10_000
    handles = [
        app.enqueue_many("notify.push", [(i, TEXT) for i in range(start, min(start + batch, jobs))])
        for start in range(0, jobs, batch)
    ]
    for h in handles:
        h.wait(60)


def conveyor_single(app: conveyor.Conveyor, jobs: int) -> None:
    for i in range(jobs):
        app.enqueue("notify.push", (i, TEXT))
    app.flush(60)


def core_many(producer: _core.KafkaProducer, topic: str, jobs: int) -> None:
    payload = conveyor.payload.encode_call((1, TEXT), {}, 1 << 20)
    payloads = [payload] * 10_000
    handles = [producer.send(topic, "notify.push", payloads) for _ in range(jobs // 10_000)]
    for h in handles:
        h.wait(60)


#: Conveyor's default acknowledgement, which the peer is given too.
ACKS = conveyor.Settings().acks


def confluent_producer(bootstrap: str) -> Producer:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all" if ACKS == "all" else "1",
            "compression.type": "lz4",
            "linger.ms": 2,
            "enable.idempotence": ACKS == "all",
        }
    )
    producer.list_topics(timeout=10)  # connect before timing
    return producer


def confluent_single(producer: Producer, topic: str, jobs: int) -> None:
    failures: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    for i in range(jobs):
        env = pure_envelope.PyEnvelope(
            id=uuid.uuid4().bytes,
            job_type="notify.push",
            payload=conveyor.payload.encode_call((i, TEXT), {}, 1 << 20),
            enqueued_at_us=time.time_ns() // 1000,
        )
        while True:
            try:
                producer.produce(
                    topic,
                    env.encode(),
                    on_delivery=on_delivery,
                    headers=[("cv-id", env.id_text), ("cv-type", env.job_type)],
                )
                break
            except BufferError:
                producer.poll(0.001)
        producer.poll(0)
    producer.flush(60)
    assert not failures, failures[:3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=200_000, help="jobs per variant (max 1M)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="rounds of every variant, interleaved; the table shows medians (max 20)",
    )
    args = parser.parse_args()
    rounds = max(1, min(args.rounds, 20))
    jobs = min(args.jobs, 1_000_000)
    servers = DevServers.default()
    servers.up()
    delete_new_topics_at_exit(servers.kafka.bootstrap)
    bootstrap = servers.kafka.bootstrap

    def fresh_app() -> conveyor.Conveyor:
        ns = f"b{uuid.uuid4().hex[:6]}"
        app = conveyor.Conveyor(conveyor.Settings(kafka_bootstrap=bootstrap, namespace=ns))
        app.ensure_topics()
        app.enqueue("warm.up", ()).wait(10)  # connect before timing
        return app

    core_producer = _core.KafkaProducer(bootstrap)
    core_topic = _topic(bootstrap)
    core_producer.send(core_topic, "warm.up", [b"{}"]).wait(10)
    # Each variant's setup (topics, connections) happens before its clock starts.
    variants: dict[str, Callable[[], Callable[[], None]]] = {
        "confluent-kafka + pure-Python envelope, produce() per job": lambda: partial(
            confluent_single, confluent_producer(bootstrap), _topic(bootstrap), jobs
        ),
        "Conveyor app.enqueue() per job": lambda: partial(conveyor_single, fresh_app(), jobs),
        "Conveyor app.enqueue_many(), 10k per call": lambda: partial(
            conveyor_many, fresh_app(), jobs
        ),
        "Rust producer alone, payloads pre-encoded": lambda: partial(
            core_many, core_producer, core_topic, jobs
        ),
    }
    print(
        f"{jobs:,} jobs of ~100 bytes per variant into Kafka {bootstrap} "
        f"(1 broker, 3 partitions, acks={ACKS} for both, lz4) on {os.cpu_count()} cores"
    )
    # This machine's speed drifts by tens of percent from minute to minute:
    # variants take turns, round after round, and the table shows medians.
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(rounds):
        line = []
        for name, setup in variants.items():
            run = setup()
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
            line.append(f"{jobs / times[name][-1]:,.0f}")
        print(f"  round {r + 1}/{rounds}, jobs/s: {' | '.join(line)}", flush=True)
    results = {name: statistics.median(t) for name, t in times.items()}
    base_name = next(iter(results))
    base = results[base_name]
    print(f"\nmedians of {rounds} interleaved rounds; range of the per-round ratio in brackets")
    print("| variant | seconds | jobs/s | vs confluent-kafka |")
    print("|---|---:|---:|---:|")
    for name, seconds in results.items():
        ratios = [b / t for b, t in zip(times[base_name], times[name], strict=True)]
        spread = f" [{min(ratios):.1f}-{max(ratios):.1f}]" if rounds > 1 else ""
        print(f"| {name} | {seconds:.2f} | {jobs / seconds:,.0f} | {base / seconds:.1f}x{spread} |")


if __name__ == "__main__":
    main()
