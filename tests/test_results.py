"""Results (`store_result=True`): a handler's return value is kept for its
waiters (`handle.result()`, `await handle.result_async()`, `app.result(id)`)
for its time to live; a job given up on raises `JobFailed` with its error; a
value that cannot be kept says so; a type that keeps no results, or a job
that never ends in time, is a clear error; while Redis is nearly full the
result gives way (none kept), and nothing is kept for other types."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis

import conveyor
from conveyor import _core
from conveyor.devservers import RedisServer
from tests.helpers.full_redis import fill
from tests.helpers.ports import fixed_port
from tests.helpers.relay import start_relay
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.servers


def _result_keys(app: conveyor.Conveyor) -> list[bytes]:
    client = redis.Redis.from_url(app.settings.redis_url)
    return sorted(client.scan_iter(f"cv:{app.settings.namespace}:*:result:*"))


@pytest.mark.timeout(120)
def test_results_reach_their_waiters_through_kafka(app: conveyor.Conveyor) -> None:
    tries: dict[int, int] = {}

    @app.job("rs.sum", store_result=True)
    def total(numbers: list[int]) -> dict[str, Any]:
        return {"sum": sum(numbers), "of": numbers, "note": "é"}

    @app.job("rs.flaky", store_result=True, backoff_s=0.1)
    def flaky(n: int) -> int:
        tries[n] = tries.get(n, 0) + 1
        if tries[n] == 1:
            raise RuntimeError("first try fails")
        return n * 2

    @app.job("rs.bad", store_result=True, max_attempts=2, backoff_s=0.1)
    def bad() -> None:
        raise ValueError("never works")

    @app.job("rs.odd", store_result=True)
    def odd() -> object:
        return {1, 2}  # a set is not JSON

    @app.job("rs.plain")
    def plain() -> int:
        return 7

    relay = start_relay(app)
    worker = conveyor.Worker(app, threads=2)
    worker.start()
    try:
        handle = total.enqueue([1, 2, 3])
        assert handle.result(timeout_s=30) == {"sum": 6, "of": [1, 2, 3], "note": "é"}
        assert app.result(handle.id, timeout_s=1) == {"sum": 6, "of": [1, 2, 3], "note": "é"}
        many = flaky.enqueue_many([(1,), (2,)])
        assert many.results(timeout_s=30) == [2, 4], "kept after a retry, not at the failure"
        with pytest.raises(conveyor.JobFailed, match="never works") as failed:
            bad.enqueue().result(timeout_s=30)
        assert failed.value.error["type"] == "ValueError"
        assert failed.value.error["attempt"] == 2
        with pytest.raises(conveyor.JobFailed, match=r"not JSON|not kept") as unkept:
            odd.enqueue().result(timeout_s=30)
        assert unkept.value.error["type"] == "ResultNotEncodable"
        before = _result_keys(app)
        plain_job = plain.enqueue()
        wait_until(lambda: getattr(app.lookup(plain_job.id), "state", "") == "done", 30, "done")
        assert _result_keys(app) == before, "a type without store_result keeps nothing"
        with pytest.raises(conveyor.ConfigError, match="store_result=True"):
            plain_job.result(timeout_s=1)
    finally:
        worker.stop(grace_s=5)
        relay.stop()


@pytest.mark.timeout(60)
def test_a_result_is_kept_for_its_time_to_live_only(app: conveyor.Conveyor) -> None:
    @app.job("rs.short", store_result=True, result_ttl_s=0.5)
    def short() -> str:
        return "soon gone"

    worker = conveyor.Worker(app, threads=1)
    app.set_route("rs.short", conveyor.Route(kafka_percent=0))  # direct: no relay needed
    worker.start()
    try:
        handle = short.enqueue()
        assert handle.result(timeout_s=20) == "soon gone"
        (key,) = _result_keys(app)
        ttl = redis.Redis.from_url(app.settings.redis_url).pttl(key)
        assert 0 < ttl <= 500
        time.sleep(0.7)
        with pytest.raises(conveyor.ConveyorTimeout, match="no result"):
            handle.result(timeout_s=0.2)
    finally:
        worker.stop(grace_s=5)


@pytest.mark.timeout(60)
def test_result_async_leaves_the_event_loop_free(app: conveyor.Conveyor) -> None:
    @app.job("rs.slow", store_result=True)
    def slow(seconds: float) -> str:
        time.sleep(seconds)
        return "late"

    app.set_route("rs.slow", conveyor.Route(kafka_percent=0))
    worker = conveyor.Worker(app, threads=1)
    worker.start()

    async def main() -> tuple[str, int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        value = await slow.enqueue(0.5).result_async(timeout_s=20)
        ticker.cancel()
        return value, ticks

    try:
        value, ticks = asyncio.run(main())
    finally:
        worker.stop(grace_s=5)
    assert value == "late"
    assert ticks >= 20, f"the loop ran only {ticks} ticks while waiting half a second"


def test_waiting_for_a_result_that_never_comes_times_out(app: conveyor.Conveyor) -> None:
    @app.job("rs.never", store_result=True)
    def never() -> None:
        pass

    handle = never.enqueue()  # no worker runs it
    began = time.monotonic()
    with pytest.raises(conveyor.ConveyorTimeout, match=handle.id):
        handle.result(timeout_s=0.3)
    assert 0.3 <= time.monotonic() - began < 2
    with pytest.raises(conveyor.InvalidJobError, match="26 characters"):
        app.result("not-an-id", timeout_s=0.1)


@pytest.mark.timeout(120)
def test_results_give_way_while_redis_is_nearly_full(tmp_path: Path) -> None:
    limit = 8 * 1024 * 1024
    full = RedisServer(port=fixed_port(26682), home=tmp_path / "redis", maxmemory=limit)
    full.up()
    try:
        store = _core.RedisStore(full.url)
        made: dict[int, str] = {}  # index -> id; a refused batch's are made again

        def batch(first: int, size: int) -> list[bytes]:
            envelopes = [
                conveyor.Envelope(
                    "rs.big", json.dumps({"args": [first + i], "kwargs": {}}).encode()
                )
                for i in range(size)
            ]
            made.update((first + i, e.id) for i, e in enumerate(envelopes))
            return [e.encode() for e in envelopes]

        admitted = fill(store, "default", batch, sizes=(200, 10, 1))
        app = conveyor.Conveyor(conveyor.Settings(redis_url=full.url))

        @app.job("rs.big", store_result=True)
        def big(i: int) -> str:
            return "r" * 2000

        worker = conveyor.Worker(app, threads=1)
        worker.start()
        try:
            wait_until(
                lambda: store.counts("", "default").get("done", 0) == admitted, 60, "all done"
            )
        finally:
            worker.stop(grace_s=5)
        # The last one admitted is the last to run, well after the memory was read.
        last = made[admitted - 1]
        with pytest.raises(conveyor.ConveyorTimeout, match="nearly full"):
            app.result(last, timeout_s=0.5)
        used = int(redis.Redis.from_url(full.url).info("memory")["used_memory"])
        assert used < limit * 1.2, f"results grew a full Redis to {used / limit:.2f}x its limit"
    finally:
        full.down()
