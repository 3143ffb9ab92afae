"""Routing per job type between Kafka and the direct-to-Redis path, double
writes and the relay's shadow mode: the migration path, against real Kafka
and Redis."""

from __future__ import annotations

import time

import pytest

import conveyor
from conveyor import _core
from test_relay import start_relay, wait_until

pytestmark = pytest.mark.servers


def kafka_count(app: conveyor.Conveyor) -> int:
    topic = app.settings.topic_for("default")
    return sum(end for _, end in _core.kafka_end_offsets(app.settings.kafka_bootstrap, topic))


def redis_ids(app: conveyor.Conveyor) -> list[str]:
    store = _core.RedisStore(app.settings.redis_url)
    ns = app.settings.namespace
    raw = store.peek_ready(ns, "default", store.ready_len(ns, "default"))
    return [e.id for e in conveyor.decode_many(raw)]


def test_a_type_routed_direct_skips_kafka(app: conveyor.Conveyor) -> None:
    app.set_route("route.direct", conveyor.Route(kafka_percent=0))
    handle = app.enqueue("route.direct", [1])
    assert handle.done()
    assert handle.wait() == [(-1, -1)]
    many = app.enqueue_many("route.direct", [[i] for i in range(99)], dedup_keys=[None] * 99)
    assert redis_ids(app) == [handle.id, *many.ids], "in Redis, in order, before returning"
    assert kafka_count(app) == 0


def test_a_percentage_goes_through_kafka_and_every_job_arrives_once(
    app: conveyor.Conveyor,
) -> None:
    app.set_route("route.split", conveyor.Route(kafka_percent=30))
    handle = app.enqueue_many("route.split", [[i] for i in range(2000)])
    where = handle.wait(30)
    through_kafka = sum(1 for p, _ in where if p >= 0)
    assert 450 <= through_kafka <= 750, through_kafka  # 600 expected; 6 sigma is about 120
    assert kafka_count(app) == through_kafka
    relay = start_relay(app)
    try:
        wait_until(lambda: len(redis_ids(app)) == 2000, 60, "every job in Redis")
    finally:
        relay.stop()
    ids = redis_ids(app)
    assert sorted(ids) == sorted(handle.ids)


def test_double_writes_with_a_shadow_relay_run_each_job_once(app: conveyor.Conveyor) -> None:
    topic = app.settings.topic_for("default")
    store = _core.RedisStore(app.settings.redis_url)
    store.set_relay_control(app.settings.namespace, "shadow", topic, "1")
    app.set_route("route.both", conveyor.Route(double_write=True))
    relay = start_relay(app)
    try:
        handle = app.enqueue_many("route.both", [[i] for i in range(300)])
        assert all(p >= 0 for p, _ in handle.wait(30)), "the Kafka copies were acknowledged"
        assert kafka_count(app) == 300
        wait_until(lambda: relay.stats()["shadowed"] == 300, 30, "the shadow relay read them all")
        assert relay.stats()["relayed"] == 0
        assert sorted(redis_ids(app)) == sorted(handle.ids), "only the direct copies"
        # Migration's last step: shadow off, Kafka only. The relay starts
        # after what it shadowed, so nothing runs twice.
        store.set_relay_control(app.settings.namespace, "shadow", topic, None)
        app.set_route("route.both", None)
        time.sleep(1.0)  # relays re-read their controls twice a second
        later = app.enqueue_many("route.both", [[i] for i in range(100)])
        later.wait(30)
        wait_until(lambda: relay.stats()["relayed"] == 100, 30, "the new jobs relayed")
    finally:
        relay.stop()
    assert sorted(redis_ids(app)) == sorted(handle.ids + later.ids)


def test_routes_are_checked(app: conveyor.Conveyor) -> None:
    with pytest.raises(conveyor.InvalidJobError, match="0 to 100"):
        conveyor.Route(kafka_percent=101)
    with pytest.raises(conveyor.InvalidJobError):
        app.set_route("bad name", conveyor.Route())
