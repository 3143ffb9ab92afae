"""Workers against a real Redis: handlers, retries, dead letters, timeouts,
async handlers, middleware, graceful shutdown and SIGKILLed processes."""

from __future__ import annotations

import functools
import itertools
import json
import random
import signal
import threading
import time
from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

import conveyor
from conveyor import _core
from conveyor.devservers import DevServers
from conveyor.retry import JITTER_FLOOR, nominal_delay, retry_delay
from conveyor.schedules import Cron, Schedule
from tests.helpers.relay import start_relay
from tests.helpers.waiting import wait_until
from tests.helpers.workers import admit, spawn_worker

pytestmark = pytest.mark.servers


@pytest.fixture
def app(servers: DevServers, namespace: str) -> conveyor.Conveyor:
    return conveyor.Conveyor(
        conveyor.Settings(
            kafka_bootstrap=servers.kafka.bootstrap,
            redis_url=servers.redis.url,
            namespace=namespace,
        )
    )


def test_handlers_run_with_their_arguments_and_know_their_job(
    app: conveyor.Conveyor, running: list[conveyor.Worker]
) -> None:
    seen: list[tuple[int, str, int]] = []

    @app.job("w.add")
    def add(a: int, b: int) -> None:
        info = conveyor.current_job()
        assert info is not None
        seen.append((a + b, info.job_type, info.attempt))

    admit(app, "w.add", [[i, 1] for i in range(2000)])
    worker = conveyor.Worker(app, threads=4)
    running.append(worker)
    worker.start()
    wait_until(lambda: len(seen) == 2000)
    assert sorted(s for s, _, _ in seen) == list(range(1, 2001))
    assert {(t, a) for _, t, a in seen} == {("w.add", 1)}
    wait_until(lambda: worker.stats()["done"] == 2000)
    metrics = worker.metrics()
    assert 'conveyor_worker_jobs_total{outcome="done"} 2000' in metrics
    assert "conveyor_worker_wait_seconds_count 2000" in metrics


def test_failures_are_retried_with_backoff_then_dead_lettered_with_the_error(
    app: conveyor.Conveyor, running: list[conveyor.Worker]
) -> None:
    attempts: list[float] = []

    @app.job("w.flaky", max_attempts=3, backoff_s=0.2)
    def flaky() -> None:
        attempts.append(time.monotonic())
        raise ValueError("downstream said no")

    admit(app, "w.flaky", [[]])
    worker = conveyor.Worker(app, threads=1)
    running.append(worker)
    worker.start()
    store = _core.RedisStore(app.settings.redis_url)
    wait_until(lambda: store.depth(app.settings.namespace, "default")["dead"] == 1)
    assert len(attempts) == 3
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    # Backoff 0.2 s then 0.4 s, each jittered down to half at most.
    assert 0.1 <= gaps[0] < 0.2 + 0.3, gaps
    assert 0.2 <= gaps[1] < 0.4 + 0.3, gaps
    (raw, _, error), *_ = store.dead_letters(app.settings.namespace, "default", 1)
    record = json.loads(error or "{}")
    assert record["type"] == "ValueError"
    assert record["message"] == "downstream said no"
    assert record["attempt"] == 3
    assert "flaky" in record["traceback"]
    stamps = [code for code, _ in conveyor.Envelope.decode(raw).stages]
    assert stamps.count(conveyor.Stage.STARTED) == 3
    assert stamps[-1] == conveyor.Stage.DEAD_LETTERED


