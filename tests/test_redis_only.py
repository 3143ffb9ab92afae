"""Starting with Redis only (`Settings.redis_only`, `CONVEYOR_REDIS_ONLY=on`,
`conveyor dev up --redis-only`): every job type without a route goes straight
into Redis and nothing needs Kafka; moving a type to Kafka later is the
per-type route of `conveyor.routing`."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import conveyor
from conveyor import _core, overview
from conveyor.devservers import DevServers
from tests.helpers.ports import fixed_port
from tests.helpers.relay import start_relay
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.servers

#: Nothing listens here: a Kafka client pointed at it would fail or hang.
NO_KAFKA = "127.0.0.1:9"
#: `conveyor dev up --redis-only`'s Redis in the CLI test; its Kafka port
#: must stay closed.
DEV_REDIS_PORT = fixed_port(26693)
DEV_KAFKA_PORT = fixed_port(29330)


@pytest.fixture
def redis_only(servers: DevServers, namespace: str) -> Iterator[conveyor.Conveyor]:
    app = conveyor.Conveyor(
        conveyor.Settings(
            kafka_bootstrap=NO_KAFKA,
            redis_url=servers.redis.url,
            namespace=namespace,
            redis_only=True,
        )
    )
    yield app
    app.close()


def test_every_job_goes_straight_into_redis_and_runs(
    redis_only: conveyor.Conveyor, running: list[conveyor.Worker]
) -> None:
    app = redis_only
    seen: list[int] = []

    @app.job("r.add")
    def add(a: int, b: int) -> None:
        seen.append(a + b)

    @app.job("r.io")
    async def io(i: int) -> None:
        await asyncio.sleep(0.01)
        seen.append(1000 + i)

    handles = [add.enqueue(i, 1) for i in range(40)]
    handles.append(add.enqueue_many([(i, 100) for i in range(10)]))
    handles.append(add.enqueue_with((5, 5), dedup_key="once"))
    handles.append(add.enqueue_with((5, 5), dedup_key="once"))  # a duplicate, dropped
    handles.append(add.enqueue_with((0, 2000), delay=0.5))
    handles.append(asyncio.run(io.enqueue_async(7)))
    for h in handles:
        assert h.done()
        assert all(p == (-1, -1) for p in h.wait(0)), "written to Redis, not Kafka"
    assert app._producer is None, "no Kafka producer was made"

    worker = conveyor.Worker(app, threads=2)
    running.append(worker)
    worker.start()
    wait_until(lambda: len(seen) == 53, what="every job to run")
    expected = [i + 1 for i in range(40)] + [i + 100 for i in range(10)] + [10, 2000, 1007]
    assert sorted(seen) == sorted(expected)
    counts = _core.RedisStore(app.settings.redis_url).counts(app.settings.namespace, "default")
    assert counts["duplicates"] == 1
    # `conveyor status` asks for no relay, and counts the direct path.
    view = overview.gather(app.settings, ["default"])
    assert not [a for a in view.attention if "relay" in a], view.attention
    (hops,) = view.hops
    assert hops.unchecked == ""
    assert hops.totals["direct"] >= 53


def test_a_type_moves_to_kafka_by_its_route(
    servers: DevServers, namespace: str, running: list[conveyor.Worker]
) -> None:
    """The migration: one type routed through Kafka (here at 100%), the
    others still straight into Redis, one worker running both."""
    app = conveyor.Conveyor(
        conveyor.Settings(
            kafka_bootstrap=servers.kafka.bootstrap,
            redis_url=servers.redis.url,
            namespace=namespace,
            redis_only=True,
            routes=(("r.moved", conveyor.Route(kafka_percent=100)),),
        )
    )
    seen: list[str] = []

    @app.job("r.moved")
    def moved(i: int) -> None:
        seen.append(f"moved {i}")

    @app.job("r.stays")
    def stays(i: int) -> None:
        seen.append(f"stays {i}")

    app.ensure_topics()
    via_kafka = [moved.enqueue(i) for i in range(5)]
    direct = [stays.enqueue(i) for i in range(5)]
    assert all(p >= 0 for h in via_kafka for p, _ in h.wait(30)), "through Kafka"
    assert all(h.wait(0) == [(-1, -1)] for h in direct), "straight into Redis"
    relay = start_relay(app)
    worker = conveyor.Worker(app, threads=2)
    running.append(worker)
    worker.start()
    try:
        wait_until(lambda: len(seen) == 10, timeout_s=30, what="both paths' jobs to run")
    finally:
        relay.stop()
        app.close()
    expected = [f"moved {i}" for i in range(5)] + [f"stays {i}" for i in range(5)]
    assert sorted(seen) == sorted(expected)


def test_the_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_REDIS_ONLY", "on")
    assert conveyor.Settings.from_env().redis_only
    monkeypatch.setenv("CONVEYOR_REDIS_ONLY", "maybe")
    with pytest.raises(conveyor.ConfigError, match="CONVEYOR_REDIS_ONLY"):
        conveyor.Settings.from_env()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_dev_up_redis_only_starts_no_kafka(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CONVEYOR_DEV_HOME": str(tmp_path / "dev"),
        "CONVEYOR_DEV_REDIS_PORT": str(DEV_REDIS_PORT),
        "CONVEYOR_DEV_KAFKA_PORT": str(DEV_KAFKA_PORT),
        "CONVEYOR_REDIS_URL": f"redis://127.0.0.1:{DEV_REDIS_PORT}/0",
        "CONVEYOR_KAFKA_BOOTSTRAP": f"127.0.0.1:{DEV_KAFKA_PORT}",
        "CONVEYOR_REDIS_ONLY": "on",
    }

    def conveyor_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "conveyor", *args],
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )

    try:
        up = conveyor_cli("dev", "up", "--redis-only")
        assert up.returncode == 0, up.stderr
        assert "CONVEYOR_REDIS_ONLY=on" in up.stdout
        assert _listening(DEV_REDIS_PORT)
        assert not _listening(DEV_KAFKA_PORT), "no Kafka was started"
        assert conveyor_cli("dev", "status", "--redis-only").returncode == 0
        assert conveyor_cli("dev", "status").returncode == 1, "Kafka is not running"
        doctor = conveyor_cli("doctor")
        assert "no Kafka (Redis only)" in doctor.stdout
        assert "kafka" not in doctor.stdout.replace("no Kafka", "").lower()
    finally:
        conveyor_cli("dev", "down")
    assert not _listening(DEV_REDIS_PORT)


def test_a_job_can_be_named_before_it_is_sent(redis_only: conveyor.Conveyor) -> None:
    """`enqueue_with(job_id=...)`: what an enqueue on a transaction's commit
    needs (conveyor.contrib.django), on the direct path here."""

    @redis_only.job("r.named")
    def named(i: int) -> None: ...

    job_id = conveyor.new_job_id()
    assert named.enqueue_with((1,), job_id=job_id).id == job_id
    found = redis_only.lookup(job_id)
    assert found is not None
    assert (found.state, found.job_type) == ("queued", "r.named")
    with pytest.raises(conveyor.InvalidJobError):
        named.enqueue_with((1,), job_id="not an id")


def test_an_enqueue_redis_does_not_take_raises() -> None:
    app = conveyor.Conveyor(
        conveyor.Settings(
            kafka_bootstrap=NO_KAFKA, redis_url="redis://127.0.0.1:9/0", redis_only=True
        )
    )

    @app.job("r.lost")
    def lost(i: int) -> None: ...

    with pytest.raises(conveyor.ConveyorError):
        lost.enqueue(1)
