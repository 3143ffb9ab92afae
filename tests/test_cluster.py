"""A 3-broker Kafka on loopback, started by the same dev-server code, survives
losing a broker with acks=all: the multi-broker shape later failure tests use."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

import conveyor
from conveyor import _core
from conveyor.devservers import DevServers
from conveyor.errors import DeliveryError
from tests.helpers.kafka_reader import read_all
from tests.helpers.ports import fixed_port

pytestmark = pytest.mark.servers


def test_three_brokers_keep_every_acknowledged_job_when_one_stops(tmp_path: Path) -> None:
    cluster = DevServers.at(
        tmp_path, kafka_port=fixed_port(29300), redis_port=fixed_port(26699), kafka_nodes=3
    ).kafka
    started = time.monotonic()
    try:
        assert cluster.up(timeout_s=120)
        _, brokers, _ = _core.kafka_cluster_info(cluster.bootstrap)
        assert sorted(b[0] for b in brokers) == [1, 2, 3]
        assert _core.kafka_create_topic(cluster.bootstrap, "replicated", 3, 3)
        # One replica per partition: a stopped broker takes its partitions down.
        assert _core.kafka_create_topic(cluster.bootstrap, "single", 6, 1)
        # A dead letter is a job too: each dead-letter topic, made in one
        # request when a relay starts, keeps as many copies as its job topic
        # (the default where that topic does not exist yet).
        routes = [("replicated", "a"), ("single", "b"), ("absent", "c")]
        # (what the relay asks must know the job topics: created just now)
        _wait_until_metadata_agrees(
            cluster.bootstrap,
            "both topics known",
            lambda m: {"replicated", "single"} <= m.topics.keys(),
        )
        _core.Relay(cluster.bootstrap, "redis://127.0.0.1:9", routes).stop()
        topics = (
            AdminClient({"bootstrap.servers": cluster.bootstrap}).list_topics(timeout=10).topics
        )
        copies = {t: len(topics[f"{t}.dead"].partitions[0].replicas) for t, _ in routes}
        assert copies == {"replicated": 3, "single": 1, "absent": 3}
        producer = _core.KafkaProducer(cluster.bootstrap, acks="all", delivery_timeout_s=20)
        first = producer.send("replicated", "cluster.test", [b"{}"] * 1000)
        assert len(first.wait(30)) == 1000
        cluster.stop_node(2)
        # Leaders move to the two brokers left; min.insync.replicas=2 still holds.
        second = producer.send("replicated", "cluster.test", [b"{}"] * 1000)
        assert len(second.wait(30)) == 1000
        records = read_all(cluster.bootstrap, "replicated", 2000, timeout_s=60)
        assert len(records) == 2000

        # Availability first: jobs with no key and no pinned partition go to a
        # partition that metadata shows up (a partition sent to before the
        # brokers' metadata caught up with the stop is beyond that promise:
        # its jobs fail, as the caller is told, after the delivery timeout).
        _wait_until_metadata_agrees(
            cluster.bootstrap, "node 2 leads nothing", _no_leader("single", 2)
        )
        # Single sends spread over partitions as they would arrive from a
        # service; none may be lost to the dead broker's partitions.
        quick = _core.KafkaProducer(cluster.bootstrap, delivery_timeout_s=8)
        handles = []
        for _ in range(80):
            handles.append(quick.send("single", "cluster.test", [b"{}"]))
            time.sleep(0.01)
        landed = {partition for h in handles for partition, _ in h.wait(20)}
        assert len(landed) >= 2, "jobs spread over the partitions that are up"
        dead = set(range(6)) - landed
        assert dead, "some partitions of the stopped broker got nothing"
        # A caller who pins a partition gets what they asked for: an error when it is down.
        down = min(dead)
        pinned = quick.send("single", "cluster.test", [b"{}"], partition=down)
        with pytest.raises(DeliveryError):
            pinned.wait(20)
    finally:
        cluster.down()
    assert time.monotonic() - started < 120


def _wait_until_metadata_agrees(bootstrap: str, what: str, check: Callable[[Any], bool]) -> None:
    """Waits until five fresh clients in a row (each asking whichever broker
    it reaches first) get metadata that passes `check`: KRaft brokers apply
    the controller's changes each at its own pace, so one answer is not
    enough (under load a lagging broker still named a stopped one leader)."""
    deadline = time.monotonic() + 30
    agreeing = 0
    while agreeing < 5:
        assert time.monotonic() < deadline, f"the brokers' metadata never agreed: {what}"
        metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=5)
        agreeing = agreeing + 1 if check(metadata) else 0
        time.sleep(0.1)


def _no_leader(topic: str, node: int) -> Callable[[Any], bool]:
    return lambda m: node not in [p.leader for p in m.topics[topic].partitions.values()]


def test_default_settings_keep_every_acknowledged_job_when_a_broker_is_killed(
    tmp_path: Path,
) -> None:
    """Nothing chosen: topics get three copies and `min.insync.replicas=2`,
    the producer `acks=all` with idempotence. A broker killed outright after
    the jobs were acknowledged loses none of them (with the old defaults, one
    copy and leader acks, the dead broker's partitions took their jobs)."""
    cluster = DevServers.at(
        tmp_path, kafka_port=fixed_port(29310), redis_port=fixed_port(26698), kafka_nodes=3
    ).kafka
    try:
        assert cluster.up(timeout_s=120)
        app = conveyor.Conveyor(conveyor.Settings(kafka_bootstrap=cluster.bootstrap))
        (topic,) = app.ensure_topics(["default"])
        job = app.job("cluster.default")(lambda i: None)
        handles = [job.enqueue_many([(i,) for i in range(b, b + 100)]) for b in range(0, 3000, 100)]
        acked = [landed for h in handles for landed in h.wait(timeout_s=60)]
        assert len(acked) == 3000
        assert {p for p, _ in acked} == {0, 1, 2}, "every partition, so every broker, leads some"
        cluster.kill_node(2)
        records = read_all(cluster.bootstrap, topic, 3000, timeout_s=60)
        assert len(records) == 3000, "every acknowledged job is still in Kafka"
        # Two copies left of three: writes go on (min.insync.replicas=2).
        assert len(job.enqueue_many([(i,) for i in range(100)]).wait(timeout_s=60)) == 100
        app.close()
    finally:
        cluster.down()
