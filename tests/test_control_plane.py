"""Control plane integrity: relay controls, routes and registry entries that
are not valid are ignored with a reason by the relay, the gate and
`conveyor controls`, never acted on; every change made through the CLI is
recorded (who, from where, when, old and new value) in a bounded history
that `conveyor controls --history` prints."""

from __future__ import annotations

import json
import socket

import pytest

import conveyor
from conveyor import _core
from conveyor.devservers import DevServers
from tests.helpers.cli import conveyor as conveyor_cli
from tests.helpers.gate import start_gate
from tests.helpers.relay import start_relay, wait_until

pytestmark = pytest.mark.servers


def _hset(servers: DevServers, key: str, field: str, value: str) -> None:
    reply = servers.redis.ask(f"HSET {key} {field} {json.dumps(value)}".encode())
    assert reply.startswith(b":"), reply


def test_bad_relay_controls_are_ignored_with_a_reason(
    app: conveyor.Conveyor, servers: DevServers
) -> None:
    s = app.settings
    topic = s.topic_for("default")
    key = f"cv:{s.namespace}:relay:control"
    # What a typo or a stray tool leaves: none of these is a control. Read
    # as before, "paused" = "no" stopped the queue (0 of 200 relayed).
    for field, value in (
        (f"shadow:{topic}", "0"),
        (f"paused:{topic}", "no"),
        (f"rate:{topic}", "-5"),
        (f"drop:{topic}", "1"),
    ):
        _hset(servers, key, field, value)
    relay = start_relay(app)
    try:
        wait_until(lambda: len(relay.ignored_controls()) == 4, 10, "the controls read")
        app.enqueue_many("cp.job", [(i,) for i in range(200)]).wait(30)
        store = _core.RedisStore(s.redis_url)
        wait_until(lambda: store.ready_len(s.namespace, "default") == 200, 20, "200 relayed")
        assert relay.stats()["shadowed"] == 0
        reasons = sorted(why for _, _, why in relay.ignored_controls())
        assert any('when set, not "0"' in r for r in reasons), reasons
        assert any("'rate', 'paused' or 'shadow'" in r for r in reasons)
        assert any("positive number" in r for r in reasons)
    finally:
        relay.stop()
    env = {"CONVEYOR_REDIS_URL": s.redis_url, "CONVEYOR_NAMESPACE": s.namespace}
    shown = conveyor_cli("controls", env=env)
    assert shown.returncode == 1, shown.stdout
    assert shown.stdout.count("IGNORED") == 4, shown.stdout
    assert "4 value(s) ignored" in shown.stdout


def test_the_gate_ignores_registry_entries_it_cannot_use(
    app: conveyor.Conveyor, servers: DevServers
) -> None:
    s = app.settings
    key = f"cv:{s.namespace}:registry"
    _hset(servers, key, "cp.good", '{"queue": "default"}')
    _hset(servers, key, "cp.escape", '{"queue": "../../elsewhere"}')
    _hset(servers, key, "cp.garbled", "{not json")
    gate = start_gate(app)
    try:
        wait_until(lambda: "cp.good" in gate.routes(), 10, "the registry read")
        assert gate.routes() == {"cp.good": "default"}
        ignored = gate.registry_ignored()
        assert len(ignored) == 2, ignored
        assert any("cp.escape" in r and "queue" in r for r in ignored)
    finally:
        gate.stop()


def test_every_cli_change_is_recorded_and_the_history_is_bounded(
    app: conveyor.Conveyor,
) -> None:
    s = app.settings
    env = {"CONVEYOR_REDIS_URL": s.redis_url, "CONVEYOR_NAMESPACE": s.namespace}
    for argv in (
        ("pause", "default"),
        ("throttle", "default", "50"),
        ("resume", "default"),
        ("route", "cp.moved", "--kafka-percent", "20"),
        ("throttle", "default", "off"),
    ):
        done = conveyor_cli(*argv, env=env)
        assert done.returncode == 0, (argv, done.stderr)
    history = conveyor_cli("controls", "--history", env=env)
    assert history.returncode == 0, history.stderr
    lines = history.stdout.splitlines()
    topic = s.topic_for("default")
    expected = [
        f"relay rate:{topic}: 50 -> (clear)",
        'route cp.moved: (clear) -> {"double_write":false,"kafka_percent":20.0}',
        f"relay paused:{topic}: 1 -> (clear)",
        f"relay rate:{topic}: (clear) -> 50",
        f"relay paused:{topic}: (clear) -> 1",
    ]
    assert len(lines) == 5, lines
    for line, change in zip(lines, expected, strict=True):
        assert change in line, (change, line)
        assert f"from {socket.gethostname()}" in line
        assert line[:4].isdigit(), "a UTC time first"
        assert "Z " in line
    assert "--limit" in conveyor_cli("controls", "--help").stdout
    assert (
        len(conveyor_cli("controls", "--history", "--limit", "2", env=env).stdout.splitlines()) == 2
    )

    # Bounded: the oldest changes go first.
    store = _core.RedisStore(s.redis_url)
    for i in range(1005):
        store.set_relay_control(s.namespace, "rate", topic, str(i + 1), who="t", origin="here")
    changes = store.control_history(s.namespace, False)
    assert len(changes) == 1000
    newest = json.loads(changes[0])
    assert (newest["old"], newest["new"], newest["who"]) == ("1004", "1005", "t")
    # A value no relay would act on is refused before it is written.
    with pytest.raises(conveyor.InvalidJobError, match="positive number"):
        store.set_relay_control(s.namespace, "rate", topic, "fast")
    with pytest.raises(conveyor.InvalidJobError):
        store.set_relay_control(s.namespace, "paused", topic, "maybe")
