"""Cancelling jobs by id (`app.cancel`, `handle.cancel()`, `conveyor
cancel`): a job still in Kafka, queued or scheduled never starts; a running
one sees `current_job().cancelled` and stops with `JobCancelled`, an async
one is cancelled; each ends `cancelled` in its timeline, counted, with its
relay watermark moved past it; a `store_result` job's waiter gets
`JobCancelled` (written by Rust before a start, by Python after); an ended
job is not changed; a bad id is refused."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import redis

import conveyor
from conveyor import _core
from tests.helpers.cli import conveyor as conveyor_cli
from tests.helpers.relay import start_relay
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.servers

DIRECT = conveyor.Route(kafka_percent=0)


def _state(app: conveyor.Conveyor, job_id: str) -> str | None:
    info = app.lookup(job_id)
    return None if info is None else info.state


def _counts(app: conveyor.Conveyor) -> dict[str, int]:
    return _core.RedisStore(app.settings.redis_url).counts(app.settings.namespace, "default")


@pytest.mark.timeout(120)
def test_jobs_cancelled_before_they_start_never_run(app: conveyor.Conveyor) -> None:
    ran: list[str] = []

    @app.job("cx.work")
    def work(tag: str) -> None:
        ran.append(tag)

    @app.job("cx.kept", store_result=True)
    def kept() -> str:
        return "ran"

    app.set_route("cx.kept", DIRECT)
    in_kafka = work.enqueue("kafka")
    in_kafka.wait(10)
    assert app.cancel(in_kafka.id) == "not found", "still in Kafka: no relay yet"
    relay = start_relay(app)
    queued = work.enqueue("queued")
    wait_until(lambda: _state(app, queued.id) == "queued", 20, "relayed")
    assert app.cancel(queued.id) == "queued"
    assert app.cancel(queued.id) == "queued", "asking twice is harmless"
    scheduled = work.enqueue_with(("scheduled",), delay=1.0)
    wait_until(lambda: _state(app, scheduled.id) == "scheduled", 20, "scheduled")
    assert scheduled.cancel() == ["scheduled"]
    result_job = kept.enqueue()
    assert app.cancel(result_job.id) == "queued"
    other = work.enqueue("other")
    worker = conveyor.Worker(app, threads=1)
    worker.start()
    try:
        wait_until(lambda: _state(app, other.id) == "done", 30, "the other job done")
        ids = [in_kafka.id, queued.id, scheduled.id, result_job.id]
        wait_until(
            lambda: [_state(app, i) for i in ids] == ["cancelled"] * 4, 30, "all four cancelled"
        )
        with pytest.raises(conveyor.JobCancelled, match="before it started"):
            result_job.result(timeout_s=5)
    finally:
        worker.stop(grace_s=5)
        relay.stop()
    assert ran == ["other"]
    assert _counts(app)["cancelled"] == 4
    assert worker.stats()["cancelled"] == 4
    info = app.lookup(queued.id)
    assert info is not None
    assert info.timeline[-1][0] == "cancelled"
    client = redis.Redis.from_url(app.settings.redis_url)
    ns = app.settings.namespace
    assert client.hlen(f"cv:{ns}:{{default}}:open") == 0, "relayed jobs counted out"
    assert client.zcard(f"cv:{ns}:{{default}}:cancelled") == 0, "marks removed"


@pytest.mark.timeout(120)
def test_running_jobs_are_told_and_stop(app: conveyor.Conveyor) -> None:
    started = threading.Event()
    seen: list[bool] = []

    @app.job("cx.loop", store_result=True)
    def loop() -> str:
        started.set()
        job = conveyor.current_job()
        assert job is not None
        for _ in range(600):  # at most 60 s
            if job.cancelled:
                seen.append(True)
                raise conveyor.JobCancelled("stopping as asked")
            time.sleep(0.1)
        return "finished"

    @app.job("cx.sleepy")
    async def sleepy() -> None:
        started.set()
        await asyncio.sleep(60)

    for name in ("cx.loop", "cx.sleepy"):
        app.set_route(name, DIRECT)
    worker = conveyor.Worker(app, threads=1)
    worker.start()
    try:
        looping = loop.enqueue()
        assert started.wait(20)
        wait_until(lambda: _state(app, looping.id) == "running", 10, "running")
        began = time.monotonic()
        assert app.cancel(looping.id) == "running"
        with pytest.raises(conveyor.JobCancelled, match="stopping as asked"):
            looping.result(timeout_s=20)
        assert time.monotonic() - began < 5, "told within a heartbeat"
        started.clear()
        sleeping = sleepy.enqueue()
        assert started.wait(20)
        began = time.monotonic()
        assert app.cancel(sleeping.id) == "running"
        wait_until(lambda: _state(app, sleeping.id) == "cancelled", 20, "async cancelled")
        assert time.monotonic() - began < 5
    finally:
        worker.stop(grace_s=5)
    assert seen == [True]
    assert _state(app, looping.id) == "cancelled"
    stats = worker.stats()
    assert stats["cancelled"] == 2
    assert (stats["retried"], stats["dead"]) == (0, 0), "a cancel is not a failure"


def test_ended_jobs_are_not_changed_and_bad_ids_refused(app: conveyor.Conveyor) -> None:
    @app.job("cx.quick")
    def quick() -> None:
        pass

    app.set_route("cx.quick", DIRECT)
    worker = conveyor.Worker(app, threads=1)
    worker.start()
    try:
        done = quick.enqueue()
        wait_until(lambda: _state(app, done.id) == "done", 20, "done")
    finally:
        worker.stop(grace_s=5)
    assert app.cancel(done.id) == "done"
    env = {
        "CONVEYOR_REDIS_URL": app.settings.redis_url,
        "CONVEYOR_KAFKA_BOOTSTRAP": app.settings.kafka_bootstrap,
        "CONVEYOR_NAMESPACE": app.settings.namespace,
    }
    ended = conveyor_cli("cancel", done.id, env=env)
    assert ended.returncode == 1
    assert "done already: nothing to cancel" in ended.stdout
    waiting = quick.enqueue()
    asked = conveyor_cli("cancel", waiting.id, "--queue", "default", env=env)
    assert asked.returncode == 0, asked.stderr
    assert f"job {waiting.id} was queued: cancel set in default" in asked.stdout
    with pytest.raises(conveyor.InvalidJobError, match="26 characters"):
        app.cancel("nope")
    bad = conveyor_cli("cancel", "nope", env=env)
    assert bad.returncode != 0
    assert "26 characters" in bad.stderr
    assert "Traceback" not in bad.stderr
