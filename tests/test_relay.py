"""The relay: Kafka into Redis exactly once, in per-partition order, across
restarts, rebalances, crashes and stale owners."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import Producer

import conveyor
from conveyor import _core
from conveyor.devservers import DevServers, RedisServer
from tests.helpers.cli import conveyor as conveyor_cli
from tests.helpers.kafka_reader import read_all
from tests.helpers.ports import fixed_port
from tests.helpers.relay import start_relay, wait_until

pytestmark = pytest.mark.servers


def in_redis(app: conveyor.Conveyor) -> list[conveyor.Envelope]:
    store = _core.RedisStore(app.settings.redis_url)
    n = store.ready_len(app.settings.namespace, "default")
    return conveyor.decode_many(store.peek_ready(app.settings.namespace, "default", n))


def ready_len(app: conveyor.Conveyor) -> int:
    return _core.RedisStore(app.settings.redis_url).ready_len(app.settings.namespace, "default")


def send(app: conveyor.Conveyor, n: int, start: int = 0) -> dict[str, tuple[int, int]]:
    """n jobs; returns id -> (partition, offset)."""
    handle = app.enqueue_many("relay.test", [(i,) for i in range(start, start + n)])
    return dict(zip(handle.ids, handle.wait(60), strict=True))


def assert_exactly_once_in_order(app: conveyor.Conveyor, sent: dict[str, tuple[int, int]]) -> None:
    jobs = in_redis(app)
    ids = [e.id for e in jobs]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} jobs relayed twice"
    assert set(ids) == set(sent), f"{len(set(sent) - set(ids))} jobs missing"
    per_partition: dict[int, list[int]] = defaultdict(list)
    for job_id in ids:
        partition, offset = sent[job_id]
        per_partition[partition].append(offset)
    for offsets in per_partition.values():
        assert offsets == sorted(offsets), "a partition's jobs arrived out of order"


def test_jobs_arrive_exactly_once_in_partition_order_with_stages(app: conveyor.Conveyor) -> None:
    sent = send(app, 5000)
    relay = start_relay(app)
    try:
        wait_until(lambda: ready_len(app) >= 5000, 30, "5000 jobs in Redis")
        time.sleep(0.3)
    finally:
        relay.stop()
    assert_exactly_once_in_order(app, sent)
    records = {
        conveyor.Envelope.decode(r.value).id: r
        for r in read_all(app.settings.kafka_bootstrap, app.settings.topic_for("default"), 5000)
    }
    for env in in_redis(app)[:200]:
        original = records[env.id].value
        assert env.encode()[: len(original)] == original, "bytes as the producer sent them"
        stages = dict(env.stages)
        assert stages[conveyor.Stage.KAFKA] // 1000 == records[env.id].timestamp_ms
        assert stages[conveyor.Stage.RELAYED] >= stages[conveyor.Stage.KAFKA]
    assert relay.stats()["relayed"] == 5000


def test_a_restarted_relay_resumes_without_doubling(app: conveyor.Conveyor) -> None:
    sent = send(app, 3000)
    first = start_relay(app)
    wait_until(lambda: ready_len(app) >= 3000, 30, "first batch")
    first.stop()
    sent |= send(app, 2000, start=3000)
    second = start_relay(app)
    try:
        wait_until(lambda: ready_len(app) >= 5000, 30, "second batch")
        time.sleep(0.5)
    finally:
        second.stop()
    assert_exactly_once_in_order(app, sent)


def test_a_relay_in_a_new_group_starts_where_redis_ends(app: conveyor.Conveyor) -> None:
    sent = send(app, 2000)
    relay = start_relay(app, group="first")
    wait_until(lambda: ready_len(app) >= 2000, 30, "relayed once")
    relay.stop()
    # A new group has no committed offsets in Kafka (as after lost commits):
    # it must start each partition where Redis says the relayed jobs end.
    again = start_relay(app, group="second")
    try:
        wait_until(lambda: len(again.assignment()) == 3, 20, "the second relay to own all")
        sent |= send(app, 500, start=2000)
        wait_until(lambda: ready_len(app) >= 2500, 30, "new jobs")
        time.sleep(0.5)
    finally:
        again.stop()
    assert_exactly_once_in_order(app, sent)
    stats = again.stats()
    assert (stats["relayed"], stats["skipped"], stats["dead_lettered"]) == (500, 0, 0)


def test_the_relay_script_fences_stale_writers(servers: DevServers, namespace: str) -> None:
    store = _core.RedisStore(servers.redis.url)
    job = [conveyor.Envelope("fence.test", str(i).encode()).encode() for i in range(150)]

    def records(lo: int, hi: int) -> list[tuple[int, bytes]]:
        return [(i, job[i]) for i in range(lo, hi)]

    assert store.relay_batch(namespace, "default", "t", 0, 100, records(0, 100)) == (
        100,
        0,
        0,
        0,
        None,
    )
    # A relay that lost the partition writes what it had read: only the part
    # nobody wrote yet goes in, in order.
    assert store.relay_batch(namespace, "default", "t", 0, 150, records(50, 150)) == (
        50,
        0,
        0,
        50,
        None,
    )
    # The new owner, behind, re-sends: nothing is doubled, nothing goes back.
    assert store.relay_batch(namespace, "default", "t", 0, 120, records(100, 120)) == (
        0,
        0,
        0,
        20,
        None,
    )
    assert dict(store.relayed_offsets(namespace, "default")) == {"t:0": 150}
    assert store.peek_ready(namespace, "default", 1000) == job
    assert store.relay_batch(namespace, "default", "t", 1, 1, records(0, 1)) == (1, 0, 0, 0, None)


def test_two_relays_share_partitions_and_one_takes_over(app: conveyor.Conveyor) -> None:
    a, b = start_relay(app), start_relay(app)
    try:
        wait_until(
            lambda: (
                len(a.assignment()) + len(b.assignment()) == 3
                and bool(a.assignment())
                and bool(b.assignment())
            ),
            30,
            "both relays to own partitions",
        )
        sent = send(app, 3000)
        wait_until(lambda: ready_len(app) >= 3000, 30, "jobs relayed by both")
        a.stop()
        wait_until(lambda: len(b.assignment()) == 3, 30, "b to own every partition")
        sent |= send(app, 3000, start=3000)
        wait_until(lambda: ready_len(app) >= 6000, 30, "jobs relayed by b alone")
        time.sleep(0.5)
    finally:
        b.stop()
    assert_exactly_once_in_order(app, sent)


def test_undecodable_records_are_dead_lettered_without_blocking(app: conveyor.Conveyor) -> None:
    topic = app.settings.topic_for("default")
    raw = Producer({"bootstrap.servers": app.settings.kafka_bootstrap})
    raw.produce(topic, b"not an envelope", partition=0)
    raw.flush(10)
    sent = send(app, 300)
    relay = start_relay(app)
    try:
        wait_until(lambda: ready_len(app) >= 300, 30, "good jobs after the bad one")
        wait_until(lambda: relay.stats()["dead_lettered"] == 1, 10, "one dead letter")
    finally:
        relay.stop()
    assert_exactly_once_in_order(app, sent)
    [dead] = read_all(app.settings.kafka_bootstrap, f"{topic}.dead", 1)
    assert dead.value == b"not an envelope"
    assert b"not a Conveyor envelope" in dead.headers["cv-dead-reason"]


def test_a_dead_letter_kafka_refuses_is_not_counted_and_does_not_block(
    app: conveyor.Conveyor,
) -> None:
    # The dead-letter topic takes records of 200 bytes at most: each of these
    # is refused for good. The relay used to count it as dead-lettered (a
    # flush "succeeds" on failed deliveries) or retry it for ever.
    topic = app.settings.topic_for("default")
    assert _core.kafka_create_topic(
        app.settings.kafka_bootstrap, f"{topic}.dead", 1, 1, configs=[("max.message.bytes", "200")]
    )
    raw = Producer({"bootstrap.servers": app.settings.kafka_bootstrap})
    for _ in range(3):
        raw.produce(topic, b"x" * 400, partition=0)  # not an envelope, and too big
    raw.flush(10)
    sent = send(app, 300)
    relay = start_relay(app)
    try:
        wait_until(lambda: ready_len(app) >= 300, 40, "good jobs after the refused ones")
        wait_until(lambda: relay.stats()["dead_letter_failed"] == 3, 20, "three refusals")
        assert relay.stats()["dead_lettered"] == 0, "nothing Kafka refused counts as dead-lettered"
        failures = relay.dead_letter_failures()
        assert len(failures) == 3
        assert all(f.startswith(f"{topic}[0]@") for f in failures), failures
    finally:
        relay.stop()
    assert_exactly_once_in_order(app, sent)


def test_sigkilled_relays_lose_and_double_nothing(app: conveyor.Conveyor) -> None:
    env = {
        **os.environ,
        "CONVEYOR_KAFKA_BOOTSTRAP": app.settings.kafka_bootstrap,
        "CONVEYOR_REDIS_URL": app.settings.redis_url,
        "CONVEYOR_NAMESPACE": app.settings.namespace,
    }

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "conveyor", "relay", "--report-every", "1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    steady, victim = spawn(), spawn()
    sent: dict[str, tuple[int, int]] = {}
    try:
        for round_ in range(4):
            for chunk in range(5):
                sent |= send(app, 5000, start=(round_ * 5 + chunk) * 5000)
                time.sleep(0.1)
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            victim = spawn()
        assert len(sent) == 100_000
        wait_until(lambda: ready_len(app) >= 100_000, 120, "all 100,000 jobs in Redis")
        time.sleep(1.0)
    finally:
        for proc in (steady, victim):
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    assert_exactly_once_in_order(app, sent)


def test_relays_started_and_stopped_mid_stream_lose_and_double_nothing(
    app: conveyor.Conveyor,
) -> None:
    """Rebalances on purpose: while 100,000 jobs stream in, relays join and
    leave cleanly (each join and leave moves partitions); afterwards Redis
    holds every job exactly once, in per-partition order."""
    sent: dict[str, tuple[int, int]] = {}
    running = [start_relay(app)]
    try:
        for step in range(8):
            for chunk in range(5):
                sent |= send(app, 2500, start=(step * 5 + chunk) * 2500)
                time.sleep(0.05)
            if step % 2 == 0 or len(running) == 1:
                running.append(start_relay(app))  # joins: the group rebalances
            else:
                running.pop(0).stop()  # leaves: its partitions move at once
        assert len(sent) == 100_000
        wait_until(lambda: ready_len(app) >= 100_000, 120, "all 100,000 jobs in Redis")
        time.sleep(1.0)
    finally:
        for relay in running:
            relay.stop()
    assert_exactly_once_in_order(app, sent)


def control(app: conveyor.Conveyor, *argv: str) -> str:
    env = {
        "CONVEYOR_REDIS_URL": app.settings.redis_url,
        "CONVEYOR_NAMESPACE": app.settings.namespace,
    }
    done = conveyor_cli(*argv, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_pause_and_resume_take_effect_without_a_restart(app: conveyor.Conveyor) -> None:
    relay = start_relay(app)
    try:
        wait_until(lambda: len(relay.assignment()) == 3, 20, "the relay to own all")
        assert "paused" in control(app, "pause", "default")
        time.sleep(1.2)  # relays re-read their controls twice a second
        sent = send(app, 2000)
        time.sleep(1.5)
        assert ready_len(app) == 0, "a paused queue must not be relayed"
        assert "resumed" in control(app, "resume", "default")
        wait_until(lambda: ready_len(app) >= 2000, 10, "relaying to resume")
        time.sleep(0.3)
    finally:
        relay.stop()
    assert_exactly_once_in_order(app, sent)


def test_a_partition_paused_when_a_rebalance_took_it_is_resumed_when_it_returns(
    app: conveyor.Conveyor,
) -> None:
    # librdkafka keeps a partition's pause across revoke and assign: the
    # partitions the second relay held came back to the first still paused,
    # and their jobs were never relayed.
    first = start_relay(app)
    second = None
    try:
        wait_until(lambda: len(first.assignment()) == 3, 20, "the first relay to own all")
        control(app, "pause", "default")
        time.sleep(1.2)  # relays re-read their controls twice a second
        second = start_relay(app)
        wait_until(lambda: len(second.assignment()) > 0, 60, "a rebalance to share them")
        control(app, "resume", "default")
        time.sleep(1.2)
        second.stop()
        wait_until(lambda: len(first.assignment()) == 3, 60, "the partitions to come back")
        sent = send(app, 1000)
        wait_until(lambda: ready_len(app) >= 1000, 20, "every partition relaying again")
        time.sleep(0.3)
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert_exactly_once_in_order(app, sent)


def test_a_rate_limit_holds_and_changes_at_run_time(app: conveyor.Conveyor) -> None:
    relay = start_relay(app)
    try:
        wait_until(lambda: len(relay.assignment()) == 3, 20, "the relay to own all")
        control(app, "throttle", "default", "2000")
        time.sleep(1.2)
        sent = send(app, 20_000)

        def rate_over(seconds: float) -> float:
            before, start = ready_len(app), time.monotonic()
            time.sleep(seconds)
            return (ready_len(app) - before) / (time.monotonic() - start)

        time.sleep(0.5)
        slow = rate_over(2.0)
        assert 2000 * 0.7 <= slow <= 2000 * 1.3, f"{slow:.0f} jobs/s under a 2000/s limit"
        assert relay.stats()["held"] > 0 or ready_len(app) < 20_000
        control(app, "throttle", "default", "5000")
        time.sleep(1.5)  # the change lands within a second or two
        fast = rate_over(1.5)
        assert 5000 * 0.7 <= fast <= 5000 * 1.3, f"{fast:.0f} jobs/s under a 5000/s limit"
        control(app, "throttle", "default", "off")
        wait_until(lambda: ready_len(app) >= 20_000, 20, "the rest, unthrottled")
        time.sleep(0.3)
    finally:
        relay.stop()
    assert_exactly_once_in_order(app, sent)


def test_bad_control_values_are_refused(app: conveyor.Conveyor) -> None:
    env = {"CONVEYOR_REDIS_URL": app.settings.redis_url}
    for argv in (
        ["throttle", "default", "fast"],
        ["throttle", "default", "-5"],
        ["pause", "bad:queue"],
    ):
        done = conveyor_cli(*argv, env=env)
        assert done.returncode == 2, argv
        assert "conveyor:" in done.stderr


def test_a_full_redis_is_protected_and_every_job_arrives_once_drained(
    app: conveyor.Conveyor, tmp_path: Path
) -> None:
    import redis

    # A Redis of this test's own, small and with noeviction, as in production.
    small = RedisServer(port=fixed_port(26579), home=tmp_path / "redis", maxmemory=24 * 1024 * 1024)
    small.up()
    try:
        s = app.settings
        relay = _core.Relay(
            s.kafka_bootstrap,
            small.url,
            [(s.topic_for("default"), "default")],
            namespace=s.namespace,
            group_id=f"full-{s.namespace}",
            memory_high=0.8,
            memory_low=0.6,
        )
        client = redis.Redis(port=fixed_port(26579))
        key = f"cv:{s.namespace}:{{default}}:ready"
        sent: dict[str, tuple[int, int]] = {}
        try:
            for chunk in range(6):  # about 3x what fits
                sent |= send(app, 50_000, start=chunk * 50_000)
            wait_until(lambda: relay.stats()["memory_guarded"] == 1, 30, "the guard to engage")
            time.sleep(2.0)
            info = client.info("memory")
            assert info["used_memory"] < info["maxmemory"], "the relay drove Redis to its limit"
            held_in_redis = client.llen(key)
            assert 0 < held_in_redis < len(sent), "the backlog waits in Kafka"
            assert relay.stats()["redis_errors"] == 0, "no write was refused for memory"
            # Workers drain the queue; the relay resumes by itself.
            drained: list[bytes] = []
            deadline = time.monotonic() + 120
            while len(drained) < len(sent) and time.monotonic() < deadline:
                got = client.lpop(key, 5000)
                if isinstance(got, list):
                    drained += [g for g in got if isinstance(g, bytes)]
                else:
                    time.sleep(0.05)
        finally:
            relay.stop()
        ids = [conveyor.Envelope.decode(b).id for b in drained]
        assert len(ids) == len(set(ids)), "a job arrived twice"
        assert set(ids) == set(sent), f"{len(set(sent) - set(ids))} jobs never arrived"
    finally:
        small.down()
