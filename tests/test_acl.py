"""Redis least privilege: each component runs jobs end to end under the ACL
role `conveyor acl` prints for it, applied to a real redis-server with
redis-cli as the docs say; each role is refused what it has no business
doing; and the roles' command lists agree with the Lua scripts' sources."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import conveyor
from conveyor import _core, canaries, tallies
from conveyor.acl import ROLES, SCRIPT_COMMANDS
from conveyor.canaries import CanarySender
from conveyor.dashboard import Dashboard
from conveyor.devservers import DevServers
from tests.helpers.acl import PASSWORD, apply_roles, drop_roles
from tests.helpers.cli import conveyor as run_cli
from tests.helpers.relay import start_relay
from tests.helpers.waiting import wait_until
from tests.test_gate import get, post

SCRIPTS = Path(__file__).resolve().parents[1] / "rust/conveyor-core/src/store/scripts"


def test_the_roles_know_every_command_each_script_sends() -> None:
    found = {
        path.name: frozenset(
            c.lower() for c in re.findall(r"redis\.call\('([A-Za-z]+)'", path.read_text())
        )
        for path in sorted(SCRIPTS.glob("*.lua"))
    }
    assert found == SCRIPT_COMMANDS
    for name, role in ROLES.items():
        assert set(role.scripts) <= set(SCRIPT_COMMANDS), name


@pytest.fixture
def accounts(servers: DevServers, namespace: str) -> Iterator[dict[str, str]]:
    """The roles applied as `conveyor acl | redis-cli` and then switched on
    with a password; role name -> Redis URL of its account."""
    yield apply_roles(servers.redis.port, namespace)
    drop_roles(servers.redis.port, namespace)


def _app(servers: DevServers, namespace: str, url: str, ran: list[str]) -> conveyor.Conveyor:
    app = conveyor.Conveyor(
        conveyor.Settings(
            kafka_bootstrap=servers.kafka.bootstrap,
            redis_url=url,
            namespace=namespace,
            route_refresh_s=0.2,
        )
    )
    lock = threading.Lock()
    for name in ("acl.kafka", "acl.direct", "acl.gate"):

        def record(tag: str, name: str = name) -> None:
            with lock:
                ran.append(f"{name}:{tag}")

        app.job(name)(record)

    @app.job("acl.result", store_result=True)
    def shout(word: str) -> str:
        return word.upper()

    return app


def _operator_dashboard_reads(settings: conveyor.Settings, url: str, done_id: str) -> None:
    """A read-only dashboard shows everything with the operator's account."""
    operator = dataclasses.replace(settings, redis_url=url)
    board = Dashboard(operator, "t", address=("127.0.0.1", 0), queues=["default"], read_only=True)
    board.start()
    try:
        assert board.get_overview({})["queues"][0]["depth"]["dead"] == 0
        assert board.get_job({"id": done_id})["state"] == "done"
        for state in ("queued", "dead"):
            assert board.get_jobs({"queue": "default", "state": state})["matched"] == 0
        board.series.sample()
    finally:
        board.stop()


