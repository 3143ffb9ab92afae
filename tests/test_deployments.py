"""Queues on several Redis deployments fed by one Kafka cluster: relays,
workers, the direct path and the CLI follow `Settings.queue_redis`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import conveyor
from conveyor import _core
from conveyor.devservers import DevServers, RedisServer
from conveyor.relays import merged_metrics, start_relays
from tests.helpers.cli import conveyor as conveyor_cli
from tests.helpers.ports import fixed_port
from tests.helpers.relay import wait_until

pytestmark = pytest.mark.servers


@pytest.fixture
def second_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(port=fixed_port(26779), home=tmp_path / "redis-b")
    server.up()
    yield server
    server.down()


def test_one_kafka_feeds_two_redis_deployments(
    servers: DevServers, second_redis: RedisServer, namespace: str
) -> None:
    settings = conveyor.Settings(
        kafka_bootstrap=servers.kafka.bootstrap,
        redis_url=servers.redis.url,
        namespace=namespace,
        queue_redis=(("billing", second_redis.url),),
    )
    app = conveyor.Conveyor(settings)
    ran: dict[str, list[int]] = {"push": [], "charge": []}

    @app.job("d.push")
    def push(i: int) -> None:
        ran["push"].append(i)

    @app.job("d.charge", queue="billing")
    def charge(i: int) -> None:
        ran["charge"].append(i)

    app.ensure_topics()
    relays = start_relays(settings, ["default", "billing"])
    try:
        assert sorted(url for url, _, _ in relays) == sorted([servers.redis.url, second_redis.url])
        push.enqueue_many([[i] for i in range(200)]).wait(30)
        charge.enqueue_many([[i] for i in range(100)]).wait(30)
        a, b = _core.RedisStore(servers.redis.url), _core.RedisStore(second_redis.url)
        wait_until(
            lambda: (
                a.ready_len(namespace, "default") == 200
                and b.ready_len(namespace, "billing") == 100
            ),
            30,
            "each queue relayed into its own Redis",
        )
        assert a.ready_len(namespace, "billing") == 0
        assert b.ready_len(namespace, "default") == 0
        text = merged_metrics([relay for _, _, relay in relays])
        assert 'conveyor_relay_relayed_total{relay="0"}' in text
        assert text.count("# TYPE conveyor_relay_relayed_total counter") == 1
        # The direct path writes where the queue lives too.
        app.set_route("d.charge", conveyor.Route(kafka_percent=0))
        charge.enqueue(100)
        assert b.ready_len(namespace, "billing") == 101
        # The CLI reads each queue from its deployment.
        env = {
            "CONVEYOR_REDIS_URL": servers.redis.url,
            "CONVEYOR_NAMESPACE": namespace,
            "CONVEYOR_QUEUE_REDIS": f"billing={second_redis.url}",
        }
        out = conveyor_cli("queues", "default", "billing", env=env)
        rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()[1:]}
        assert rows["default"][1] == "200"
        assert rows["billing"][1] == "101"
        time.sleep(1.5)  # relays publish their status once a second
        out = conveyor_cli("relays", env=env)
        assert out.stdout.count("relay ") == 2, out.stdout
    finally:
        for _, _, relay in relays:
            relay.stop()

    with pytest.raises(conveyor.ConfigError, match="a worker serves one"):
        conveyor.Worker(app)
    billing = conveyor.Worker(app, ["billing"], threads=2)
    billing.start()
    try:
        wait_until(lambda: len(ran["charge"]) == 101, 30, "billing jobs run from Redis B")
    finally:
        billing.stop()
    assert sorted(ran["charge"]) == list(range(101))
    assert ran["push"] == []


def test_queue_redis_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_QUEUE_REDIS", "billing=redis://b:1/0 emails=redis://:pw@c:2/1")
    settings = conveyor.Settings.from_env()
    assert settings.redis_url_for("billing") == "redis://b:1/0"
    assert settings.redis_url_for("emails") == "redis://:pw@c:2/1"
    assert settings.redis_url_for("other") == settings.redis_url
    assert "pw" not in repr(settings), "secrets stay out of reprs"
