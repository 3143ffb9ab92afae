"""Routing per job type between Kafka and the direct-to-Redis path, double
writes and the relay's shadow mode: the migration path, against real Kafka
and Redis."""

from __future__ import annotations

import dataclasses
import socket
import time

import pytest

import conveyor
from conveyor import _core
from conveyor.routing import RouteTable
from tests.helpers.cli import conveyor as conveyor_cli
from tests.helpers.relay import start_relay, wait_until

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
        # Another type on the same queue goes through Kafka only: shadow mode
        # must relay it (it once dropped every record of the queue).
        other = app.enqueue_many("route.other", [[i] for i in range(50)])
        other.wait(30)
        assert kafka_count(app) == 350
        wait_until(lambda: relay.stats()["shadowed"] == 300, 30, "the shadow relay read them all")
        wait_until(lambda: relay.stats()["relayed"] == 50, 30, "the other type relayed")
        assert sorted(redis_ids(app)) == sorted(handle.ids + other.ids), (
            "the direct copies, and the other type once"
        )
        # Migration's last step: shadow off, Kafka only. The relay starts
        # after what it shadowed, so nothing runs twice.
        store.set_relay_control(app.settings.namespace, "shadow", topic, None)
        app.set_route("route.both", None)
        time.sleep(1.0)  # relays re-read their controls twice a second
        later = app.enqueue_many("route.both", [[i] for i in range(100)])
        later.wait(30)
        wait_until(lambda: relay.stats()["relayed"] == 150, 30, "the new jobs relayed")
    finally:
        relay.stop()
    assert sorted(redis_ids(app)) == sorted(handle.ids + other.ids + later.ids)


def test_routes_are_checked(app: conveyor.Conveyor) -> None:
    with pytest.raises(conveyor.InvalidJobError, match="0 to 100"):
        conveyor.Route(kafka_percent=101)
    with pytest.raises(conveyor.InvalidJobError):
        app.set_route("bad name", conveyor.Route())


def test_a_route_set_from_the_cli_takes_effect_in_running_producers(
    app: conveyor.Conveyor,
) -> None:
    env = {
        "CONVEYOR_REDIS_URL": app.settings.redis_url,
        "CONVEYOR_NAMESPACE": app.settings.namespace,
    }
    assert app.enqueue("route.live", [0]).wait(10)[0][0] >= 0, "Kafka before any route"
    out = conveyor_cli("route", "route.live", "--kafka-percent", "0", env=env)
    assert out.returncode == 0, out.stderr
    assert "0% of jobs through Kafka" in out.stdout

    def direct() -> bool:
        return app.enqueue("route.live", [1]).wait(10) == [(-1, -1)]

    wait_until(direct, 5, "the run-time route applied")
    listed = conveyor_cli("route", env=env)
    assert "route.live: 0% through Kafka" in listed.stdout, listed.stdout
    # A run-time route overrides the configured one until it is cleared.
    app.set_route("route.live", conveyor.Route(kafka_percent=0, double_write=True))
    assert direct(), "the run-time route (direct only) still wins"
    out = conveyor_cli("route", "route.live", "--clear", env=env)
    assert out.returncode == 0, out.stderr
    wait_until(
        lambda: app.enqueue("route.live", [2]).wait(10)[0][0] >= 0,
        5,
        "back to the configured route (double writes: Kafka and Redis)",
    )


def test_bad_run_time_routes_are_refused_or_skipped(
    app: conveyor.Conveyor, caplog: pytest.LogCaptureFixture
) -> None:
    env = {
        "CONVEYOR_REDIS_URL": app.settings.redis_url,
        "CONVEYOR_NAMESPACE": app.settings.namespace,
    }
    out = conveyor_cli("route", "route.bad", "--kafka-percent", "150", env=env)
    assert out.returncode != 0
    assert "0 to 100" in out.stderr
    out = conveyor_cli("route", "route.bad", env=env)
    assert out.returncode != 0
    assert "--kafka-percent, --double-write or --clear" in out.stderr
    assert conveyor_cli("route", "bad name", "--clear", env=env).returncode != 0
    # A route another tool wrote badly is skipped; the good ones still apply.
    table = RouteTable({"a.type": conveyor.Route(kafka_percent=50)})
    table.apply([("a.type", "not json"), ("b.type", '{"kafka_percent": 10}')])
    assert table.current == {
        "a.type": conveyor.Route(kafka_percent=50),
        "b.type": conveyor.Route(kafka_percent=10),
    }
    table.apply([("a.type", '{"kafka_percent": 500}')])
    assert table.current == {"a.type": conveyor.Route(kafka_percent=50)}
    # Not a flag: read as truthy, this once turned on double writes.
    table.apply([("a.type", '{"kafka_percent": 0, "double_write": "false"}')])
    assert table.current == {"a.type": conveyor.Route(kafka_percent=50)}
    caplog.clear()
    for _ in range(3):
        table.apply([("a.type", "{broken")])
    warnings = [r for r in caplog.records if "ignoring a run-time route" in r.message]
    assert len(warnings) == 1, "a bad entry is reported once, not at every re-read"


def test_enqueue_never_waits_for_an_unreachable_routes_table(app: conveyor.Conveyor) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings = dataclasses.replace(app.settings, redis_url=f"redis://127.0.0.1:{port}/0")
    offline = conveyor.Conveyor(settings)
    try:
        began = time.perf_counter()
        handles = [offline.enqueue("route.offline", [i]) for i in range(100)]
        took = time.perf_counter() - began
        assert all(h.wait(10)[0][0] >= 0 for h in handles)
        assert took < 1.0, f"100 enqueues took {took:.2f} s"
    finally:
        offline.close()