def test_permanent_errors_timeouts_and_unknown_types(
    app: conveyor.Conveyor, running: list[conveyor.Worker]
) -> None:
    @app.job("w.permanent", max_attempts=5)
    def permanent() -> None:
        raise conveyor.PermanentError("this invoice does not exist")

    @app.job("w.slow", max_attempts=1, timeout_s=0.2)
    def slow() -> None:
        began = time.monotonic()
        while time.monotonic() - began < 5:  # Python code: the timeout lands
            pass

    admit(app, "w.permanent", [[]])
    admit(app, "w.slow", [[]])
    admit(app, "w.not-here", [[]])
    worker = conveyor.Worker(app, threads=2)
    running.append(worker)
    began = time.monotonic()
    worker.start()
    store = _core.RedisStore(app.settings.redis_url)
    ns = app.settings.namespace
    wait_until(lambda: store.depth(ns, "default")["dead"] == 2)
    assert time.monotonic() - began < 3, "the slow job was cut off at its timeout"
    errors = {
        conveyor.Envelope.decode(raw).job_type: json.loads(e or "{}")
        for raw, _, e in store.dead_letters(ns, "default", 10)
    }
    assert errors["w.permanent"]["type"] == "PermanentError"
    assert errors["w.permanent"]["attempt"] == 1
    assert errors["w.slow"]["type"] == "JobTimeout"
    # A type this worker has no handler for is retried (a deploy may be
    # rolling out), with the reason kept.
    wait_until(lambda: store.depth(ns, "default")["scheduled"] == 1)
    assert store.counts(ns, "default")["retried"] == 1


def test_async_handlers_run_on_the_event_loop(
    app: conveyor.Conveyor, running: list[conveyor.Worker]
) -> None:
    import asyncio

    seen: list[int] = []
    jobs: set[tuple[str, int]] = set()

    @app.job("w.async", max_attempts=1, timeout_s=0.3)
    async def fetch_url(i: int) -> None:
        await asyncio.sleep(5 if i < 0 else 0.001)
        # Each task sees its own job, though many share the loop's thread.
        info = conveyor.current_job()
        assert info is not None
        assert info.job_type == "w.async"
        jobs.add((info.id, i))
        seen.append(i)

    admit(app, "w.async", [[i] for i in range(50)] + [[-1]])
    worker = conveyor.Worker(app, threads=4)
    running.append(worker)
    worker.start()
    store = _core.RedisStore(app.settings.redis_url)
    depth = functools.partial(store.depth, app.settings.namespace, "default")
    wait_until(
        lambda: len(seen) == 50 and depth()["dead"] == 1,
        # It timed out once in CI: say where it stood.
        what=lambda: f"50 runs and one dead job: {len(seen)} ran, {depth()}, {worker.stats()}",
    )
    (_, _, error), *_ = store.dead_letters(app.settings.namespace, "default", 1)
    assert json.loads(error or "{}")["type"] == "JobTimeout"
    assert len({job_id for job_id, _ in jobs}) == 50, "a job id per job"


def test_middleware_sees_every_hook(app: conveyor.Conveyor, running: list[conveyor.Worker]) -> None:
    events: list[str] = []

    class Record(conveyor.Middleware):
        def before(self, job: conveyor.JobInfo) -> None:
            events.append(f"before {job.attempt}")

        def after(self, job: conveyor.JobInfo, error: BaseException | None) -> None:
            events.append(f"after {job.attempt} {type(error).__name__}")

        def on_retry(self, job: conveyor.JobInfo, error: BaseException, delay_s: float) -> None:
            events.append(f"retry {job.attempt}")

        def on_dead(self, job: conveyor.JobInfo, error: BaseException) -> None:
            events.append(f"dead {job.attempt}")

    @app.job("w.twice", max_attempts=2, backoff_s=0.01)
    def twice() -> None:
        raise RuntimeError("no")

    admit(app, "w.twice", [[]])
    worker = conveyor.Worker(app, threads=1, middleware=[Record()])
    running.append(worker)
    worker.start()
    wait_until(lambda: len(events) == 6)
    assert events == [
        "before 1",
        "after 1 RuntimeError",
        "retry 1",
        "before 2",
        "after 2 RuntimeError",
        "dead 2",
    ]


def test_weighted_queues_share_fetches_and_strict_order_drains_the_first(
    app: conveyor.Conveyor, running: list[conveyor.Worker]
) -> None:
    order: list[str] = []

    @app.job("w.where")
    def where(queue: str) -> None:
        order.append(queue)

    for queue in ("high", "low"):
        admit(app, "w.where", [[queue]] * 300, queue=queue)
    worker = conveyor.Worker(app, [("high", 1), ("low", 1)], threads=1, strict=True, max_batch=10)
    running.append(worker)
    worker.start()
    wait_until(lambda: len(order) == 600)
    assert order == ["high"] * 300 + ["low"] * 300


