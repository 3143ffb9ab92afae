"""`conveyor relay` with no queue named relays the configured queues and
every queue in the job type registry, and picks up a queue that appears
while it runs; a registry queue with no topic yet is named, not skipped
silently."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

import conveyor
from conveyor import _core
from conveyor.devservers import DevServers
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.servers


def _app(servers: DevServers, namespace: str, queue: str) -> conveyor.Conveyor:
    app = conveyor.Conveyor(
        conveyor.Settings(
            kafka_bootstrap=servers.kafka.bootstrap,
            redis_url=servers.redis.url,
            namespace=namespace,
            queues=(queue,),
        )
    )
    app.job(f"follow.{queue}", queue=queue)(lambda i: None)
    return app


@pytest.mark.timeout(180)
def test_the_relay_follows_the_queues_of_the_registry(servers: DevServers, namespace: str) -> None:
    alpha, beta = _app(servers, namespace, "alpha"), _app(servers, namespace, "beta")
    gamma = _app(servers, namespace, "gamma")
    alpha.ensure_topics()
    alpha.publish_registry()
    gamma.publish_registry()  # its topic is never created
    env = {
        **os.environ,
        "CONVEYOR_NAMESPACE": namespace,
        "CONVEYOR_KAFKA_BOOTSTRAP": servers.kafka.bootstrap,
        "CONVEYOR_REDIS_URL": servers.redis.url,
    }
    relay = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "relay", "--report-every", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    assert relay.stdout is not None
    reader = threading.Thread(target=lambda: output.extend(relay.stdout or []), daemon=True)
    reader.start()
    store = _core.RedisStore(servers.redis.url)
    try:
        alpha.enqueue_many("follow.alpha", [(i,) for i in range(10)]).wait(30)
        wait_until(lambda: store.ready_len(namespace, "alpha") == 10, 30, "alpha relayed")
        # A worker of a new queue starts: its topic and registry entry appear.
        beta.ensure_topics()
        beta.publish_registry()
        beta.enqueue_many("follow.beta", [(i,) for i in range(10)]).wait(30)
        wait_until(lambda: store.ready_len(namespace, "beta") == 10, 40, "beta relayed")
        assert store.ready_len(namespace, "alpha") == 10, "nothing relayed twice"
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.wait(30)
        reader.join(10)
        for app in (alpha, beta, gamma):
            app.close()
    text = "".join(output)
    assert "relay: alpha, default from Kafka" in text, text
    assert "new queues in the registry: beta" in text, text
    assert "queue gamma (job type follow.gamma) has no Kafka topic" in text, text
    assert relay.returncode == 0, text
