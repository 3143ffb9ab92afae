"""The real Kafka and Redis, brought up by Conveyor's own dev-server code, answer."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import conveyor
from conveyor import _core
from conveyor.devservers import DevServers
from conveyor.devservers.kafka import KAFKA_VERSION, require_java
from conveyor.errors import DevServerError, RedisError, UnknownTopicError
from tests.helpers.cli import conveyor as conveyor_cli

pytestmark = pytest.mark.servers


def test_a_real_kafka_broker_answers_metadata(servers: DevServers) -> None:
    cluster_id, brokers, _topics = _core.kafka_cluster_info(servers.kafka.bootstrap)
    assert cluster_id == (servers.kafka.nodes[0].home / "cluster.id").read_text().strip()
    assert brokers == [(1, "127.0.0.1", servers.kafka.nodes[0].port)]
    jars = list((servers.kafka.cache / f"kafka-{KAFKA_VERSION}" / "libs").glob("kafka_2.13-*.jar"))
    assert [j.name for j in jars] == [f"kafka_2.13-{KAFKA_VERSION}.jar"]


def test_a_real_redis_answers_info(servers: DevServers) -> None:
    info = dict(_core.RedisStore(servers.redis.url).server_info())
    assert info["redis_version"].split(".")[0] >= "6"
    assert info["tcp_port"] == str(servers.redis.port)
    assert int(info["process_id"]) == servers.redis.pid()


def test_topics_are_created_on_purpose_once(servers: DevServers, topic: str) -> None:
    assert _core.kafka_create_topic(servers.kafka.bootstrap, topic, 3) is False
    _, _, topics = _core.kafka_cluster_info(servers.kafka.bootstrap)
    assert topic in topics


def test_writing_to_a_missing_topic_is_an_error_not_an_auto_create(servers: DevServers) -> None:
    producer = _core.KafkaProducer(servers.kafka.bootstrap, delivery_timeout_s=3.0)
    started = time.monotonic()
    with pytest.raises(UnknownTopicError, match="conveyor topics create"):
        producer.send_envelopes("no-such-topic-here", [conveyor.Envelope("x", b"{}")]).wait()
    assert time.monotonic() - started < 15
    _, _, topics = _core.kafka_cluster_info(servers.kafka.bootstrap)
    assert "no-such-topic-here" not in topics


def test_unreachable_redis_is_a_typed_error() -> None:
    with pytest.raises(RedisError):
        _core.RedisStore("redis://127.0.0.1:1/0", timeout_s=1.0)


def test_bringing_servers_up_again_reuses_them(servers: DevServers) -> None:
    pids = (servers.redis.pid(), [pid for _, pid in servers.kafka.status()])
    started = time.monotonic()
    assert servers.up() == (False, False)
    assert time.monotonic() - started < 10
    assert (servers.redis.pid(), [pid for _, pid in servers.kafka.status()]) == pids


def dev_env(servers: DevServers) -> dict[str, str]:
    """Environment that points `conveyor dev` and the demo at the test servers."""
    return {
        "CONVEYOR_DEV_HOME": str(servers.redis.home.parent),
        "CONVEYOR_DEV_KAFKA_PORT": str(servers.kafka.nodes[0].port),
        "CONVEYOR_DEV_REDIS_PORT": str(servers.redis.port),
    }


def test_dev_status_cli_reports_running_servers(servers: DevServers) -> None:
    out = conveyor_cli("dev", "status", env=dev_env(servers))
    assert out.returncode == 0, out.stderr
    assert f"127.0.0.1:{servers.kafka.nodes[0].port}" in out.stdout
    assert out.stdout.count("running (pid") == 2


def test_dev_status_cli_fails_when_nothing_runs(tmp_path: Path) -> None:
    out = conveyor_cli("dev", "status", env={"CONVEYOR_DEV_HOME": str(tmp_path)})
    assert out.returncode == 1
    assert out.stdout.count("stopped") == 2


def test_missing_java_is_explained(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DevServerError, match=r"Java 17 or newer.*apt-get install"):
        require_java()


def test_settings_default_to_the_dev_servers() -> None:
    from conveyor import settings

    defaults = conveyor.Settings()
    assert defaults.kafka_bootstrap == f"127.0.0.1:{settings.DEV_KAFKA_PORT}"
    assert defaults.redis_url == f"redis://127.0.0.1:{settings.DEV_REDIS_PORT}/0"


@pytest.mark.parametrize("mode", [[], ["--redis-only"]], ids=["kafka", "redis-only"])
def test_the_demo_accounts_for_every_job(servers: DevServers, mode: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "examples.demo", "--jobs", "300", *mode],
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, **dev_env(servers)},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "= 300 of 300; missing 0, ran twice 0" in out.stdout, out.stdout
    assert "through the HTTP gate" in out.stdout
    if mode:
        assert "no gate and no relay (Redis only)" in out.stdout
        assert " 0 through the HTTP gate" in out.stdout
    assert "every job accounted for" in out.stdout
    assert servers.redis.pid() is not None, "the demo stops only servers it started"


def test_a_port_taken_by_someone_else_is_refused_clearly(
    servers: DevServers, tmp_path: Path
) -> None:
    other = DevServers.at(
        tmp_path, kafka_port=servers.kafka.nodes[0].port, redis_port=servers.redis.port
    )
    with pytest.raises(DevServerError, match="already in use"):
        other.redis.up()
    with pytest.raises(DevServerError, match="already in use"):
        other.kafka.up()


def test_a_new_kafka_cluster_id_never_starts_with_a_dash() -> None:
    from conveyor.devservers.kafka import new_cluster_id

    draws = iter([b"\xf8" + bytes(15), bytes(16)])  # the first encodes to "-AAA..."
    cid = new_cluster_id(lambda: next(draws))
    assert cid == "AAAAAAAAAAAAAAAAAAAAAA"