@pytest.mark.servers
@pytest.mark.timeout(240)
def test_every_component_runs_under_its_own_role(
    servers: DevServers, namespace: str, accounts: dict[str, str]
) -> None:
    ran: list[str] = []
    env = {
        "CONVEYOR_NAMESPACE": namespace,
        "CONVEYOR_KAFKA_BOOTSTRAP": servers.kafka.bootstrap,
    }

    def as_role(role: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*argv, env={**env, "CONVEYOR_REDIS_URL": accounts[role]})

    worker_app = _app(servers, namespace, accounts["worker"], ran)
    producer = _app(servers, namespace, accounts["producer"], [])
    worker_app.ensure_topics()
    assert worker_app.publish_registry() == 4
    relay = start_relay(worker_app, redis_url=accounts["relay"])
    gate = _core.Gate(
        "127.0.0.1:0",
        servers.kafka.bootstrap,
        namespace=namespace,
        registry_url=accounts["gate"],
        registry_refresh_s=0.2,
    )
    worker = conveyor.Worker(worker_app, threads=2)
    try:
        worker.start()
        # The admin routes one type straight into Redis; the producer (its
        # own account) follows within its refresh.
        routed = as_role("admin", "route", "acl.direct", "--kafka-percent", "0")
        assert routed.returncode == 0, routed.stderr
        probes = []

        def direct() -> bool:
            probes.append(1)
            return producer.enqueue("acl.direct", ["probe"]).wait(10) == [(-1, -1)]

        wait_until(direct, 10, "the producer reads the route")
        kafka_ids = producer.enqueue_many("acl.kafka", [("p",)] * 50).ids
        producer.flush()
        producer.enqueue_many("acl.direct", [("p",)] * 50).wait(30)
        wait_until(lambda: "acl.gate" in gate.routes(), 10, "the gate reads the registry")
        for i in range(20):
            body = json.dumps({"type": "acl.gate", "args": [f"g{i}"]}).encode()
            assert post(gate.address, "/v1/jobs", body)[0] == 200
        wait_until(lambda: len(ran) == 120 + len(probes), 60, "every job run")
        # The gate looks jobs up with its read-only account.
        wait_until(
            lambda: get(gate.address, f"/v1/jobs/{kafka_ids[0]}")[0] == 200, 10, "the gate finds it"
        )
        # A worker keeps a result, a producer reads it, each as its own role.
        assert producer.registry["acl.result"].enqueue("hi").result(timeout_s=30) == "HI"
        # A worker records a canary's arrival under its own account.
        CanarySender(worker_app.settings, ["default"], every_s=60).tick()
        wait_until(lambda: len(canaries.read(worker_app.settings, "default")) == 3, 30, "canaries")
        assert worker.stats()["dead"] == 0
        assert relay.stats()["relayed"] >= 70
        assert relay.stats()["redis_errors"] == 0
        assert sorted({r.split(":")[0] for r in ran}) == ["acl.direct", "acl.gate", "acl.kafka"]
        assert sorted(worker_app.registry) == ["acl.direct", "acl.gate", "acl.kafka", "acl.result"]

        # The operator reads everything without a script right.
        for argv in (
            ("queues",),
            ("relays",),
            ("route",),
            ("controls", "--history"),
            ("dead", "list", "default"),
            ("job", kafka_ids[0]),
        ):
            done = as_role("operator", *argv)
            assert done.returncode == 0, (argv, done.stdout, done.stderr)
        history = as_role("operator", "controls", "--history").stdout
        assert "route acl.direct: (clear) ->" in history
        _operator_dashboard_reads(worker_app.settings, accounts["operator"], kafka_ids[0])
        assert f"{namespace}-admin" in history
        assert sorted(gate.registry_ignored()) == []
        # The gate counts the jobs it sent with its own account.
        wait_until(
            lambda: (
                "conveyor_gate_tally_errors_total 0" in get(gate.address, "/metrics")[1]
                and tallies.reconcile(worker_app.settings, "default", None).totals["sent"] >= 71
            ),
            10,
            "the gate's 20 jobs counted sent, with the producer's 51",
        )
    finally:
        worker.stop(grace_s=5)
        relay.stop()
        gate.stop()
        producer.close()
        worker_app.close()


@pytest.mark.servers
def test_each_role_is_refused_what_it_has_no_business_doing(
    servers: DevServers, namespace: str, accounts: dict[str, str]
) -> None:
    env = {"CONVEYOR_NAMESPACE": namespace, "CONVEYOR_KAFKA_BOOTSTRAP": servers.kafka.bootstrap}
    refusals = {
        "operator": ("pause", "default"),
        "worker": ("pause", "default"),
        "relay": ("route", "acl.kafka", "--kafka-percent", "0"),
        "producer": ("shadow", "default", "on"),
        "gate": ("resume", "default"),
    }
    for role, argv in refusals.items():
        done = run_cli(*argv, env={**env, "CONVEYOR_REDIS_URL": accounts[role]})
        assert done.returncode == 2, (role, done.stdout)
        assert "no permissions" in done.stderr, (role, done.stderr)
        assert "conveyor acl" in done.stderr, (role, done.stderr)
    # The gate's account cannot write a queue, nor the operator's forget jobs.
    envelope = conveyor.Envelope("acl.kafka", b'{"args": ["x"], "kwargs": {}}').encode()
    with pytest.raises(conveyor.RedisError, match="no permissions"):
        _core.RedisStore(accounts["gate"]).admit(namespace, "default", [envelope])
    with pytest.raises(conveyor.RedisError, match="no permissions"):
        _core.RedisStore(accounts["operator"]).purge_dead(
            namespace, "default", older_than_s=0, keep=0, count=10
        )
    # A wrong password gets no connection at all.
    wrong = accounts["operator"].replace(PASSWORD, "guess")
    with pytest.raises(conveyor.ConveyorError):
        _core.RedisStore(wrong).counts(namespace, "default")
