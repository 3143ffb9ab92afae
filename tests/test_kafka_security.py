"""Kafka over TLS and SASL: a Kafka node with an `SSL` listener that requires
a client certificate and a `SASL_SSL` listener with `PLAIN` and SCRAM users,
certificates made at test time. For each mode the client, the topic setup,
the gate, the relay and a worker run jobs end to end; each refusal shows.
Last, every protection at once: SCRAM over TLS, Redis TLS with an ACL account
per component, the gate over HTTPS with a token."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import conveyor
from conveyor import _core, settings
from conveyor.devservers import DevServers, RedisServer, RedisTls
from conveyor.devservers.kafka import KafkaCluster, KafkaNode
from conveyor.devservers.kafka_security import KafkaSecurity
from conveyor.errors import ConveyorError
from tests.helpers.acl import apply_roles, drop_roles
from tests.helpers.certs import Certs, make_certs
from tests.helpers.cli import conveyor as run_cli
from tests.helpers.ports import fixed_port
from tests.helpers.relay import start_relay
from tests.helpers.waiting import wait_until
from tests.test_gate import post
from tests.test_gate_access import Token, https_post

pytestmark = pytest.mark.servers

PORT = fixed_port(29350)
USER, PASSWORD = "alice", "alice-secret-1"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KafkaCluster, Certs]]:
    home = tmp_path_factory.mktemp("secure-kafka")
    certs = make_certs(home / "certs")
    security = KafkaSecurity(
        ca=str(certs.ca),
        cert=str(certs.server_cert),
        key=str(certs.server_key),
        users=((USER, PASSWORD),),
    )
    node = KafkaNode(node_id=1, port=PORT, controller_port=PORT + 1, home=home / "node-1")
    cluster = KafkaCluster([node], settings.cache_home(), security=security)
    assert cluster.up(timeout_s=120)
    yield cluster, certs
    cluster.down()


def modes(certs: Certs) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """Listener and client properties of each security mode."""
    ca = [("ssl.ca.location", str(certs.ca))]
    client_cert = [
        ("ssl.certificate.location", str(certs.client_cert)),
        ("ssl.key.location", str(certs.client_key)),
    ]
    sasl = [("sasl.username", USER), ("sasl.password", PASSWORD)]
    return {
        "ssl-mtls": ("SSL", [("security.protocol", "SSL"), *ca, *client_cert]),
        "sasl-plain": (
            "SASL_SSL",
            [("security.protocol", "SASL_SSL"), ("sasl.mechanism", "PLAIN"), *sasl, *ca],
        ),
        "scram-256": (
            "SASL_SSL",
            [("security.protocol", "SASL_SSL"), ("sasl.mechanism", "SCRAM-SHA-256"), *sasl, *ca],
        ),
        "scram-512": (
            "SASL_SSL",
            [("security.protocol", "SASL_SSL"), ("sasl.mechanism", "SCRAM-SHA-512"), *sasl, *ca],
        ),
    }


@pytest.mark.parametrize("mode", ["ssl-mtls", "sasl-plain", "scram-256", "scram-512"])
def test_jobs_run_end_to_end_over_each_security_mode(
    secured: tuple[KafkaCluster, Certs], servers: DevServers, namespace: str, mode: str
) -> None:
    cluster, certs = secured
    listener, properties = modes(certs)[mode]
    bootstrap = cluster.secured_bootstrap(listener)
    app = conveyor.Conveyor(
        conveyor.Settings(
            kafka_bootstrap=bootstrap,
            redis_url=servers.redis.url,
            namespace=namespace,
            kafka_properties=tuple(properties),
        )
    )
    ran: list[int] = []
    lock = threading.Lock()

    @app.job("secure.job")
    def job(i: int) -> None:
        with lock:
            ran.append(i)

    gate = relay = None
    worker = conveyor.Worker(app, threads=2)
    try:
        app.ensure_topics()  # the workers' topic setup, over the secured listener
        relay = _core.Relay(
            bootstrap,
            servers.redis.url,
            [(app.settings.topic_for("default"), "default")],
            namespace=namespace,
            group_id=f"relay-{namespace}",
            properties=properties,
        )
        gate = _core.Gate(
            "127.0.0.1:0",
            bootstrap,
            namespace=namespace,
            routes={"secure.job": "default"},
            properties=properties,
        )
        worker.start()
        app.enqueue_many("secure.job", [(i,) for i in range(100)]).wait(30)
        body = json.dumps({"jobs": [{"type": "secure.job", "args": [100 + i]} for i in range(20)]})
        status, answer, _ = post(gate.address, "/v1/jobs/batch", body.encode())
        assert status == 200, answer
        wait_until(lambda: len(ran) == 120, 60, f"120 jobs run over {mode}")
        assert sorted(ran) == list(range(120))
    finally:
        worker.stop(grace_s=5)
        if relay is not None:
            relay.stop()
        if gate is not None:
            gate.stop()
        app.close()


def test_each_unproven_client_is_refused(secured: tuple[KafkaCluster, Certs]) -> None:
    cluster, certs = secured
    good = modes(certs)
    ssl_listener = cluster.secured_bootstrap("SSL")
    sasl_listener = cluster.secured_bootstrap("SASL_SSL")
    wrong_password = [
        (k, "wrong-password" if k == "sasl.password" else v) for k, v in good["scram-256"][1]
    ]
    untrusted = [
        (k, str(certs.stranger_ca) if k == "ssl.ca.location" else v)
        for k, v in good["scram-512"][1]
    ]
    no_client_cert = [("security.protocol", "SSL"), ("ssl.ca.location", str(certs.ca))]
    for bootstrap, properties in (
        (sasl_listener, wrong_password),
        (sasl_listener, untrusted),
        (ssl_listener, no_client_cert),
    ):
        with pytest.raises(ConveyorError):
            _core.kafka_cluster_info(bootstrap, timeout_s=5, properties=properties)


def test_settings_from_the_environment_reach_every_component(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The documented variables become the client properties (secrets kept out of repr)."""
    for var, value in {
        "CONVEYOR_KAFKA_SECURITY_PROTOCOL": "SSL",
        "CONVEYOR_KAFKA_SSL_CA_FILE": "/ca.pem",
        "CONVEYOR_KAFKA_SSL_CERT_FILE": "/c.pem",
        "CONVEYOR_KAFKA_SSL_KEY_FILE": "/k.pem",
    }.items():
        monkeypatch.setenv(var, value)
    settings = conveyor.Settings.from_env()
    assert dict(settings.kafka_properties) == {
        "security.protocol": "SSL",
        "ssl.ca.location": "/ca.pem",
        "ssl.certificate.location": "/c.pem",
        "ssl.key.location": "/k.pem",
    }
    monkeypatch.setenv("CONVEYOR_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("CONVEYOR_KAFKA_SASL_PASSWORD", "s3cret-pw")
    settings = conveyor.Settings.from_env()
    assert dict(settings.kafka_properties)["security.protocol"] == "SSL"
    assert "s3cret-pw" not in repr(settings)
    assert os.environ["CONVEYOR_KAFKA_SASL_PASSWORD"] == "s3cret-pw"


REDIS_TLS_PORT = fixed_port(26736)


@pytest.mark.timeout(300)
def test_everything_on_at_once(
    secured: tuple[KafkaCluster, Certs], tmp_path: Path, namespace: str
) -> None:
    """The production setup of the README's checklist in one run: Kafka over
    SASL_SSL with SCRAM-SHA-512, Redis over TLS with client certificates and
    one ACL account per component, the gate over HTTPS with a scoped token;
    jobs through the client and the gate run end to end, and an operator
    reads the queues with a read-only account."""
    cluster, certs = secured
    _, properties = modes(certs)["scram-512"]
    bootstrap = cluster.secured_bootstrap("SASL_SSL")
    redis = RedisServer(
        port=REDIS_TLS_PORT,
        home=tmp_path / "redis",
        tls=RedisTls(certs.ca, certs.server_cert, certs.server_key, client_certs=True),
    )
    redis.up()
    cli_tls = ["--tls", "--cacert", str(certs.ca), "--cert", str(certs.client_cert)]
    cli_tls += ["--key", str(certs.client_key)]
    query = f"?ca_file={certs.ca}&cert_file={certs.client_cert}&key_file={certs.client_key}"
    accounts = apply_roles(REDIS_TLS_PORT, namespace, cli_tls, query)
    ran: list[int] = []
    lock = threading.Lock()

    def app_as(role: str) -> conveyor.Conveyor:
        app = conveyor.Conveyor(
            conveyor.Settings(
                kafka_bootstrap=bootstrap,
                redis_url=accounts[role],
                namespace=namespace,
                kafka_properties=tuple(properties),
            )
        )

        @app.job("secure.all")
        def job(i: int) -> None:
            with lock:
                ran.append(i)

        return app

    worker_app, producer = app_as("worker"), app_as("producer")
    token: Token = ("svc", "s" * 32, ["secure.*"], [], False, None)
    gate = relay = None
    worker = conveyor.Worker(worker_app, threads=2)
    try:
        worker_app.ensure_topics()
        assert worker_app.publish_registry() == 1
        relay = start_relay(worker_app, properties=properties, redis_url=accounts["relay"])
        gate = _core.Gate(
            "127.0.0.1:0",
            bootstrap,
            namespace=namespace,
            registry_url=accounts["gate"],
            registry_refresh_s=0.2,
            tokens=[token],
            tls_cert=str(certs.server_cert),
            tls_key=str(certs.server_key),
            properties=properties,
        )
        worker.start()
        producer.enqueue_many("secure.all", [(i,) for i in range(100)]).wait(30)
        wait_until(lambda: "secure.all" in gate.routes(), 10, "the gate reads the registry")
        for i in range(20):
            body = json.dumps({"type": "secure.all", "args": [100 + i]}).encode()
            assert https_post(gate.address, body, token[1], certs.ca) == 200
        assert https_post(gate.address, body, "not-a-token", certs.ca) == 401
        wait_until(lambda: len(ran) == 120, 60, "120 jobs run with everything on")
        assert sorted(ran) == list(range(120))
        queues = run_cli(
            "queues",
            env={"CONVEYOR_REDIS_URL": accounts["operator"], "CONVEYOR_NAMESPACE": namespace},
        )
        assert queues.returncode == 0, queues.stderr
        assert "default" in queues.stdout
    finally:
        worker.stop(grace_s=5)
        for component in (relay, gate):
            if component is not None:
                component.stop()
        producer.close()
        worker_app.close()
        drop_roles(REDIS_TLS_PORT, namespace, cli_tls)
        redis.down()
