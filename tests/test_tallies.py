"""Counts compared hop by hop (conveyor.tallies): each hop counts the jobs it
passed on by the minute of their id, through the real servers; the counts
agree when nothing is lost, and jobs Kafka acknowledged but lost before the
relay read them (their topic deleted and created again) are reported
missing."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

import conveyor
from conveyor import _core, tallies
from conveyor.devservers.redis import RedisServer
from tests.helpers.cli import conveyor as conveyor_cli
from tests.helpers.gate import start_gate
from tests.helpers.ports import fixed_port
from tests.helpers.relay import start_relay
from tests.helpers.waiting import wait_until
from tests.test_gate import get, post

pytestmark = pytest.mark.servers

#: A time by which every minute counted in a test has been compared.
LATER_S = 180.0


def _totals(app: conveyor.Conveyor) -> dict[str, int]:
    return tallies.reconcile(app.settings, "default", None).totals


@pytest.mark.timeout(120)
def test_every_hop_counts_each_job_once(app: conveyor.Conveyor) -> None:
    @app.job("tl.kafka")
    def via_kafka(n: int) -> None:
        pass

    @app.job("tl.direct")
    def direct(n: int) -> None:
        pass

    app.set_route("tl.direct", conveyor.Route(kafka_percent=0))
    relay = start_relay(app)
    worker = conveyor.Worker(app, threads=2)
    worker.start()
    try:
        via_kafka.enqueue_many([(n,) for n in range(200)])
        direct.enqueue_many([(n,) for n in range(30)])
        app.flush()
        want = {"sent": 200, "relayed": 200, "direct": 30, "ended": 230}
        wait_until(lambda: _totals(app) == want, 30, f"the tallies at {want}")
        got = tallies.reconcile(app.settings, "default", 0, time.time() + LATER_S)
        assert got.missing == []
        assert got.unchecked == ""
    finally:
        worker.stop(grace_s=5)
        relay.stop()
    s = app.settings
    env = {
        "CONVEYOR_REDIS_URL": s.redis_url,
        "CONVEYOR_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
        "CONVEYOR_NAMESPACE": s.namespace,
    }
    out = conveyor_cli("status", "default", env=env).stdout
    assert "default         200         200          30         230" in out, out


@pytest.mark.timeout(120)
def test_jobs_lost_in_kafka_are_reported_missing(app: conveyor.Conveyor) -> None:
    @app.job("tl.lost")
    def lost(n: int) -> None:
        pass

    topic = app.settings.topic_for("default")
    bootstrap = app.settings.kafka_bootstrap
    lost.enqueue_many([(n,) for n in range(100)])
    app.flush()
    wait_until(lambda: _totals(app)["sent"] == 100, 10, "100 counted sent")
    # Acknowledged, then gone before any relay read them.
    _core.kafka_delete_topics(bootstrap, [topic])
    wait_until(lambda: _core.kafka_create_topic(bootstrap, topic, 3, 1), 30, "the topic again")
    relay = start_relay(app)
    try:
        lost.enqueue_many([(n,) for n in range(10)])
        app.flush()
        counted = {"sent": 110, "relayed": 10, "direct": 0, "ended": 0}
        wait_until(lambda: _totals(app) == counted, 30, "the later 10 sent and relayed")
        # The lag is read once a second: the reading before the 10 were
        # relayed still counts them as left to read.
        wait_until(lambda: sum(p[4] for p in relay.lag() if p[0] == topic) == 0, 10, "no lag left")
        reading = tallies.reconcile(app.settings, "default", 0, time.time() + LATER_S)
        assert sum(n for _, n in reading.missing) == 100, reading
        assert tallies.reconcile(app.settings, "default", 5).unchecked
        assert tallies.reconcile(app.settings, "default", None).unchecked
    finally:
        relay.stop()


def _job(n: int) -> bytes:
    return conveyor.Envelope("tl.stale", _core.encode_call([n], {})).encode()


def test_a_stale_settle_is_not_counted_ended(app: conveyor.Conveyor) -> None:
    # A worker that lost its lease (reaped, run again by another) and then
    # reports the job ended must not count it a second time.
    s = app.settings
    _core.RedisStore(s.redis_url).admit(s.namespace, "default", [_job(n) for n in range(3)])
    slow = _core.WorkQueues(s.redis_url, s.namespace, [("default", 1)], lease_s=0.2)
    other = _core.WorkQueues(s.redis_url, s.namespace, [("default", 1)], lease_s=30)
    lost = slow.fetch(3)
    assert lost is not None
    time.sleep(0.3)
    assert other.reap() == 3
    again = other.fetch(3)
    assert again is not None
    assert other.settle(again, [time.time()] * 3, {}) == (3, 0, 0, 0)
    assert slow.settle(lost, [time.time()] * 3, {}) == (0, 0, 0, 3), "all three stale"
    assert _totals(app) == {"sent": 0, "relayed": 0, "direct": 3, "ended": 3}


@pytest.mark.timeout(120)
def test_with_tallies_off_no_hop_counts(app: conveyor.Conveyor) -> None:
    quiet = conveyor.Conveyor(dataclasses.replace(app.settings, tallies=False))
    ran: list[int] = []

    @quiet.job("tl.quiet")
    def via_kafka(n: int) -> None:
        ran.append(n)

    @quiet.job("tl.quiet_direct")
    def direct(n: int) -> None:
        ran.append(n)

    quiet.set_route("tl.quiet_direct", conveyor.Route(kafka_percent=0))
    relay = start_relay(quiet)
    worker = conveyor.Worker(quiet, threads=2)
    worker.start()
    try:
        via_kafka.enqueue_many([(n,) for n in range(50)])
        direct.enqueue_many([(n,) for n in range(10)])
        quiet.flush()
        wait_until(lambda: len(ran) == 60, 30, "60 jobs run")
        time.sleep(1.5)  # past the producer's next count (about once a second)
        assert not any(_totals(app).values()), _totals(app)
    finally:
        worker.stop(grace_s=5)
        relay.stop()
        quiet.close()


@pytest.mark.timeout(120)
def test_jobs_the_gate_sent_are_counted(app: conveyor.Conveyor) -> None:
    @app.job("tl.gate")
    def via_gate(n: int) -> None:
        pass

    app.publish_registry()
    gate = start_gate(app)
    relay = start_relay(app)
    worker = conveyor.Worker(app, threads=2)
    worker.start()
    try:
        wait_until(lambda: "tl.gate" in gate.routes(), 10, "the gate reads the registry")
        for n in range(15):
            body = f'{{"type": "tl.gate", "args": [{n}]}}'.encode()
            assert post(gate.address, "/v1/jobs", body)[0] == 200
        want = {"sent": 15, "relayed": 15, "direct": 0, "ended": 15}
        wait_until(lambda: _totals(app) == want, 30, f"the tallies at {want}")
        assert "conveyor_gate_tally_errors_total 0" in get(gate.address, "/metrics")[1]
    finally:
        worker.stop(grace_s=5)
        relay.stop()
        gate.stop()


@pytest.mark.timeout(120)
def test_the_gate_keeps_its_counts_while_redis_is_away(
    app: conveyor.Conveyor, tmp_path: Path
) -> None:
    own = RedisServer(port=fixed_port(26687), home=tmp_path / "redis")
    own.up()
    away = conveyor.Conveyor(dataclasses.replace(app.settings, redis_url=own.url))
    away.job("tl.away")(lambda n: None)
    away.publish_registry()
    gate = start_gate(away)
    stopped = False
    try:
        wait_until(lambda: "tl.away" in gate.routes(), 10, "the gate reads the registry")
        own.down()
        for n in range(5):
            body = f'{{"type": "tl.away", "args": [{n}]}}'.encode()
            assert post(gate.address, "/v1/jobs", body)[0] == 200
        wait_until(
            lambda: "conveyor_gate_tally_errors_total 0" not in get(gate.address, "/metrics")[1],
            10,
            "the gate failing to add its counts",
        )
        own.up()  # with its append-only file: the registry is back
        wait_until(lambda: _totals(away)["sent"] == 5, 15, "the 5 counted once Redis is back")
        time.sleep(2.5)  # two more rounds of the gate's counting
        gate.stop()
        stopped = True
        assert _totals(away)["sent"] == 5, "counted once, not again"
    finally:
        if not stopped:
            gate.stop()
        away.close()
        own.down()
