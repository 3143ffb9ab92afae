"""The gate's job lookups are bounded: at most two run at once (503 past
that, at once, so enqueues never wait behind them) and each scans at most
10,000 waiting jobs per list (the CLI scans 100,000)."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis

import conveyor
from conveyor import _core
from conveyor.devservers import DevServers, RedisServer
from tests.helpers.cli import conveyor as conveyor_cli
from tests.helpers.gate import start_gate
from tests.helpers.ports import fixed_port
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.servers


def _ask(address: str, job_id: str) -> int:
    try:
        with urllib.request.urlopen(f"http://{address}/v1/jobs/{job_id}", timeout=20) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.timeout(60)
def test_the_gate_runs_two_lookups_at_once(
    servers: DevServers, namespace: str, tmp_path: Path
) -> None:
    own = RedisServer(port=fixed_port(26685), home=tmp_path / "redis")
    own.up()
    app = conveyor.Conveyor(
        conveyor.Settings(
            kafka_bootstrap=servers.kafka.bootstrap, redis_url=own.url, namespace=namespace
        )
    )
    app.job("gl.any")(lambda: None)
    app.publish_registry()
    gate = start_gate(app)
    try:
        wait_until(lambda: "gl.any" in gate.routes(), 10, "the registry read")
        # Every reader of this Redis now waits 1.5 s (the gate gives up after
        # 2 s): two lookups hold the gate's two places meanwhile.
        redis.Redis.from_url(own.url).client_pause(1500, all=True)
        held: list[int] = []
        waiting = [
            threading.Thread(target=lambda: held.append(_ask(gate.address, _core.new_job_id())))
            for _ in range(2)
        ]
        for thread in waiting:
            thread.start()
        time.sleep(0.5)
        began = time.monotonic()
        assert _ask(gate.address, _core.new_job_id()) == 503
        assert time.monotonic() - began < 1, "refused at once, not queued"
        for thread in waiting:
            thread.join(20)
        assert held == [404, 404], "the two held places answered once Redis was back"
        assert _ask(gate.address, _core.new_job_id()) == 404, "places given back"
    finally:
        gate.stop()
        app.close()
        own.down()


@pytest.mark.timeout(120)
def test_a_gate_lookup_scans_ten_thousand_waiting_jobs(app: conveyor.Conveyor) -> None:
    app.job("gl.wait")(lambda: None)
    app.publish_registry()
    s = app.settings
    envelopes = [conveyor.Envelope("gl.wait", b'{"args": [], "kwargs": {}}') for _ in range(10_050)]
    store = _core.RedisStore(s.redis_url)
    for first in range(0, len(envelopes), 5000):
        store.admit(s.namespace, "default", [e.encode() for e in envelopes[first : first + 5000]])
    gate = start_gate(app)
    try:
        wait_until(lambda: "gl.wait" in gate.routes(), 10, "the registry read")
        assert _ask(gate.address, envelopes[9_999].id) == 200, "the 10,000th is found"
        assert _ask(gate.address, envelopes[10_000].id) == 404, "the 10,001st is past the scan"
    finally:
        gate.stop()
    env = {"CONVEYOR_REDIS_URL": s.redis_url, "CONVEYOR_NAMESPACE": s.namespace}
    found = conveyor_cli("job", envelopes[10_040].id, env=env)
    assert found.returncode == 0, found.stdout + found.stderr
    assert f"job {envelopes[10_040].id}: queued" in found.stdout, "the CLI scans further"
