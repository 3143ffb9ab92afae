"""An independent Kafka reader for tests: confluent-kafka, not Conveyor's own code."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition


@dataclass
class Read:
    """One record as confluent-kafka saw it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    timestamp_ms: int


def read_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 20.0) -> list[Read]:
    """Every record of `topic` from the start, waiting until `expected` arrived
    (or `timeout_s` passed: then the caller's assertion shows what is missing)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "allow.auto.create.topics": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        out: list[Read] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.2):
                if msg.error():
                    raise RuntimeError(str(msg.error()))
                value, partition, offset = msg.value(), msg.partition(), msg.offset()
                assert value is not None
                assert partition is not None
                assert offset is not None
                key = msg.key()
                headers: dict[str, bytes] = {}
                for header in msg.headers() or []:
                    if isinstance(header, tuple) and isinstance(header[1], bytes):
                        headers[header[0]] = header[1]
                out.append(
                    Read(
                        partition,
                        offset,
                        key if isinstance(key, bytes) else None,
                        bytes(value),
                        headers,
                        msg.timestamp()[1],
                    )
                )
        return out
    finally:
        consumer.close()
