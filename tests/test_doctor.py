"""`conveyor doctor` against real servers: a healthy setup passes; each
problem (a server not running, a port held by something else, a setting
that means nothing, a Redis that may evict jobs, a missing topic) fails with
its fix."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import redis

import conveyor
from conveyor.devservers import DevServers
from conveyor.devservers.redis import RedisServer
from tests.helpers.cli import conveyor as conveyor_cli
from tests.helpers.ports import fixed_port

pytestmark = pytest.mark.servers


def _env(kafka: str, redis_url: str, namespace: str) -> dict[str, str]:
    return {
        "CONVEYOR_KAFKA_BOOTSTRAP": kafka,
        "CONVEYOR_REDIS_URL": redis_url,
        "CONVEYOR_NAMESPACE": namespace,
    }


def test_a_healthy_setup_passes(app: conveyor.Conveyor) -> None:
    s = app.settings
    done = conveyor_cli("doctor", env=_env(s.kafka_bootstrap, s.redis_url, s.namespace))
    assert done.returncode == 0, done.stdout + done.stderr
    for check in ("python", "configuration", "kafka", "topics", "redis"):
        assert f"  ok  {check}" in done.stdout, done.stdout
    assert "no problem found" in done.stdout


def test_servers_not_running_or_ports_taken_are_told_apart(
    servers: DevServers, namespace: str
) -> None:
    with socket.socket() as squatter, socket.socket() as free:
        # Something that is not Kafka holds one port; nothing listens on the other.
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        free.bind(("127.0.0.1", 0))
        kafka = f"127.0.0.1:{squatter.getsockname()[1]}"
        redis_url = f"redis://127.0.0.1:{free.getsockname()[1]}"
        done = conveyor_cli("doctor", env=_env(kafka, redis_url, namespace))
    assert done.returncode == 1, done.stdout
    lines = done.stdout.splitlines()
    kafka_fix = lines[next(i for i, line in enumerate(lines) if "fail  kafka" in line) + 1]
    assert "another process holds it" in kafka_fix, done.stdout
    redis_fix = lines[next(i for i, line in enumerate(lines) if "fail  redis" in line) + 1]
    assert "nothing listens" in redis_fix, done.stdout
    assert "conveyor dev up" in redis_fix, done.stdout
    assert "2 problem(s) found" in done.stdout


def test_a_setting_that_means_nothing_is_named(servers: DevServers, namespace: str) -> None:
    env = {
        **_env(servers.kafka.bootstrap, servers.redis.url, namespace),
        "CONVEYOR_TALLIES": "maybe",
    }
    done = conveyor_cli("doctor", env=env)
    assert done.returncode == 1
    assert "fail  configuration CONVEYOR_TALLIES must be 'on' or 'off'" in done.stdout


def test_a_redis_that_may_evict_jobs_and_a_missing_topic_fail(
    servers: DevServers, namespace: str, tmp_path: Path
) -> None:
    evicting = RedisServer(port=fixed_port(26686), home=tmp_path / "redis")
    evicting.up()
    try:
        redis.Redis.from_url(evicting.url).config_set("maxmemory-policy", "allkeys-lru")
        done = conveyor_cli("doctor", env=_env(servers.kafka.bootstrap, evicting.url, namespace))
    finally:
        evicting.down()
    assert done.returncode == 1
    assert "fail  redis memory" in done.stdout
    assert "may evict queued jobs" in done.stdout
    assert "fix: CONFIG SET maxmemory-policy noeviction" in done.stdout
    # This namespace's queue has no topic yet.
    assert "fail  topics        no topic for queue(s) default" in done.stdout
    assert "fix: conveyor topics create default" in done.stdout
