"""Queues on a Redis Cluster: three primaries on loopback, started by
Conveyor's own dev-server code; relay, workers, the direct path and the CLI
all reach it through one `redis+cluster://` URL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import conveyor
from conveyor import _core
from conveyor.devservers import DevServers, RedisCluster
from conveyor.relays import start_relays
from tests.helpers.cli import conveyor as conveyor_cli
from tests.helpers.ports import fixed_port
from tests.helpers.relay import wait_until

pytestmark = pytest.mark.servers

QUEUES = ["default", "billing", "emails"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    home: Path = tmp_path_factory.mktemp("redis-cluster")
    cluster = RedisCluster(ports=tuple(fixed_port(p) for p in (27101, 27102, 27103)), home=home)
    cluster.up()
    yield cluster
    cluster.down()


def _owner(cluster: RedisCluster, key: str) -> redis.Redis:
    """A plain client of the node serving `key` (the others answer MOVED)."""
    for port in cluster.ports:
        node = redis.Redis(port=port)
        try:
            node.exists(key)
        except redis.exceptions.ResponseError:
            node.close()
            continue
        return node
    raise AssertionError(f"no node serves {key}")


def _node_of_each_queue(cluster: RedisCluster, namespace: str) -> dict[str, int]:
    ports = {}
    for q in QUEUES:
        node = _owner(cluster, f"cv:{namespace}:{{{q}}}:ready")
        ports[q] = node.connection_pool.connection_kwargs["port"]
        node.close()
    return ports


def test_relay_and_workers_run_every_job_once_on_a_cluster(
    servers: DevServers, cluster: RedisCluster, namespace: str
) -> None:
    nodes = _node_of_each_queue(cluster, namespace)
    assert len(set(nodes.values())) > 1, f"the queues should span nodes: {nodes}"
    settings = conveyor.Settings(
        kafka_bootstrap=servers.kafka.bootstrap,
        redis_url=cluster.url,
        namespace=namespace,
        queues=tuple(QUEUES),
    )
    app = conveyor.Conveyor(settings)
    ran: dict[str, list[int]] = {q: [] for q in QUEUES}
    lock = threading.Lock()

    def handler_for(queue: str) -> None:
        @app.job(f"c.{queue}", queue=queue)
        def run(i: int) -> None:
            with lock:
                ran[queue].append(i)

    for queue in QUEUES:
        handler_for(queue)
    app.ensure_topics()
    relays = start_relays(settings, QUEUES)
    assert len(relays) == 1, "one cluster is one deployment: one relay for all its queues"
    worker = conveyor.Worker(app, QUEUES, threads=2)
    worker.start()
    try:
        # The worker is idle first: it must notice jobs on every queue's node.
        time.sleep(0.5)
        for n, queue in enumerate(QUEUES):
            app.enqueue_many(f"c.{queue}", [[i] for i in range(100 * (n + 1))]).wait(30)
        # The direct path writes into the cluster with the same script.
        app.set_route("c.billing", conveyor.Route(kafka_percent=0))
        app.enqueue("c.billing", [200])
        expected = {q: list(range(100 * (n + 1))) for n, q in enumerate(QUEUES)}
        expected["billing"].append(200)
        wait_until(
            lambda: all(len(ran[q]) >= len(expected[q]) for q in QUEUES),
            60,
            "every job run from the cluster",
        )
        time.sleep(0.5)  # anything run twice would show up now
        with lock:
            assert {q: sorted(v) for q, v in ran.items()} == expected
        env = {"CONVEYOR_REDIS_URL": cluster.url, "CONVEYOR_NAMESPACE": namespace}
        out = conveyor_cli("queues", *QUEUES, env=env)
        assert out.returncode == 0, out.stderr
        rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()[1:]}
        assert set(rows) == set(QUEUES), out.stdout
    finally:
        worker.stop()
        for _, _, relay in relays:
            relay.stop()
    store = _core.RedisStore(cluster.url)
    for queue in QUEUES:
        assert store.counts(namespace, queue)["done"] == len(expected[queue])
        assert store.ready_len(namespace, queue) == 0
    assert dict(store.server_info())["redis_mode"] == "cluster"


def test_a_malformed_cluster_url_is_a_config_error() -> None:
    for url in ("redis+cluster://", "redis+cluster://host", "redis+cluster://h:1/0"):
        with pytest.raises(conveyor.ConfigError, match="Redis Cluster URL"):
            _core.RedisStore(url)


def test_the_memory_guard_watches_the_fullest_node(
    servers: DevServers, cluster: RedisCluster, namespace: str
) -> None:
    settings = conveyor.Settings(
        kafka_bootstrap=servers.kafka.bootstrap, redis_url=cluster.url, namespace=namespace
    )
    app = conveyor.Conveyor(settings)
    app.ensure_topics()
    key = f"cv:{namespace}:{{default}}:ready"
    node = _owner(cluster, key)
    used = int(node.info("memory")["used_memory"])
    # The queue's node alone is near its limit (90% used, the guard's mark is 80%).
    node.config_set("maxmemory", str(int(used / 0.9)))
    relay = start_relays(settings, ["default"], memory_high=0.8, memory_low=0.6)[0][2]
    try:
        wait_until(lambda: relay.stats()["memory_guarded"] == 1, 30, "the guard to engage")
        ids = app.enqueue_many("c.guarded", [[i] for i in range(500)]).ids
        app.flush(30)
        time.sleep(1.5)
        assert node.llen(key) == 0, "the relay wrote into a node past its high-water mark"
        node.config_set("maxmemory", "0")
        wait_until(lambda: node.llen(key) == 500, 30, "the backlog relayed once the node has room")
    finally:
        node.config_set("maxmemory", "0")
        relay.stop()
    relayed = [
        conveyor.Envelope.decode(b).id for b in node.lrange(key, 0, -1) if isinstance(b, bytes)
    ]
    node.close()
    assert sorted(relayed) == sorted(ids)
