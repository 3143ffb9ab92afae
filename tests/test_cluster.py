"""A 3-broker Kafka on loopback, started by the same dev-server code, survives
losing a broker with acks=all: the multi-broker shape later failure tests use."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conveyor import _core
from conveyor.devservers import DevServers
from kafka_reader import read_all

pytestmark = pytest.mark.servers


def test_three_brokers_keep_every_acknowledged_job_when_one_stops(tmp_path: Path) -> None:
    cluster = DevServers.at(tmp_path, kafka_port=29300, redis_port=26699, kafka_nodes=3).kafka
    started = time.monotonic()
    try:
        assert cluster.up(timeout_s=120)
        _, brokers, _ = _core.kafka_cluster_info(cluster.bootstrap)
        assert sorted(b[0] for b in brokers) == [1, 2, 3]
        assert _core.kafka_create_topic(cluster.bootstrap, "replicated", 3, 3)
        producer = _core.KafkaProducer(cluster.bootstrap, acks="all", delivery_timeout_s=20)
        first = producer.send("replicated", "cluster.test", [b"{}"] * 1000)
        assert len(first.wait(30)) == 1000
        cluster.stop_node(2)
        # Leaders move to the two brokers left; min.insync.replicas=2 still holds.
        second = producer.send("replicated", "cluster.test", [b"{}"] * 1000)
        assert len(second.wait(30)) == 1000
        records = read_all(cluster.bootstrap, "replicated", 2000, timeout_s=60)
        assert len(records) == 2000
    finally:
        cluster.down()
    assert time.monotonic() - started < 120