def test_stop_lets_running_jobs_finish_and_gives_the_rest_back(
    app: conveyor.Conveyor,
) -> None:
    finished: list[int] = []

    @app.job("w.slow-ish")
    def slow_ish(i: int) -> None:
        time.sleep(0.3)
        finished.append(i)

    admit(app, "w.slow-ish", [[i] for i in range(100)])
    worker = conveyor.Worker(app, threads=2, max_batch=20)
    worker.start()
    time.sleep(0.5)
    assert worker.stop(grace_s=5)
    store = _core.RedisStore(app.settings.redis_url)
    depth = store.depth(app.settings.namespace, "default")
    assert depth["leases"] == 0, "nothing left in flight"
    assert depth["queued"] == 100 - len(finished), "every unstarted job went back"
    assert worker.stats()["done"] == len(finished) > 0


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    base=st.floats(min_value=0.0, max_value=100.0),
    cap=st.floats(min_value=0.0, max_value=1e6),
    seed=st.integers(),
)
def test_backoff_is_exponential_capped_and_jittered(
    attempt: int, base: float, cap: float, seed: int
) -> None:
    cap = max(cap, base)
    nominal = nominal_delay(attempt, base, cap)
    assert nominal == min(cap, base * 2.0 ** min(attempt - 1, 64))
    assert nominal <= nominal_delay(attempt + 1, base, cap), "never shrinks"
    delay = retry_delay(attempt, base, cap, random.Random(seed))
    assert nominal * JITTER_FLOOR <= delay <= nominal <= cap


def test_sigkilled_workers_lose_nothing(app: conveyor.Conveyor, servers: DevServers) -> None:
    """50,000 jobs; worker processes are SIGKILLed again and again while they
    run. Every job runs at least once, none is left in flight, and the test
    reports how many ran more than once."""
    total = 50_000
    ns = app.settings.namespace
    admit(app, "test.record", [[i] for i in range(total)])
    env = {"CONVEYOR_REDIS_URL": servers.redis.url, "CONVEYOR_NAMESPACE": ns}
    client = redis.Redis.from_url(servers.redis.url)
    runs_key = f"test:{ns}:runs"
    workers = [spawn_worker(env, "--lease", "1", "--threads", "4") for _ in range(2)]
    kills = 0
    try:
        deadline = time.monotonic() + 180
        while client.hlen(runs_key) < total and time.monotonic() < deadline:
            time.sleep(0.4)
            if kills < 10 and client.hlen(runs_key) < total * 0.9:
                victim = workers.pop(random.randrange(len(workers)))
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                kills += 1
                workers.append(spawn_worker(env, "--lease", "1", "--threads", "4"))
        store = _core.RedisStore(servers.redis.url)
        wait_until(lambda: store.depth(ns, "default")["leases"] == 0, timeout_s=30)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(timeout=30)
    runs = {int(k): int(v) for k, v in client.hgetall(runs_key).items()}
    missing = total - len(runs)
    twice = sum(1 for n in runs.values() if n > 1)
    print(f"\n{kills} SIGKILLs: {total} jobs, {missing} never ran, {twice} ran more than once")
    assert kills >= 3, "the test must actually kill workers mid-stream"
    assert missing == 0
    assert set(runs) == set(range(total))
    depth = store.depth(ns, "default")
    assert depth == {"queued": 0, "scheduled": 0, "leases": 0, "dead": 0}
    assert store.counts(ns, "default")["done"] == total


