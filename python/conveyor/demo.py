"""`conveyor demo`: the README's main job.

Brings up the local Kafka and Redis, sends a batch of jobs through Kafka into
Redis and reads them back, then shows one job's trip stage by stage and proves
every job arrived with its bytes unchanged. Stops the servers it started.

Until the Rust relay and workers land, the Kafka-to-Redis hop here is a short
Python loop over the core's calls; the numbers are the plumbing's, not the
relay's.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable

from conveyor import _core
from conveyor._core import Envelope
from conveyor.devservers import DevServers
from conveyor.envelope import Stage

TOPIC = "conveyor-demo.jobs"
NAMESPACE = "demo"
QUEUE = "default"
JOB_TYPES: dict[str, Callable[[int], dict[str, object]]] = {
    "notify.push": lambda i: {"user": i % 97, "text": f"You have {i % 5} new messages"},
    "unfurl.url": lambda i: {"url": f"https://example.test/post/{i}", "channel": "C42"},
    "billing.charge": lambda i: {"invoice": f"inv-{i}", "amount_cents": 100 + i, "note": "café ☃"},
}


def _step(n: int, text: str) -> None:
    print(f"[{n}/5] {text}", flush=True)


def _ms(us: float) -> str:
    return f"{us / 1000:.1f} ms"


def run(jobs: int = 1000, keep_servers: bool = False) -> int:
    """Run the demo; returns the process exit code (0 when every job is accounted for)."""
    servers = DevServers.default()
    _step(1, "bringing up local Kafka and Redis (first run fetches Kafka's jars) ...")
    started_at = time.monotonic()
    kafka_started, redis_started = servers.up()
    print(
        f"      kafka {servers.kafka.bootstrap}  redis {servers.redis.url}  "
        f"ready in {time.monotonic() - started_at:.1f}s"
    )
    try:
        return _run(servers, jobs)
    finally:
        if not keep_servers:
            if kafka_started:
                servers.kafka.down()
            if redis_started:
                servers.redis.down()
            if kafka_started or redis_started:
                print("stopped the servers this demo started")


def _run(servers: DevServers, jobs: int) -> int:
    created = _core.kafka_create_topic(servers.kafka.bootstrap, TOPIC, 3, 1)
    _step(2, f"topic {TOPIC}: 3 partitions ({'created' if created else 'already there'})")

    names = list(JOB_TYPES)
    sent = [
        Envelope(
            names[i % len(names)],
            json.dumps(JOB_TYPES[names[i % len(names)]](i), ensure_ascii=False).encode(),
            dedup_key=f"invoice-{i}" if names[i % len(names)] == "billing.charge" else None,
        )
        for i in range(jobs)
    ]
    producer = _core.KafkaProducer(servers.kafka.bootstrap)
    # A new producer first looks the topic up and connects to its leaders;
    # time that first send apart from the batch, so neither hides the other.
    t0 = time.perf_counter()
    delivered = producer.send_envelopes(TOPIC, sent[:1]).wait()
    first_ms = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    delivered += producer.send_envelopes(TOPIC, sent[1:]).wait()
    took = time.perf_counter() - t0
    per_partition = Counter(p for p, _ in delivered)
    _step(
        3,
        f"enqueued {jobs} jobs to Kafka, each acknowledged by the broker: the first in "
        f"{first_ms:.0f} ms (a new producer connects), the other "
        f"{jobs - 1} in {took * 1000:.0f} ms ({(jobs - 1) / took:,.0f} jobs/s); "
        "per partition: " + ", ".join(f"p{p}={n}" for p, n in sorted(per_partition.items())),
    )

    store = _core.RedisStore(servers.redis.url)
    store.purge(NAMESPACE, QUEUE)
    first: dict[int, int] = {}
    for partition, offset in delivered:
        first[partition] = min(offset, first.get(partition, offset))
    t0 = time.perf_counter()
    where: dict[str, tuple[int, int]] = {}
    for partition, offset in sorted(first.items()):
        records = _core.kafka_read_partition(
            servers.kafka.bootstrap,
            TOPIC,
            partition,
            offset,
            per_partition[partition],
            timeout_s=15,
        )
        now_us = time.time_ns() // 1000
        batch = []
        for r in records:
            stamped = _core.append_stage(r.value, Stage.KAFKA, (r.timestamp_ms or 0) * 1000)
            batch.append(_core.append_stage(stamped, Stage.RELAYED, now_us))
            where[dict(r.headers)["cv-id"].decode()] = (r.partition, r.offset)
        store.push_ready(NAMESPACE, QUEUE, batch)
    took = time.perf_counter() - t0
    _step(
        4,
        f"read {len(where)} records back from Kafka, stamped their stages and pushed them "
        f"to Redis list cv:{NAMESPACE}:{{{QUEUE}}}:ready in {took * 1000:.0f} ms",
    )

    back = _core.decode_many(store.peek_ready(NAMESPACE, QUEUE, jobs + 1))
    by_id = {e.id: e for e in sent}
    intact = sum(1 for e in back if e.id in by_id and e.payload == by_id[e.id].payload)
    missing = set(by_id) - {e.id for e in back}
    ok = intact == jobs and not missing and len(back) == jobs
    _step(
        5,
        f"read back from Redis and decoded: {intact}/{jobs} jobs present with payload bytes "
        f"unchanged{'' if ok else f'; MISSING {len(missing)}, extra {len(back) - intact}'}",
    )

    _report(back, where)
    print("every job accounted for" if ok else "SOME JOBS WERE NOT ACCOUNTED FOR")
    return 0 if ok else 1


def _report(back: list[Envelope], where: dict[str, tuple[int, int]]) -> None:
    """One job's trip stage by stage, then a table per job type."""
    sample = back[0]
    stamps = dict(sample.stages)
    part, off = where[sample.id]
    print("\none job, stage by stage:")
    print(f"  id        {sample.id}")
    print(f"  type      {sample.job_type}")
    print(f"  payload   {sample.payload.decode()}")
    print(
        f"  enqueued  {time.strftime('%H:%M:%S', time.localtime(sample.enqueued_at_us / 1e6))}"
        f".{sample.enqueued_at_us % 1_000_000:06d}"
    )
    print(
        f"  kafka     +{_ms(stamps[Stage.KAFKA] - sample.enqueued_at_us)}  "
        f"(partition {part}, offset {off})"
    )
    print(f"  relayed   +{_ms(stamps[Stage.RELAYED] - sample.enqueued_at_us)}")

    rows: dict[str, list[Envelope]] = defaultdict(list)
    for env in back:
        rows[env.job_type].append(env)
    print(f"\n{'job type':<16} {'jobs':>6} {'bytes':>8} {'p50 to kafka':>13} {'p50 to redis':>13}")
    for name, envs in sorted(rows.items()):
        to_kafka = statistics.median(dict(e.stages)[Stage.KAFKA] - e.enqueued_at_us for e in envs)
        to_redis = statistics.median(dict(e.stages)[Stage.RELAYED] - e.enqueued_at_us for e in envs)
        size = sum(len(e.payload) for e in envs)
        print(f"{name:<16} {len(envs):>6} {size:>8} {_ms(to_kafka):>13} {_ms(to_redis):>13}")
    print("\nKafka stamps records in milliseconds, so gaps under 1 ms show as 0.0 ms.")
