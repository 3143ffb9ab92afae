"""Workers: run an application's handlers for jobs leased from Redis.

Each worker thread loops: lease a batch (Rust, GIL released), run its jobs one
after another (`conveyor.runner`), settle the batch in one call (Rust:
attempts, stage stamps, retries, dead letters, in one Lua script). A native
keeper thread extends the leases the process holds and reaps the expired
leases of dead workers without needing the GIL; a Python keeper
(`conveyor.keeper`) logs its events and enqueues periodic jobs; a watchdog
(`conveyor.timeouts`) enforces per-job timeouts. Nothing here runs per job but
the handler call and its bookkeeping, so no-op jobs cost a few microseconds of
Python each.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from conveyor import _core
from conveyor.app import Conveyor
from conveyor.async_lane import AsyncLane
from conveyor.canaries import CANARY_TYPE, canary_job
from conveyor.errors import ConfigError, ConveyorError
from conveyor.job_context import JobInfo, current_job, leased_job
from conveyor.jobs import JobType
from conveyor.keeper import Keeper
from conveyor.middleware import Middleware
from conveyor.runner import UNKNOWN_TYPE, BatchRun, Failure, Runner, error_record

log = logging.getLogger("conveyor.worker")

#: A batch is sized so that it runs for about this long: big batches for
#: tiny jobs (fewer round trips), single jobs for slow ones (no job waits
#: behind another in a thread while other threads idle).
_BATCH_TARGET_S = 0.02
#: Longest an idle thread blocks waiting for a signal of new jobs before it
#: looks anyway (delayed jobs come due without a signal).
_IDLE_WAIT_S = 0.25

__all__ = ["JobInfo", "Middleware", "Worker", "current_job", "load_app", "parse_queues"]


class Worker:
    """Runs `app`'s handlers for jobs of `queues` (default: all of the app's).

    `queues` items are names or `(name, weight)`: each fetch picks a queue
    with probability proportional to its weight, or with `strict=True` always
    the first non-empty queue in the order given. `threads` jobs run at once.
    A job runs under a lease of `lease_s`, extended while it runs; if the
    process dies, another worker takes the job back when the lease expires.
    A job's lease is extended for at most its timeout plus `lease_s`, or
    `max_job_s` for job types without a timeout: a handler blocked past that
    (in a call that ignores the timeout) loses its job to another worker.

    Async handlers run on one event loop, up to `async_limit` at once in the
    process however many `threads` there are (`conveyor.async_lane`).
    """

    def __init__(
        self,
        app: Conveyor,
        queues: Sequence[str | tuple[str, int]] | None = None,
        *,
        threads: int = 8,
        lease_s: float = 30.0,
        strict: bool = False,
        max_batch: int = 100,
        grace_s: float = 30.0,
        middleware: Iterable[Middleware] = (),
        worker_id: str | None = None,
        max_job_s: float = 3600.0,
        async_limit: int = 100,
    ) -> None:
        if threads < 1:
            raise ConfigError(f"threads must be at least 1, not {threads}")
        if not 1 <= async_limit <= 100_000:
            raise ConfigError(f"async_limit must be 1 to 100000, not {async_limit}")
        if not 1 <= max_batch <= 1000:
            raise ConfigError(f"max_batch must be 1 to 1000, not {max_batch}")
        self.app = app
        names = queues if queues is not None else sorted(app.queues())
        self.queues: list[tuple[str, int]] = [
            (q, 1) if isinstance(q, str) else (q[0], int(q[1])) for q in names
        ]
        self.threads = threads
        self.lease_s = lease_s
        self.max_batch = max_batch
        self.grace_s = grace_s
        self.max_job_s = max_job_s
        self.async_limit = async_limit
        self.middleware = tuple(middleware)
        # Canaries run in every worker (conveyor.canaries), unless the app
        # registers a handler of its own under that name.
        handlers = {CANARY_TYPE: canary_job(app), **app.registry}
        self._runner = Runner(
            handlers, self.middleware, result_limit=app.settings.max_payload_bytes
        )
        if not self.queues:
            raise ConfigError("a worker needs at least one queue")
        s = app.settings
        urls = {s.redis_url_for(q) for q, _ in self.queues}
        if len(urls) > 1:
            raise ConfigError(
                f"queues {[q for q, _ in self.queues]} live on {len(urls)} Redis deployments; "
                "a worker serves one: run a worker per deployment (--queue selects queues)"
            )
        self._queues = _core.WorkQueues(
            s.redis_url_for(self.queues[0][0]),
            s.namespace,
            self.queues,
            strict=strict,
            worker_id=worker_id,
            lease_s=lease_s,
            max_age_s={
                name: jt.options.timeout_s + lease_s
                for name, jt in app.registry.items()
                if jt.options.timeout_s is not None
            },
            max_age_default_s=max_job_s,
            dead_max=s.dead_max,
            dead_max_age_s=s.dead_max_age_s,
            history_s=s.job_history_s,
            history_max_bytes=s.job_history_max_bytes,
            tallies=s.tallies,
            result_ttl_s={
                name: jt.options.result_ttl_s
                for name, jt in app.registry.items()
                if jt.options.store_result
            },
        )
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._keeper = Keeper(app, self._queues)
        self._keeper_thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lane: AsyncLane | None = None
        #: Faults that escaped a batch or a worker loop (bugs, never a
        #: handler's error): each was logged and its batch settled.
        self._thread_faults = 0

    # Lifecycle

    def start(self) -> None:
        """Start the worker threads and the keeper; returns at once."""
        if self._threads:
            raise RuntimeError("worker already started")
        if self._runner.async_types:
            self._loop = self._runner.loop = asyncio.new_event_loop()
            loop_thread = threading.Thread(
                target=self._loop.run_forever, name="conveyor-async", daemon=True
            )
            loop_thread.start()
            self._lane = AsyncLane(self._runner, self.async_limit, self._settle)
        # The native keeper first: a worker thread's first job may hold the
        # GIL for long, and nothing would renew its lease meanwhile.
        self._queues.start_keeper()
        for i in range(self.threads):
            t = threading.Thread(target=self._work, name=f"conveyor-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        self._keeper_thread = threading.Thread(
            target=self._keeper.run, args=(self._stopped,), name="conveyor-keeper", daemon=True
        )
        self._keeper_thread.start()

    def stop(self, grace_s: float | None = None) -> bool:
        """Stop fetching, let running jobs finish for up to `grace_s` (default:
        the worker's), give unstarted jobs back. Returns True if every thread
        finished in time; jobs still running are taken back by the reaper once
        their lease expires."""
        self._stopping.set()
        deadline = time.monotonic() + (self.grace_s if grace_s is None else grace_s)
        clean = True
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
            clean &= not t.is_alive()
        if self._lane is not None:
            clean &= self._lane.wait_idle(max(0.0, deadline - time.monotonic()))
            self._lane.stop()
        self._stopped.set()
        if self._keeper_thread is not None:
            # It may be mid-call (a heartbeat, a periodic occurrence): let it end.
            self._keeper_thread.join(5.0)
        self._queues.stop_keeper()
        self._runner.timeouts.stop()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        return clean

    def run(self, *, install_signals: bool = True, progress_every_s: float = 0.0) -> None:
        """Start, run until SIGTERM or SIGINT (or `stop()` from another
        thread), then stop gracefully. With `progress_every_s`, log a line of
        counts that often."""
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self._stopping.set())
        self.start()
        last = time.monotonic()
        while not self._stopping.wait(0.2):
            if progress_every_s and time.monotonic() - last >= progress_every_s:
                last = time.monotonic()
                log.info("worker: %s", self.stats())
        self.stop()

    def stats(self) -> dict[str, int]:
        """Counters of this process: fetched, done, retried, dead, stale,
        released, leases lost to the reaper (`lost_leases`), leases let go
        past their maximum age (`overdue_leases`), failed keeper beats,
        periodic occurrences enqueued, and faults a worker thread survived."""
        out = dict(self._queues.stats())
        out["periodic_enqueued"] = self._keeper.periodic_enqueued
        out["thread_faults"] = self._thread_faults
        out["async_running"] = self._lane.running if self._lane is not None else 0
        return out

    def health(self) -> str | None:
        """None while every worker thread and the keeper run; else what
        stopped (for `/healthz`)."""
        if not self._threads:
            return "not started"
        dead = [t.name for t in self._threads if not t.is_alive()]
        if self._keeper_thread is None or not self._keeper_thread.is_alive():
            dead.append("conveyor-keeper")
        return f"stopped: {', '.join(dead)}" if dead else None

    def metrics(self) -> str:
        """This process's worker metrics in Prometheus' text format."""
        return self._queues.metrics()

    # Threads

    def _work(self) -> None:
        # Nothing may end a worker thread while the worker runs: a fault that
        # escapes the loop (a bug of ours, never a handler's error, which the
        # runner records) is logged, counted, and the loop starts again.
        while not self._stopping.is_set():
            try:
                self._work_loop()
            except BaseException:
                self._thread_faults += 1
                log.exception("worker thread fault; the thread carries on")
                self._stopping.wait(0.5)

    def _work_loop(self) -> None:
        # A batch is settled with the fetch of the next (one round trip to
        # Redis); a fetch goes alone only after a wait for work, or a fault.
        # After a look that found no job the thread waits for a signal of
        # new jobs at once: fetching again first repeated that look, one
        # round trip more per job at low load.
        size = 1
        batch: _core.LeasedBatch | None = None
        looked = False  # the last look for jobs found none
        while not self._stopping.is_set():
            if batch is not None:
                batch, size, looked = self._run_batch(batch, size)
            elif looked:
                self._wait_for_work()
                looked = False
            else:
                batch = self._fetch(size)
                looked = batch is None
        if batch is not None:
            # Fetched with the last settle as the worker stopped: given back
            # unstarted, at once (not when its lease expires).
            self._settle(batch, BatchRun())

    def _fetch(self, size: int) -> _core.LeasedBatch | None:
        """The next batch of up to `size` jobs; None when there is none (or
        after a pause, on a fault)."""
        try:
            return self._queues.fetch(size)
        except ConveyorError as err:
            log.warning("fetch failed, retrying: %s", err)
            self._stopping.wait(0.5)
            return None

    def _wait_for_work(self) -> None:
        """Blocks until a signal of new jobs, or `_IDLE_WAIT_S` (delayed and
        retried jobs come due without one)."""
        try:
            self._queues.wait_for_work(_IDLE_WAIT_S)
        except ConveyorError as err:
            log.warning("waiting for jobs failed, retrying: %s", err)
            self._stopping.wait(0.5)

    def _run_batch(
        self, batch: _core.LeasedBatch, size: int
    ) -> tuple[_core.LeasedBatch | None, int, bool]:
        """Runs a batch's jobs in order and settles it, or hands it to the
        async lane if async jobs of it still run. Whatever happens, the
        batch is settled or its lease let go. Returns the next batch if one
        was fetched with the settle, the size of the next fetch (`size`
        grown or cut so that a batch runs for about `_BATCH_TARGET_S`), and
        whether the settle looked for the next batch and found none."""
        ran = BatchRun()
        ends = ran.ends
        lane = self._lane
        began = time.monotonic()
        try:
            self._runner.run_batch(batch, self._stopping, ran, lane)
        except BaseException as err:
            # The job running when it happened counts as a failed attempt
            # (it may be what caused it); the rest go back unstarted.
            self._thread_faults += 1
            log.exception("fault while running a batch; settling what ran")
            if len(ends) < len(batch):
                ran.failures[len(ends)] = self._fault_failure(batch, len(ends), err)
                ends.append(time.time())
        if ends:
            per_job = (time.monotonic() - began) / len(ends)
            want = int(_BATCH_TARGET_S / per_job) if per_job > 0 else self.max_batch
            size = max(1, min(self.max_batch, want, size * 2))
        if lane is not None and ran.started:
            # The lease is renewed for as long as the longest of them may run.
            batch.begin(max(ran.started, key=lambda s: self._max_age(s[1]))[0])
            lane.hand_over(batch, ran)
            return None, size, False
        after, looked = self._settle(batch, ran, then_fetch=size)
        return after, size, looked

    def _max_age(self, jt: JobType[Any, Any]) -> float:
        """How long a job of `jt` may hold its lease (as `max_age_s` above)."""
        timeout = jt.options.timeout_s
        return self.max_job_s if timeout is None else timeout + self.lease_s

    def _fault_failure(self, batch: _core.LeasedBatch, index: int, error: BaseException) -> Failure:
        info = leased_job(batch, index)
        jt = self.app.registry.get(info.job_type)
        try:
            return self._runner.failure(jt.options if jt else UNKNOWN_TYPE, info, error)
        except BaseException:
            return error_record(error, info.attempt), None

    def _settle(
        self,
        batch: _core.LeasedBatch,
        ran: BatchRun,
        then_fetch: int = 0,
    ) -> tuple[_core.LeasedBatch | None, bool]:
        """Settles `batch`; with `then_fetch`, unless stopping, fetches the
        next batch of up to that many jobs in the same round trip. Returns
        that batch, and whether it was looked for and not found (no jobs, or
        a fetch fault the next fetch reports)."""
        # Redis away: keep trying while the lease lasts; after that, stop
        # renewing it, so that it expires and the reaper gives the jobs back:
        # they run again (at least once, never lost, never held for ever).
        give_up = time.monotonic() + self.lease_s
        while True:
            try:
                results, cancelled = ran.results or None, ran.cancelled or None
                if then_fetch and not self._stopping.is_set():
                    _, after = self._queues.settle_and_fetch(
                        batch, ran.ends, ran.failures, then_fetch, None, results, cancelled
                    )
                    return after, after is None
                self._queues.settle(
                    batch, ran.ends, ran.failures, results=results, cancelled=cancelled
                )
                return None, False
            except ConveyorError as err:
                then_fetch = 0  # a retry settles alone: the loop fetches after
                if time.monotonic() > give_up:
                    log.error("could not settle a batch before its lease expired: %s", err)
                    self._queues.abandon(batch)
                    return None, False
                log.warning("settle failed, retrying: %s", err)
                time.sleep(0.2)
            except BaseException:
                # Not Redis: settling this batch can never work; let it go.
                self._queues.abandon(batch)
                raise


def parse_queues(specs: Sequence[str]) -> list[tuple[str, int]]:
    """`["emails:3", "reports"]` -> `[("emails", 3), ("reports", 1)]`."""
    out = []
    for spec in specs:
        name, _, weight = spec.partition(":")
        _core.check_queue_name(name)
        try:
            w = int(weight) if weight else 1
        except ValueError:
            raise ConfigError(f"queue weight in {spec!r} must be a whole number") from None
        if w < 1:
            raise ConfigError(f"queue weight in {spec!r} must be at least 1")
        out.append((name, w))
    return out


def load_app(path: str) -> Conveyor:
    """The `Conveyor` object named by `"module:attribute"`."""
    import importlib

    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"expected MODULE:APP (like myproject.jobs:app), got {path!r}")
    module = importlib.import_module(module_name)
    app = getattr(module, attr, None)
    if not isinstance(app, Conveyor):
        raise ConfigError(f"{path} is not a conveyor.Conveyor (got {type(app).__name__})")
    return app