def test_the_worker_command_stops_gracefully_on_sigterm(
    app: conveyor.Conveyor, servers: DevServers
) -> None:
    ns = app.settings.namespace
    admit(app, "test.sleep", [[i, 0.5] for i in range(40)])
    env = {"CONVEYOR_REDIS_URL": servers.redis.url, "CONVEYOR_NAMESPACE": ns}
    proc = spawn_worker(env, "--threads", "2", "--processes", "2", "--grace", "10")
    client = redis.Redis.from_url(servers.redis.url)
    wait_until(lambda: client.hlen(f"test:{ns}:runs") >= 4)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    store = _core.RedisStore(servers.redis.url)
    depth = store.depth(ns, "default")
    ran = client.hlen(f"test:{ns}:runs")
    assert depth["leases"] == 0
    assert depth["queued"] == 40 - ran
    assert store.counts(ns, "default")["done"] == ran


def test_jobs_enqueued_through_kafka_run_through_the_relay(
    app: conveyor.Conveyor, servers: DevServers, running: list[conveyor.Worker]
) -> None:
    """Client -> Kafka -> relay -> Redis -> worker, each job as sent."""
    seen: dict[str, Any] = {}
    lock = threading.Lock()

    @app.job("w.e2e")
    def e2e(text: str, n: float) -> None:
        info = conveyor.current_job()
        assert info is not None
        with lock:
            seen[info.id] = (text, n)

    app.ensure_topics()
    relay = start_relay(app)
    try:
        calls = [(f'héllo \u2028 {i} "q"', i / 3) for i in range(500)]
        handles = [e2e.enqueue(text, n) for text, n in calls]
        app.flush()
        worker = conveyor.Worker(app, threads=2)
        running.append(worker)
        worker.start()
        wait_until(lambda: len(seen) == 500, timeout_s=60)
    finally:
        relay.stop()
    assert {h.id: c for h, c in zip(handles, calls, strict=True)} == seen


def test_periodic_jobs_run_once_per_occurrence_with_several_workers(
    app: conveyor.Conveyor, running: list[conveyor.Worker]
) -> None:
    """Three schedulers race; each occurrence runs once and none in between
    is skipped. Checked by the occurrences' own times (their run-at), not by
    a wall-clock window: when the schedulers start and stop looking depends
    on how fast three workers start and stop on a busy machine."""
    occurrences: list[int] = []
    lock = threading.Lock()

    @app.job("w.tick")
    def tick(label: str) -> None:
        assert label == "hello"
        info = conveyor.current_job()
        envelope = info.envelope() if info else None
        assert envelope is not None
        assert envelope.run_at_us is not None
        with lock:
            occurrences.append(envelope.run_at_us)

    app.periodic(tick, every=0.5, args=["hello"])
    for _ in range(3):  # three processes' worth of schedulers racing
        worker = conveyor.Worker(app, threads=2)
        running.append(worker)
        worker.start()
    time.sleep(3.2)
    for worker in running:
        worker.stop()
    enqueued = sum(w.stats()["periodic_enqueued"] for w in running)
    store = _core.RedisStore(app.settings.redis_url)
    left = store.depth(app.settings.namespace, "default")["queued"]
    assert len(occurrences) + left == enqueued, "every occurrence enqueued runs (or waits), once"
    assert len(occurrences) == len(set(occurrences)), "an occurrence ran twice"
    ran = sorted(occurrences)
    assert len(ran) >= 4, ran
    assert all(b - a == 500_000 for a, b in itertools.pairwise(ran)), "an occurrence skipped"


