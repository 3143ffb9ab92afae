"""The relay as a good Python engineer would write it, for comparison.

confluent-kafka (librdkafka underneath, like ours) consumes in batches;
redis-py writes each batch the way the Rust relay does: plain batches in one
MULTI/EXEC under WATCH of the fence hash, the rest with the same exactly-once
Lua script, all partitions of a batch in one round trip; offsets are stored
after Redis holds the jobs. Every envelope is checked (decoded in pure
Python) and stamped, as the Rust relay does. Run by bench/relay_bench.py:
`python py_relay.py BOOTSTRAP REDIS_URL TOPIC NAMESPACE QUEUE GROUP`.
"""

from __future__ import annotations

import signal
import struct
import sys
import time
from pathlib import Path

import redis
from confluent_kafka import Consumer, TopicPartition

import pure_envelope

SCRIPT = (
    Path(__file__).resolve().parent.parent
    / "rust"
    / "conveyor-core"
    / "src"
    / "store"
    / "scripts"
    / "admit-7.lua"
).read_text()
STAGE = struct.Struct(">BQ")
#: Offsets per block of the open-jobs hash (`keys::OPEN_BLOCK`).
OPEN_BLOCK = 1024

#: The Rust relay's fetch settings (see `relay/reader.rs`), so both relays read
#: Kafka the same way: a small prefetch, fetched again without a pause.
FETCH_TUNING = {
    "queued.max.messages.kbytes": 2048,
    "queued.min.messages": 20000,
    "fetch.queue.backoff.ms": 2,
    "max.partition.fetch.bytes": 524288,
    "fetch.max.bytes": 2097152,
}


Batches = dict[int, list[tuple[int, int, str, bytes]]]


def write_plain(r: redis.Redis, keys: list[str], topic: str, batches: Batches) -> bool:
    """The Rust relay's Lua-free path: plain batches at or past their fence in
    one MULTI/EXEC under WATCH of the fence hash; False when the script must
    write them (unique or delayed jobs, a batch behind its fence, a fence moved
    meanwhile)."""
    ready, relayed, _, _, counts, wake, open_jobs = keys
    if any(run_at or key for jobs in batches.values() for _, run_at, key, _ in jobs):
        return False
    fences = [f"{topic}:{p}" for p in batches]
    with r.pipeline(transaction=True) as pipe:
        pipe.watch(relayed)  # type: ignore[no-untyped-call]
        stored = pipe.hmget(relayed, fences)
        if any(
            s is not None and jobs[0][0] < int(s)
            for s, jobs in zip(stored, batches.values(), strict=True)
        ):
            return False
        pipe.multi()
        total = 0
        for fence, jobs in zip(fences, batches.values(), strict=True):
            pipe.rpush(ready, *[job for _, _, _, job in jobs])
            pipe.hset(relayed, fence, jobs[-1][0] + 1)
            blocks: dict[int, int] = {}
            for offset, _, _, _ in jobs:
                blocks[offset // OPEN_BLOCK] = blocks.get(offset // OPEN_BLOCK, 0) + 1
            partition = fence.rsplit(":", 1)[1]
            for block, n in blocks.items():
                pipe.hincrby(open_jobs, f"{partition}:{block}", n)
            total += len(jobs)
        pipe.rpush(wake, 1)
        pipe.ltrim(wake, -1, -1)
        pipe.hincrby(counts, "admitted", total)
        try:
            pipe.execute()
        except redis.WatchError:
            return False
    return True


def main() -> None:
    bootstrap, redis_url, topic, namespace, queue, group = sys.argv[1:7]
    base = f"cv:{namespace}:{{{queue}}}" if namespace else f"cv:{{{queue}}}"
    names = ("ready", "relayed", "scheduled", "unique", "counts", "wake", "open")
    keys = [f"{base}:{k}" for k in names]
    r = redis.Redis.from_url(redis_url)
    sha = r.script_load(SCRIPT)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": True,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            **FETCH_TUNING,
        }
    )
    consumer.subscribe([topic])
    running = True

    def stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    while running:
        # Wait at most 5 ms to fill a batch, as the Rust relay does.
        messages = consumer.consume(num_messages=5000, timeout=0.005)
        if not messages:
            continue
        now_us = time.time_ns() // 1000
        batches: Batches = {}
        for m in messages:
            if m.error():
                continue
            value = m.value() or b""
            env = pure_envelope.decode(value)  # check it, as the Rust relay does
            source = ((m.partition() or 0) << 48) | (m.offset() or 0)
            stamps = (
                STAGE.pack(1, m.timestamp()[1] * 1000)
                + STAGE.pack(2, now_us)
                + STAGE.pack(8, source)
            )
            run_at_ms = (env.run_at_us or 0) // 1000
            batches.setdefault(m.partition() or 0, []).append(
                (m.offset() or 0, run_at_ms, env.dedup_key or "", value + stamps)
            )
        if not write_plain(r, keys, topic, batches):
            pipe = r.pipeline(transaction=False)
            for partition, jobs in batches.items():
                args: list[bytes | str | int] = [
                    f"{topic}:{partition}",
                    jobs[-1][0] + 1,
                    -1,
                    f"{partition}:",
                ]
                for offset, run_at_ms, dedup_key, job in jobs:
                    args += [offset, run_at_ms, dedup_key, job]
                pipe.evalsha(sha, len(keys), *keys, *args)
            pipe.execute()
        consumer.store_offsets(
            offsets=[TopicPartition(topic, p, jobs[-1][0] + 1) for p, jobs in batches.items()]
        )
    consumer.close()


if __name__ == "__main__":
    main()
