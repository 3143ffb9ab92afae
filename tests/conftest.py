"""Session fixtures: the real Kafka and Redis, started by Conveyor's own dev-server code.

Tests never skip for a missing server: if Kafka or Redis cannot be started the
session fails, locally and in CI alike. The servers run on their own ports and
folder (not the `conveyor dev up` ones), and each test gets its own topic and
Redis namespace so tests never see each other's data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

import conveyor
from conveyor import _core
from conveyor.devservers import DevServers

ROOT = Path(__file__).resolve().parent.parent
TEST_HOME = Path(os.environ.get("CONVEYOR_TEST_HOME", ROOT / ".dev" / "test"))
TEST_KAFKA_PORT = int(os.environ.get("CONVEYOR_TEST_KAFKA_PORT", "29092"))
TEST_REDIS_PORT = int(os.environ.get("CONVEYOR_TEST_REDIS_PORT", "26379"))

#: Modules whose subject is the servers, their faults or the Rust components
#: (brokers killed, clusters, TLS, the relay, the gate, the wheel and the
#: quickstart's build, the browser): their Python is incidental, so CI runs
#: them on the newest supported Python only (`make test-oldest` leaves out
#: what is marked `once`). Every other test runs on the oldest too.
ONCE = frozenset(
    {
        "test_acl",
        "test_canaries",
        "test_chaos",
        "test_cluster",
        "test_dashboard_browser",
        "test_failure_memory",
        "test_gate",
        "test_gate_access",
        "test_gate_limits",
        "test_gate_lookups",
        "test_gate_refusals",
        "test_kafka_security",
        "test_quickstart",
        "test_recovery",
        "test_redis_cluster",
        "test_redis_tls",
        "test_relay",
        "test_relay_follow",
        "test_site",
        "test_wheel",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks the tests of the `ONCE` modules."""
    for item in items:
        if item.path.stem in ONCE:
            item.add_marker(pytest.mark.once)


settings.register_profile("fast", max_examples=100, deadline=None)
settings.register_profile("slow", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))


@pytest.fixture(scope="session")
def servers() -> Iterator[DevServers]:
    """Kafka and Redis for the whole session; stopped at the end if this session
    started them (set CONVEYOR_TEST_KEEP_SERVERS=1 to keep them for the next run)."""
    servers = DevServers.at(TEST_HOME, kafka_port=TEST_KAFKA_PORT, redis_port=TEST_REDIS_PORT)
    kafka_started, redis_started = servers.up()
    yield servers
    if not os.environ.get("CONVEYOR_TEST_KEEP_SERVERS"):
        if kafka_started:
            servers.kafka.down()
        if redis_started:
            servers.redis.down()


def _unique(request: pytest.FixtureRequest, prefix: str) -> str:
    name = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]
    return f"{prefix}-{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def topic(servers: DevServers, request: pytest.FixtureRequest) -> str:
    """A fresh 3-partition topic of this test's own."""
    name = _unique(request, "t")
    assert _core.kafka_create_topic(servers.kafka.bootstrap, name, 3, 1)
    return name


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> str:
    """A Redis key namespace of this test's own."""
    return _unique(request, "ns")


@pytest.fixture
def conveyor_env(servers: DevServers, namespace: str) -> dict[str, str]:
    """The environment of a process (a worker, a web service, a page's
    examples) pointed at the test servers and this test's namespace, with
    the checkout importable."""
    return {
        **os.environ,
        "CONVEYOR_KAFKA_BOOTSTRAP": servers.kafka.bootstrap,
        "CONVEYOR_REDIS_URL": servers.redis.url,
        "CONVEYOR_NAMESPACE": namespace,
        "PYTHONPATH": str(ROOT),
    }


@pytest.fixture
def app(servers: DevServers, namespace: str) -> Iterator[conveyor.Conveyor]:
    """An app on the test servers with this test's namespace and its queues' topics
    created (test modules that need something else define their own `app`)."""
    app = conveyor.Conveyor(
        conveyor.Settings(
            kafka_bootstrap=servers.kafka.bootstrap,
            redis_url=servers.redis.url,
            namespace=namespace,
        )
    )
    app.ensure_topics()
    yield app
    app.close()


@pytest.fixture
def running() -> Iterator[list[conveyor.Worker]]:
    """Workers a test starts; stopped at its end whatever happens."""
    workers: list[conveyor.Worker] = []
    yield workers
    for w in workers:
        w.stop(grace_s=2)


@pytest.fixture
def gate_app(servers: DevServers, namespace: str) -> Iterator[conveyor.Conveyor]:
    """The gate tests' app: queues default and billing, job types
    billing.charge (into billing) and notify.push, registry published."""
    app = conveyor.Conveyor(
        conveyor.Settings(
            kafka_bootstrap=servers.kafka.bootstrap,
            redis_url=servers.redis.url,
            namespace=namespace,
            queues=("default", "billing"),
        )
    )

    @app.job("billing.charge", queue="billing")
    def charge(invoice: str, amount_cents: int) -> None: ...

    @app.job("notify.push")
    def push(user: int) -> None: ...

    app.ensure_topics()
    assert app.publish_registry() == 2
    yield app
    app.close()
