"""Canaries: one job into every partition of a queue at an interval passes
Kafka, the relay, Redis and a worker (which runs it whatever its app
registers); its latency per stage is exported, and a partition whose
canaries stop arriving is flagged missing (metrics, `conveyor status`).
`conveyor relay --canary-every` sends them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import conveyor
from conveyor import _core, canaries
from conveyor.canaries import CanarySender, missing
from tests.helpers.cli import conveyor as conveyor_cli
from tests.helpers.relay import start_relay
from tests.helpers.waiting import wait_until


def _gauges(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match:
            out[match.group(1)] = float(match.group(2))
    return out


def test_missing_partitions_are_judged_from_the_newest_canary_sent() -> None:
    arrived = {0: {"sent_at": 100.0}, 1: {"sent_at": 30.0}}
    assert missing(arrived, 3, newest_sent=100.0, after_s=60, since=90.0) == [1]
    assert missing(arrived, 3, newest_sent=100.0, after_s=60, since=20.0) == [1, 2]
    assert missing({}, 3, newest_sent=None) == [], "nothing sent, nothing missing"


@pytest.mark.servers
@pytest.mark.timeout(120)
def test_canaries_cross_every_partition_and_stopped_ones_are_missed(
    app: conveyor.Conveyor,
) -> None:
    s = app.settings
    relay = start_relay(app)
    worker = conveyor.Worker(app, threads=1)
    worker.start()
    sender = CanarySender(s, ["default"], every_s=0.5)
    store = _core.RedisStore(s.redis_url)
    topic = s.topic_for("default")
    try:
        wait_until(lambda: len(relay.assignment()) == 3, 30, "the partitions assigned")
        began = time.time()

        def arrived_from_all() -> bool:
            sender.tick()
            got = canaries.read(s, "default")
            return len(got) == 3 and all(a["sent_at"] >= began for a in got.values())

        wait_until(arrived_from_all, 30, "a canary from each partition")
        text = sender.metrics()
        latency = _gauges(text, "conveyor_canary_latency_seconds")
        for partition in range(3):
            for stage in ("to_kafka", "in_kafka", "in_redis"):
                labels = f'queue="default",partition="{partition}",stage="{stage}"'
                assert 0 <= latency[labels] < 30, (labels, text)
        assert set(_gauges(text, "conveyor_canary_missing").values()) == {0.0}
        # Relaying stops: the canaries stop arriving, and are missed after
        # six intervals.
        store.set_relay_control(s.namespace, "paused", topic, "1")

        def all_missing() -> bool:
            sender.tick()
            flags = _gauges(sender.metrics(), "conveyor_canary_missing")
            return len(flags) == 3 and set(flags.values()) == {1.0}

        wait_until(all_missing, 30, "every partition missed")
    finally:
        store.set_relay_control(s.namespace, "paused", topic, None)
        worker.stop(grace_s=5)
        relay.stop()
    assert "conveyor.canary" not in app.registry, "workers run canaries unregistered"


@pytest.mark.servers
@pytest.mark.timeout(120)
def test_the_relay_command_sends_them_and_status_names_a_stopped_one(
    app: conveyor.Conveyor,
) -> None:
    s = app.settings
    env = {
        "CONVEYOR_REDIS_URL": s.redis_url,
        "CONVEYOR_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
        "CONVEYOR_NAMESPACE": s.namespace,
    }
    relay = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "relay", "default", "--canary-every", "0.5"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    worker = conveyor.Worker(app, threads=1)
    worker.start()
    try:
        wait_until(lambda: len(canaries.read(s, "default")) == 3, 60, "canaries relayed")
    finally:
        worker.stop(grace_s=5)
        relay.send_signal(signal.SIGTERM)
        relay.communicate(timeout=30)
    out = conveyor_cli("status", env=env)
    assert "canaries default: 3 of 3 partitions" in out.stdout, out.stdout
    assert "stopped arriving" not in out.stdout
    # A partition whose last canary is two minutes old has stopped.
    old = {"sent_at": time.time() - 120, "kafka_at": 0, "relayed_at": 0, "started_at": 0}
    _core.RedisStore(s.redis_url).record_canary(s.namespace, "default", 1, json.dumps(old))
    out = conveyor_cli("status", env=env)
    assert out.returncode == 1
    assert "canaries from default partition 1 stopped arriving" in out.stdout, out.stdout
