"""Leases under handlers that misbehave and a Redis that goes away: a handler
holding the GIL in a long C call keeps its lease (the keeper is native), one
blocked for ever in a call its timeout cannot interrupt loses its lease after
its maximum age, so that the job runs elsewhere, and a batch that cannot be
settled is let go so that it runs again."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis

import conveyor
from conveyor import _core
from conveyor.devservers import DevServers, RedisServer
from tests.helpers.ports import fixed_port
from tests.helpers.waiting import wait_until
from tests.helpers.workers import admit, spawn_worker

pytestmark = pytest.mark.servers


def _gil_hold_size(seconds: float) -> int:
    """An `n` for which `sum(range(n))` holds the GIL about `seconds`."""
    n = 2_000_000
    began = time.perf_counter()
    sum(range(n))
    return int(n * seconds / max(time.perf_counter() - began, 1e-6))


def _two_threads_one_second_lease(app: conveyor.Conveyor, *extra: str) -> subprocess.Popen[bytes]:
    env = {
        "CONVEYOR_REDIS_URL": app.settings.redis_url,
        "CONVEYOR_NAMESPACE": app.settings.namespace,
    }
    return spawn_worker(env, "--lease", "1", "--threads", "2", *extra)


def test_a_handler_holding_the_gil_keeps_its_lease_and_runs_once(
    app: conveyor.Conveyor, servers: DevServers
) -> None:
    ns = app.settings.namespace
    client = redis.Redis.from_url(servers.redis.url)
    runs_key = f"test:{ns}:runs"
    admit(app, "test.hold_gil", [[0, _gil_hold_size(4.0)]])
    worker = _two_threads_one_second_lease(app)
    # Another process reaps all along, as other workers would: a lease the
    # GIL-bound worker failed to renew would be taken back and run again.
    reaper = _core.WorkQueues(servers.redis.url, ns, [("default", 1)], lease_s=1.0)
    try:
        deadline = time.monotonic() + 60
        while not client.hget(runs_key, "0") and time.monotonic() < deadline:
            reaper.reap()
            time.sleep(0.2)
        for _ in range(10):  # a second run would follow at once
            reaper.reap()
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
    assert client.hget(runs_key, "0") == b"1", stderr.decode()[-2000:]
    counts = _core.RedisStore(servers.redis.url).counts(ns, "default")
    assert counts.get("reaped", 0) == 0, "the lease never expired"
    assert counts["done"] == 1


def test_a_handler_blocked_past_its_maximum_age_loses_its_job_to_another_thread(
    app: conveyor.Conveyor, servers: DevServers
) -> None:
    ns = app.settings.namespace
    client = redis.Redis.from_url(servers.redis.url)
    admit(app, "test.block_once", [[7]])
    worker = _two_threads_one_second_lease(app, "--grace", "0.5")
    try:
        # timeout 0.5 s + lease 1 s of maximum age, then 1 s for the lease to
        # expire: the second attempt runs on the other thread.
        wait_until(
            lambda: client.hget(f"test:{ns}:runs", "7") == b"1",
            timeout_s=20,
            what="the blocked job's second attempt",
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
    log = stderr.decode()
    assert "maximum age" in log, log[-2000:]
    assert "test.block_once" in log, "the event names the job"
    counts = _core.RedisStore(servers.redis.url).counts(ns, "default")
    assert counts["reaped"] == 1
    assert counts["done"] == 1


def test_a_batch_that_cannot_be_settled_is_let_go_and_runs_again(tmp_path: Path) -> None:
    """Redis away longer than the lease while a job runs: the worker cannot
    settle it, stops renewing its lease, and once Redis is back the reaper
    gives the job back: it runs again (at least once), never held for ever."""
    server = RedisServer(port=fixed_port(26683), home=tmp_path / "redis")
    server.up()
    try:
        app = conveyor.Conveyor(conveyor.Settings(redis_url=server.url))
        started = threading.Event()
        runs: list[float] = []

        @app.job("l.slow")
        def slow() -> None:
            runs.append(time.time())
            started.set()
            time.sleep(1.5)

        admit(app, "l.slow", [[]])
        worker = conveyor.Worker(app, threads=1, lease_s=1.0)
        worker.start()
        try:
            assert started.wait(20)
            server.down()  # the job ends, and its settle fails, while Redis is away
            time.sleep(4)  # longer than the lease: the worker gives the batch up
            server.up()
            store = _core.RedisStore(server.url)
            wait_until(
                lambda: store.counts("", "default").get("done", 0) == 1,
                timeout_s=30,
                what="the job to run again and be settled",
            )
            assert store.counts("", "default")["reaped"] == 1
            assert store.depth("", "default") == {
                "queued": 0,
                "scheduled": 0,
                "leases": 0,
                "dead": 0,
            }
            assert len(runs) == 2, "at least once: it ran again after its lease was let go"
        finally:
            worker.stop(grace_s=5)
    finally:
        server.down()