class _SkewedClock:
    """A `time` module whose wall clock is an hour ahead."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def time() -> float:
        return time.time() + 3600


def test_periodic_jobs_follow_redis_clock_not_the_workers(
    app: conveyor.Conveyor, running: list[conveyor.Worker], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The keeper once read its host's clock: a worker an hour ahead claimed
    # the occurrences of the coming hour, so when it stopped, the workers
    # with right clocks skipped every occurrence for an hour.
    runs: list[float] = []
    app.job("w.skewed_tick")(lambda: runs.append(time.time()))
    app.periodic("w.skewed_tick", every=0.5)
    with monkeypatch.context() as patch:
        patch.setattr("conveyor.keeper.time", _SkewedClock(), raising=False)
        ahead = conveyor.Worker(app, threads=1)
        running.append(ahead)
        ahead.start()
        wait_until(lambda: len(runs) >= 2, timeout_s=10, what="the skewed worker's occurrences")
        ahead.stop()
    before = len(runs)
    right = conveyor.Worker(app, threads=1)
    running.append(right)
    right.start()
    wait_until(
        lambda: len(runs) >= before + 3,
        timeout_s=10,
        what="occurrences once the worker an hour ahead stopped",
    )


def test_cron_expressions_match_like_cron() -> None:
    from datetime import datetime, timezone

    def minute(text: str) -> int:
        return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()) // 60

    every_quarter = Cron.parse("*/15 9-17 * * 1-5")
    assert every_quarter.matches(minute("2026-11-27T09:45"))  # a Friday
    assert not every_quarter.matches(minute("2026-11-28T09:45"))  # Saturday
    assert not every_quarter.matches(minute("2026-11-27T09:46"))
    assert not every_quarter.matches(minute("2026-11-27T18:00"))
    # Both day fields restricted: either one matching is enough, as in cron.
    first_or_sunday = Cron.parse("0 0 1 * 0")
    assert first_or_sunday.matches(minute("2026-12-01T00:00"))  # a Tuesday, the 1st
    assert first_or_sunday.matches(minute("2026-11-29T00:00"))  # a Sunday
    assert not first_or_sunday.matches(minute("2026-11-30T00:00"))
    assert Cron.parse("0 12 * * 7").matches(minute("2026-11-29T12:00")), "7 is Sunday too"
    for bad in ("* * * *", "60 * * * *", "*/0 * * * *", "a * * * *", "5-1 * * * *"):
        with pytest.raises(conveyor.InvalidJobError):
            Cron.parse(bad)
    daily = Schedule("d", "t", "default", (), {}, cron=Cron.parse("30 6 * * *"))
    day = minute("2026-11-28T00:00") * 60
    assert daily.occurrences(day, day + 86400) == [(day + 6 * 3600 + 1800) * 1000]


def test_the_testing_helper_runs_jobs_inline(app: conveyor.Conveyor) -> None:
    from conveyor.testing import capture

    sent: list[str] = []

    @app.job("t.welcome")
    def welcome(email: str, *, lang: str = "en") -> None:
        sent.append(f"{email}:{lang}")
        follow_up.enqueue(email)

    @app.job("t.follow-up")
    def follow_up(email: str) -> None:
        info = conveyor.current_job()
        assert info is not None
        sent.append(f"follow-up {email} {info.job_type}")

    with capture(app) as jobs:
        handle = welcome.enqueue("ada@example.com", lang="fr")
        welcome.enqueue_many([["bob@example.com"]])
        assert handle.done()
        assert len(handle.id) == 26
        assert jobs.types() == ["t.welcome", "t.welcome"]
        assert jobs.jobs[0].kwargs == {"lang": "fr"}
        with pytest.raises(conveyor.InvalidJobError):
            welcome.enqueue(float("nan"))  # type: ignore[arg-type]
        assert jobs.run_all() == 4
    assert sent == [
        "ada@example.com:fr",
        "bob@example.com:en",
        "follow-up ada@example.com t.follow-up",
        "follow-up bob@example.com t.follow-up",
    ]


def test_a_payload_that_is_not_a_call_is_dead_lettered_at_once(
    app: conveyor.Conveyor, running: list[conveyor.Worker]
) -> None:
    @app.job("w.any", max_attempts=5)
    def any_job(*args: Any, **kwargs: Any) -> None:
        pass

    store = _core.RedisStore(app.settings.redis_url)
    ns = app.settings.namespace
    # Written around the client's checks (another language's producer, say).
    store.admit(ns, "default", [conveyor.Envelope("w.any", b'{"no":"args"}').encode()])
    worker = conveyor.Worker(app, threads=1)
    running.append(worker)
    worker.start()
    wait_until(lambda: store.depth(ns, "default")["dead"] == 1)
    (_, _, error), *_ = store.dead_letters(ns, "default", 1)
    record = json.loads(error or "{}")
    assert record["type"] == "PermanentError"
    assert record["attempt"] == 1
    assert "not a Conveyor call" in record["message"]
