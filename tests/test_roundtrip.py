"""A job envelope travels through the real Kafka into the real Redis and back, unchanged."""

from __future__ import annotations

from collections import defaultdict

import pytest

import conveyor
from conveyor import _core
from conveyor.devservers import DevServers

pytestmark = pytest.mark.servers


def test_envelopes_survive_kafka_and_redis_byte_for_byte(
    servers: DevServers, topic: str, namespace: str
) -> None:
    sent = [
        conveyor.Envelope(
            "notify.push" if i % 2 else "unfurl.url",
            f'{{"n": {i}, "text": "caf\\u00e9 \u2603"}}'.encode(),
            dedup_key=f"user-{i % 7}" if i % 3 == 0 else None,
            trace_context="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        for i in range(300)
    ]
    producer = _core.KafkaProducer(servers.kafka.bootstrap)
    delivered = producer.send_envelopes(topic, sent).wait()
    assert len(delivered) == len(sent)
    assert {p for p, _ in delivered} == {0, 1, 2}, "records spread over every partition"

    by_partition: dict[int, list[int]] = defaultdict(list)
    for partition, offset in delivered:
        by_partition[partition].append(offset)
    records = []
    for partition, offsets in by_partition.items():
        got = _core.kafka_read_partition(
            servers.kafka.bootstrap, topic, partition, min(offsets), len(offsets), timeout_s=10
        )
        assert [r.offset for r in got] == sorted(offsets)
        records += got
    by_id = {e.id: e for e in sent}
    assert len(records) == len(sent)
    for record in records:
        env = by_id[dict(record.headers)["cv-id"].decode()]
        assert record.value == env.encode()
        assert dict(record.headers)["cv-type"] == env.job_type.encode()
        assert record.key == (env.dedup_key.encode() if env.dedup_key else None)

    # Same dedup key, same partition: duplicates can be caught in one place.
    partitions_by_key: dict[str, set[int]] = defaultdict(set)
    for env, (partition, _) in zip(sent, delivered, strict=True):
        if env.dedup_key:
            partitions_by_key[env.dedup_key].add(partition)
    assert all(len(ps) == 1 for ps in partitions_by_key.values())

    store = _core.RedisStore(servers.redis.url)
    stamped = [
        _core.append_stage(r.value, conveyor.Stage.KAFKA, (r.timestamp_ms or 0) * 1000)
        for r in records
    ]
    # Unique jobs: while one job holds a dedup key of its type, later ones
    # of that type with that key are dropped.
    first_of_key: dict[tuple[str, str], bytes] = {}
    kept = [
        raw
        for raw, env in zip(stamped, conveyor.decode_many(stamped), strict=True)
        if env.dedup_key is None
        or first_of_key.setdefault((env.job_type, env.dedup_key), raw) is raw
    ]
    duplicates = len(stamped) - len(kept)
    assert duplicates == 100 - 2 * 7, "7 keys in each of the 2 types"
    assert store.admit(namespace, "default", stamped) == (len(kept), 0, duplicates)
    back = store.peek_ready(namespace, "default", len(sent) + 10)
    assert back == kept
    decoded = conveyor.decode_many(back)
    for env in decoded:
        original = by_id[env.id]
        assert env.payload == original.payload
        assert env.stages[-1][0] == conveyor.Stage.KAFKA
        assert env.stages[-1][1] >= original.enqueued_at_us - 1_000_000
    store.purge(namespace, "default")
    assert store.peek_ready(namespace, "default", 1) == []


def test_queue_names_are_checked_before_redis_is_touched(servers: DevServers) -> None:
    store = _core.RedisStore(servers.redis.url)
    with pytest.raises(conveyor.InvalidJobError, match="queue name"):
        store.admit("", "bad{queue}", [conveyor.Envelope("x", b"").encode()])
