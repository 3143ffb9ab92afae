"""`conveyor status`: queues by state, relays with their lag and guards, and
what needs attention (exit 1): dead jobs, no live relay."""

from __future__ import annotations

import pytest

import conveyor
from conveyor import _core
from tests.helpers.cli import conveyor as conveyor_cli
from tests.helpers.relay import start_relay
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.servers


@pytest.mark.timeout(120)
def test_status_shows_queues_relays_and_what_needs_attention(app: conveyor.Conveyor) -> None:
    s = app.settings
    env = {
        "CONVEYOR_REDIS_URL": s.redis_url,
        "CONVEYOR_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
        "CONVEYOR_NAMESPACE": s.namespace,
    }

    @app.job("st.bad", max_attempts=1)
    def bad() -> None:
        raise ValueError("no")

    @app.job("st.ok")
    def ok() -> None:
        pass

    app.set_route("st.bad", conveyor.Route(kafka_percent=0))
    worker = conveyor.Worker(app, threads=1)
    worker.start()
    try:
        bad.enqueue()
        wait_until(lambda: worker.stats()["dead"] == 1, 20, "the dead job")
    finally:
        worker.stop(grace_s=5)
    out = conveyor_cli("status", env=env)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "1 dead jobs in default" in out.stdout
    assert "no relay has reported" in out.stdout
    row = next(line.split() for line in out.stdout.splitlines() if line.split()[:1] == ["default"])
    assert row[4] == "1", out.stdout  # queue, queued, scheduled, leases, dead

    assert conveyor_cli("dead", "purge", "default", env=env).returncode == 0
    store = _core.RedisStore(s.redis_url)
    topic = s.topic_for("default")
    store.set_relay_control(s.namespace, "paused", topic, "1")
    relay = start_relay(app)
    try:
        wait_until(lambda: len(relay.assignment()) == 3, 30, "the partitions assigned")
        app.enqueue_many("st.ok", [()] * 3).wait(10)
        wait_until(lambda: sum(p[4] for p in relay.lag()) == 3, 30, "a lag of 3")
        wait_until(
            lambda: f"lag {topic}: 3" in conveyor_cli("status", env=env).stdout, 30, "lag shown"
        )
        out = conveyor_cli("status", env=env)
        assert "relays: 1 live" in out.stdout
        assert f"paused {topic}" in out.stdout
        assert out.returncode == 0, out.stdout  # a pause is a choice, not a problem
        assert "nothing needs attention" in out.stdout
    finally:
        relay.stop()
        store.set_relay_control(s.namespace, "paused", topic, None)
