"""Async done properly, against the real servers: async handlers run
concurrently up to the worker's `async_limit` (not bounded by `threads`),
their batches settle once they end, a stop waits for them, and
`enqueue_async` returns once the job is acknowledged."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import conveyor
from conveyor import _core
from tests.helpers.waiting import wait_until
from tests.helpers.workers import admit

pytestmark = pytest.mark.servers


def test_async_handlers_run_concurrently_up_to_their_own_limit(
    app: conveyor.Conveyor, running: list[conveyor.Worker]
) -> None:
    # Each counter is touched only on the loop's thread: no lock needed.
    active = peak = 0
    ended: list[int] = []

    @app.job("a.wait", max_attempts=1)
    async def wait(i: int) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.3)
        info = conveyor.current_job()
        assert info is not None
        assert info.job_type == "a.wait"
        active -= 1
        ended.append(i)

    @app.job("a.sync")
    def sync(i: int) -> None:
        ended.append(-1 - i)

    admit(app, "a.wait", [[i] for i in range(300)])
    admit(app, "a.sync", [[i] for i in range(50)])
    worker = conveyor.Worker(app, threads=2, async_limit=60)
    running.append(worker)
    worker.start()
    # 300 jobs of 0.3 s on 2 threads one at a time would take 45 s.
    wait_until(lambda: len(ended) == 350, timeout_s=20, what="every job to end")
    assert sorted(ended) == list(range(-50, 300))
    assert 20 < peak <= 60, f"{peak} async jobs ran at once (limit 60, 2 threads)"
    store = _core.RedisStore(app.settings.redis_url)
    ns = app.settings.namespace
    wait_until(lambda: worker.stats()["done"] == 350, what="every batch settled")
    depth = store.depth(ns, "default")
    assert (depth["queued"], depth["leases"], depth["dead"]) == (0, 0, 0)
    assert worker.stats()["async_running"] == 0


def test_async_failures_retry_and_stop_waits_for_jobs_in_flight(
    app: conveyor.Conveyor, running: list[conveyor.Worker]
) -> None:
    started: list[int] = []
    finished: list[int] = []

    @app.job("a.slow", max_attempts=1)
    async def slow(i: int) -> None:
        started.append(i)
        await asyncio.sleep(0.8)
        if i % 5 == 0:
            raise ValueError(f"job {i} fails")
        finished.append(i)

    admit(app, "a.slow", [[i] for i in range(20)])
    worker = conveyor.Worker(app, threads=1, async_limit=50)
    worker.start()
    wait_until(lambda: len(started) == 20, what="every job to start")
    assert worker.stop(grace_s=10), "the stop waited for the async jobs in flight"
    assert sorted(finished) == [i for i in range(20) if i % 5]
    store = _core.RedisStore(app.settings.redis_url)
    depth = store.depth(app.settings.namespace, "default")
    assert (depth["queued"], depth["leases"], depth["dead"]) == (0, 0, 4)
    assert worker.stats()["done"] == 16


def test_async_limit_is_checked() -> None:
    app = conveyor.Conveyor(conveyor.Settings())
    with pytest.raises(conveyor.ConfigError, match="async_limit"):
        conveyor.Worker(app, async_limit=0)


def test_enqueue_async_returns_once_acknowledged(app: conveyor.Conveyor) -> None:
    @app.job("a.sent")
    def sent(i: int) -> None:
        del i

    async def send_all() -> list[conveyor.JobHandle]:
        return await asyncio.gather(*(sent.enqueue_async(i) for i in range(200)))

    handles = asyncio.run(send_all())
    assert all(h.done() for h in handles), "acknowledged before enqueue_async returned"
    offsets = [h.wait(0) for h in handles]
    assert all(p >= 0 and o >= 0 for [(p, o)] in offsets)
    assert len({h.id for h in handles}) == 200

    with pytest.raises(conveyor.InvalidJobError):
        asyncio.run(sent.enqueue_async("too", "many"))  # type: ignore[call-arg, arg-type]


def test_sync_jobs_do_not_wait_on_the_async_limit(
    app: conveyor.Conveyor, running: list[conveyor.Worker]
) -> None:
    """An app with both kinds: while its one async slot is held, its sync
    jobs still run on every thread."""
    lock = threading.Lock()
    active = peak = 0
    done: list[int] = []

    @app.job("a.hold", max_attempts=1)
    async def hold() -> None:
        await asyncio.sleep(3)

    @app.job("a.work")
    def work(i: int) -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.02)
        with lock:
            active -= 1
            done.append(i)

    admit(app, "a.hold", [[] for _ in range(2)])
    admit(app, "a.work", [[i] for i in range(100)])
    worker = conveyor.Worker(app, threads=4, async_limit=1, max_batch=5)
    running.append(worker)
    worker.start()
    wait_until(lambda: len(done) == 100, timeout_s=20, what="the sync jobs")
    assert peak >= 3, f"at most {peak} sync jobs ran at once on 4 threads"
