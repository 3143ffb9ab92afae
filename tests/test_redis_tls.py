"""Redis over TLS (`rediss://`, `rediss+cluster://`): a redis-server, and a
three-node Redis Cluster, that speak only TLS and require client
certificates, made at test time; the client, the relay and the workers run
jobs end to end through them, and every connection that cannot prove itself
is refused."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import conveyor
from conveyor import _core
from conveyor.devservers import DevServers, RedisCluster, RedisServer, RedisTls
from conveyor.errors import ConfigError, ConveyorError
from tests.helpers.certs import make_certs
from tests.helpers.ports import fixed_port
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.servers

PORT = fixed_port(26731)
#: Cluster bus ports are these + 1000: all below the ephemeral range.
CLUSTER_PORTS = tuple(fixed_port(p) for p in (26741, 26742, 26743))


def test_jobs_run_end_to_end_over_tls_and_unproven_connections_are_refused(
    servers: DevServers, tmp_path: Path, namespace: str
) -> None:
    certs = make_certs(tmp_path / "certs")
    tls = RedisTls(certs.ca, certs.server_cert, certs.server_key, client_certs=True)
    server = RedisServer(port=PORT, home=tmp_path / "redis", tls=tls)
    server.up()
    base = f"rediss://127.0.0.1:{PORT}/0"
    url = f"{base}?ca_file={certs.ca}&cert_file={certs.client_cert}&key_file={certs.client_key}"
    app = conveyor.Conveyor(
        conveyor.Settings(
            kafka_bootstrap=servers.kafka.bootstrap, redis_url=url, namespace=namespace
        )
    )
    ran: list[int] = []
    lock = threading.Lock()

    @app.job("tls.job")
    def job(i: int) -> None:
        with lock:
            ran.append(i)

    relay = None
    worker = conveyor.Worker(app, threads=2)
    try:
        app.ensure_topics()
        assert app.publish_registry() == 1
        relay = _core.Relay(
            servers.kafka.bootstrap,
            url,
            [(app.settings.topic_for("default"), "default")],
            namespace=namespace,
            group_id=f"relay-{namespace}",
        )
        worker.start()
        app.enqueue_many("tls.job", [(i,) for i in range(300)]).wait(30)
        wait_until(lambda: len(ran) == 300, 60, "300 jobs run over TLS")
        assert sorted(ran) == list(range(300))
        assert relay.stats()["relayed"] == 300

        # Whoever cannot prove itself gets no connection.
        no_client_cert = f"{base}?ca_file={certs.ca}"
        untrusted_server = (
            f"{base}?ca_file={certs.stranger_ca}"
            f"&cert_file={certs.client_cert}&key_file={certs.client_key}"
        )
        plain = f"redis://127.0.0.1:{PORT}/0"
        for bad in (no_client_cert, untrusted_server, plain):
            with pytest.raises(ConveyorError):
                _core.RedisStore(bad).server_info()
        with pytest.raises(ConfigError, match="cert_file and key_file"):
            _core.RedisStore(
                f"{base}?ca_file={certs.ca}&cert_file={certs.client_cert}"
            ).server_info()
    finally:
        worker.stop(grace_s=5)
        if relay is not None:
            relay.stop()
        app.close()
        server.down()


@pytest.mark.timeout(240)
def test_jobs_run_end_to_end_on_a_tls_cluster(
    servers: DevServers, tmp_path: Path, namespace: str
) -> None:
    certs = make_certs(tmp_path / "certs")
    tls = RedisTls(certs.ca, certs.server_cert, certs.server_key, client_certs=True)
    cluster = RedisCluster(ports=CLUSTER_PORTS, home=tmp_path / "cluster", tls=tls)
    cluster.up()
    url = f"{cluster.url}&cert_file={certs.client_cert}&key_file={certs.client_key}"
    queues = ("default", "billing", "emails")
    app = conveyor.Conveyor(
        conveyor.Settings(
            kafka_bootstrap=servers.kafka.bootstrap,
            redis_url=url,
            namespace=namespace,
            queues=queues,
        )
    )
    ran: list[str] = []
    lock = threading.Lock()
    for queue in queues:

        def record(i: int, queue: str = queue) -> None:
            with lock:
                ran.append(f"{queue}:{i}")

        app.job(f"tlsc.{queue}", queue=queue)(record)
    relays: list[_core.Relay] = []
    worker = conveyor.Worker(app, threads=2)
    try:
        app.ensure_topics()
        assert app.publish_registry() == 3
        relays = [
            _core.Relay(
                servers.kafka.bootstrap,
                url,
                [(app.settings.topic_for(q), q) for q in queues],
                namespace=namespace,
                group_id=f"relay-{namespace}",
            )
        ]
        worker.start()
        for queue in queues:
            app.enqueue_many(f"tlsc.{queue}", [(i,) for i in range(100)]).wait(30)
        wait_until(lambda: len(ran) == 300, 60, "300 jobs run on the TLS cluster")
        assert sorted(ran) == sorted(f"{q}:{i}" for q in queues for i in range(100))
        # Without the client certificate no node lets it in.
        with pytest.raises(ConveyorError):
            _core.RedisStore(cluster.url).server_info()
    finally:
        worker.stop(grace_s=5)
        for relay in relays:
            relay.stop()
        app.close()
        cluster.down()
