"""A worker settles each batch together with the fetch of the next, in one
round trip to Redis (`WorkQueues.settle_and_fetch`): the same effects as a
settle and a fetch made apart, one network read on the server instead of two,
and no part run twice when the server lost its scripts."""

from __future__ import annotations

import json
import time

import pytest
import redis

import conveyor
from conveyor import _core
from conveyor.devservers import DevServers

pytestmark = pytest.mark.servers


def job(i: int) -> bytes:
    payload = json.dumps({"args": [i], "kwargs": {}}).encode()
    return conveyor.Envelope("sf.test", payload).encode()


def firsts(batch: _core.LeasedBatch | None) -> list[int]:
    assert batch is not None
    calls = [call for _, call, _ in batch.jobs]
    return [call[0][0] for call in calls if call is not None]


def reads(client: redis.Redis) -> int:
    """Network reads the server has processed (one per round trip)."""
    return int(client.info("stats")["total_reads_processed"])


def test_a_settle_fetches_the_next_batch_in_the_same_round_trip(
    servers: DevServers, namespace: str
) -> None:
    store = _core.RedisStore(servers.redis.url)
    store.admit(namespace, "q", [job(i) for i in range(8)])
    wq = _core.WorkQueues(servers.redis.url, namespace, [("q", 1)], lease_s=30.0)
    client = redis.Redis.from_url(servers.redis.url)
    first = wq.fetch(3)
    assert firsts(first) == [0, 1, 2]
    assert first is not None
    now = time.time()

    before = reads(client)
    counts, second = wq.settle_and_fetch(first, [now] * 3, {1: ("{}", 3600.0)}, 3)
    together = reads(client) - before  # this INFO's own read, and the call's

    assert counts == (2, 1, 0, 0)
    assert firsts(second) == [3, 4, 5]
    assert wq.held() == 1, "the settled lease let go, the new one held"
    assert store.depth(namespace, "q") == {"queued": 2, "scheduled": 1, "leases": 1, "dead": 0}

    assert second is not None
    before = reads(client)
    assert wq.settle(second, [now] * 3, {}) == (3, 0, 0, 0)
    alone = reads(client) - before
    assert together == alone, "settling and fetching took as many round trips as settling alone"

    third = wq.fetch(3)
    assert firsts(third) == [6, 7]
    assert third is not None
    counts, fourth = wq.settle_and_fetch(third, [now] * 2, {}, 3)
    assert (counts, fourth) == ((2, 0, 0, 0), None), "an empty queue: settled, nothing fetched"
    assert wq.held() == 0


def test_a_server_that_lost_its_scripts_runs_each_part_once(
    servers: DevServers, namespace: str
) -> None:
    store = _core.RedisStore(servers.redis.url)
    store.admit(namespace, "q", [job(i) for i in range(4)])
    wq = _core.WorkQueues(servers.redis.url, namespace, [("q", 1)], lease_s=30.0)
    first = wq.fetch(2)
    assert first is not None
    redis.Redis.from_url(servers.redis.url).script_flush()
    counts, second = wq.settle_and_fetch(first, [time.time()] * 2, {}, 2)
    assert counts == (2, 0, 0, 0), "settled once, not refused and then found stale"
    assert firsts(second) == [2, 3]
    assert store.depth(namespace, "q") == {"queued": 0, "scheduled": 0, "leases": 1, "dead": 0}


def test_the_next_batch_comes_from_another_queue_when_its_own_is_empty(
    servers: DevServers, namespace: str
) -> None:
    store = _core.RedisStore(servers.redis.url)
    store.admit(namespace, "a", [job(0)])
    store.admit(namespace, "b", [job(i) for i in range(1, 4)])
    # Strict order: "a" first whenever it has jobs, so its one batch is
    # settled with a fetch that finds "a" empty and goes on to "b".
    wq = _core.WorkQueues(servers.redis.url, namespace, [("a", 1), ("b", 1)], strict=True)
    first = wq.fetch(10)
    assert first is not None
    assert (first.queue, firsts(first)) == ("a", [0])
    counts, second = wq.settle_and_fetch(first, [time.time()], {}, 10)
    assert counts == (1, 0, 0, 0)
    assert second is not None
    assert (second.queue, firsts(second)) == ("b", [1, 2, 3])


def test_a_worker_runs_every_job_once_with_settles_that_fetch(
    servers: DevServers, namespace: str, app: conveyor.Conveyor
) -> None:
    seen: list[int] = []

    @app.job("sf.count")
    def count(i: int) -> None:
        seen.append(i)

    store = _core.RedisStore(servers.redis.url)
    sent = [conveyor.Envelope("sf.count", _core.encode_call([i], {})).encode() for i in range(500)]
    store.admit(app.settings.namespace, "default", sent)
    worker = conveyor.Worker(app, threads=2)
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while len(seen) < 500 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
    assert sorted(seen) == list(range(500))
    depth = store.depth(app.settings.namespace, "default")
    assert depth == {"queued": 0, "scheduled": 0, "leases": 0, "dead": 0}
    assert worker._queues.held() == 0


class CountedFetches:
    """The worker's `WorkQueues`, counting its fetches made alone."""

    def __init__(self, queues: _core.WorkQueues) -> None:
        self.queues = queues
        self.fetches = 0

    def fetch(self, max_jobs: int) -> _core.LeasedBatch | None:
        self.fetches += 1
        return self.queues.fetch(max_jobs)

    def __getattr__(self, name: str) -> object:
        return getattr(self.queues, name)


def test_an_idle_worker_waits_for_work_after_a_settle_that_found_none(
    servers: DevServers, app: conveyor.Conveyor
) -> None:
    # A job alone: a fetch finds it; its settle looks for the next and finds
    # none; then the thread waits for a signal of new jobs. Another fetch
    # before waiting would only repeat the settle's empty look.
    seen: list[int] = []

    @app.job("sf.alone")
    def alone(i: int) -> None:
        seen.append(i)

    store = _core.RedisStore(servers.redis.url)
    worker = conveyor.Worker(app, threads=1)
    counted = CountedFetches(worker._queues)
    worker._queues = counted  # type: ignore[assignment]
    jobs = 20
    worker.start()
    began = time.monotonic()
    try:
        for i in range(jobs):
            sent = conveyor.Envelope("sf.alone", _core.encode_call([i], {})).encode()
            store.admit(app.settings.namespace, "default", [sent])
            deadline = time.monotonic() + 5
            while len(seen) <= i and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(0.02)  # the settle's look has found nothing by now
    finally:
        worker.stop()
    idle_s = time.monotonic() - began
    assert sorted(seen) == list(range(jobs))
    # One fetch per job (the one its signal woke), and one each time a wait
    # for a signal ends with none (every 0.25 s while idle), a few spare.
    assert counted.fetches <= jobs + idle_s / 0.25 + 3, (counted.fetches, idle_s)
