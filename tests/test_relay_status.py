"""What a relay tells operators while it runs: its lag, metrics and the
status it publishes to Redis for `conveyor relays` and the dashboard."""

from __future__ import annotations

import json
import time

import pytest

import conveyor
from conveyor import _core
from tests.helpers.cli import conveyor as conveyor_cli
from tests.helpers.relay import start_relay, wait_until

pytestmark = pytest.mark.servers


def ready_len(app: conveyor.Conveyor) -> int:
    return _core.RedisStore(app.settings.redis_url).ready_len(app.settings.namespace, "default")


def send(app: conveyor.Conveyor, n: int) -> None:
    app.enqueue_many("relay.test", [(i,) for i in range(n)]).wait(60)


def test_lag_metrics_and_status_show_a_paused_backlog(app: conveyor.Conveyor) -> None:
    import urllib.request

    from conveyor.metrics_http import serve_metrics

    s = app.settings
    topic = s.topic_for("default")
    store = _core.RedisStore(s.redis_url)
    store.set_relay_control(s.namespace, "paused", topic, "1")
    relay = start_relay(app)
    server = serve_metrics("127.0.0.1:0", relay.metrics)
    env = {"CONVEYOR_REDIS_URL": s.redis_url, "CONVEYOR_NAMESPACE": s.namespace}
    try:
        wait_until(lambda: len(relay.assignment()) == 3, 30, "the partitions assigned")
        send(app, 300)
        # librdkafka reports positions once a second.
        wait_until(
            lambda: len(relay.lag()) == 3 and sum(p[4] for p in relay.lag()) == 300,
            30,
            "a lag of 300 over the 3 partitions",
        )
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
        lags = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("conveyor_relay_lag_jobs{")
        ]
        assert sum(lags) == 300
        assert len(lags) == 3
        assert f'conveyor_relay_paused{{topic="{topic}"}} 1' in text
        assert "conveyor_relay_relayed_total 0" in text
        out = conveyor_cli("relays", env=env)
        assert out.returncode == 0, out.stderr
        assert f"paused {topic}" in out.stdout
        rows = [line.split() for line in out.stdout.splitlines() if line.strip().startswith(topic)]
        assert sum(int(r[-2]) for r in rows) == 300, out.stdout  # lag, then the watermark
        store.set_relay_control(s.namespace, "paused", topic, None)
        wait_until(lambda: ready_len(app) == 300, 30, "the backlog relayed after resume")
        wait_until(lambda: sum(p[4] for p in relay.lag()) == 0, 30, "no lag left")
        assert "conveyor_relay_redis_write_seconds_count" in relay.metrics()
    finally:
        server.shutdown()
        relay.stop()
    out = conveyor_cli("relays", env=env)
    assert out.returncode == 1, "a stopped relay removes its status"


def test_an_idle_relay_republishes_its_status_every_5_s_not_every_tick(
    app: conveyor.Conveyor,
) -> None:
    """docs/relay.md: the status is published when it changed, and at least
    every 5 s; readers count a relay gone after 10 s without one."""
    s = app.settings
    store = _core.RedisStore(s.redis_url)
    relay = start_relay(app)
    try:
        wait_until(lambda: len(relay.assignment()) == 3, 30, "the partitions assigned")
        wait_until(lambda: bool(store.relay_statuses(s.namespace)), 30, "a status published")
        time.sleep(2.0)  # the lag readings of the new assignment settle
        seen: list[tuple[float, float]] = []
        end = time.monotonic() + 12.0
        while time.monotonic() < end:
            [(_, raw)] = store.relay_statuses(s.namespace)
            seen.append((time.time(), json.loads(raw)["updated_at"]))
            time.sleep(0.2)
    finally:
        relay.stop()
    oldest = max(now - updated for now, updated in seen)
    # 5 s, plus up to one observer tick (1 s) and a slow machine's margin.
    assert oldest < 7.0, f"an idle relay's status went {oldest:.1f} s unpublished"
    publishes = len({updated for _, updated in seen})
    assert 2 <= publishes <= 4, f"{publishes} publishes of an unchanged status in 12 s"
