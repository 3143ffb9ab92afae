"""Workers: run an application's handlers for jobs leased from Redis.

Each worker thread loops: lease a batch (Rust, GIL released), run its jobs one
after another, settle the batch in one call (Rust: attempts, stage stamps,
retries, dead letters, in one Lua script). A keeper thread extends the leases
the process holds and reaps the expired leases of dead workers; a watchdog
enforces per-job timeouts. Nothing here runs per job but the handler call and
its bookkeeping, so no-op jobs cost a few microseconds of Python each.
"""

from __future__ import annotations

import asyncio
import ctypes
import inspect
import json
import logging
import signal
import threading
import time
import traceback
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any

from conveyor import _core
from conveyor.app import Conveyor
from conveyor.errors import ConveyorError, InvalidJobError, JobTimeout, PermanentError
from conveyor.jobs import JobOptions, JobType
from conveyor.payload import decode_call, encode_call
from conveyor.retry import retry_delay
from conveyor.schedules import Schedule

log = logging.getLogger("conveyor.worker")

#: A batch is sized so that it runs for about this long: big batches for
#: tiny jobs (fewer round trips), single jobs for slow ones (no job waits
#: behind another in a thread while other threads idle).
_BATCH_TARGET_S = 0.02
#: Longest an idle thread blocks waiting for a signal of new jobs before it
#: looks anyway (delayed jobs come due without a signal).
_IDLE_WAIT_S = 0.25
#: Options for job types this worker has no handler for: they are retried (a
#: deploy may be rolling out the handler) and then dead-lettered.
_UNKNOWN_TYPE = JobOptions(max_attempts=5, backoff_s=5.0, backoff_max_s=300.0)


class JobInfo:
    """The job a handler is running, from `conveyor.current_job()`.

    A slotted class, not a dataclass: one is built per job on the hot path.
    """

    __slots__ = ("_batch", "_index", "attempt", "id", "job_type", "queue")

    def __init__(
        self,
        id: str,
        job_type: str,
        attempt: int,
        queue: str,
        *,
        batch: _core.LeasedBatch | None = None,
        index: int = 0,
    ) -> None:
        self.id = id
        self.job_type = job_type
        #: This attempt, counting from 1.
        self.attempt = attempt
        self.queue = queue
        self._batch = batch
        self._index = index

    def envelope(self) -> _core.Envelope | None:
        """The job's envelope as leased: enqueue time, run-at, dedup key,
        trace context and stage stamps (decoded only when asked for)."""
        return None if self._batch is None else self._batch.envelope(self._index)

    def __repr__(self) -> str:
        return (
            f"JobInfo(id={self.id!r}, job_type={self.job_type!r}, "
            f"attempt={self.attempt}, queue={self.queue!r})"
        )


_current = threading.local()


def current_job() -> JobInfo | None:
    """The job running in this thread (or task), if any."""
    return getattr(_current, "job", None)


class Middleware:
    """Hooks around each job; subclass and override what you need.

    Hooks run in the worker thread, around every job: keep them cheap. An
    exception from a hook is logged and otherwise ignored.
    """

    def before(self, job: JobInfo) -> None:
        """An attempt is about to start."""

    def after(self, job: JobInfo, error: BaseException | None) -> None:
        """An attempt ended, successfully when `error` is None."""

    def on_retry(self, job: JobInfo, error: BaseException, delay_s: float) -> None:
        """A failed attempt will be retried after `delay_s`."""

    def on_dead(self, job: JobInfo, error: BaseException) -> None:
        """The job was given up on and dead-lettered."""


def error_record(error: BaseException, attempt: int) -> str:
    """The JSON kept with a failed job: type, message, traceback tail, attempt."""
    tb = "".join(traceback.format_exception(error))
    return json.dumps(
        {
            "type": type(error).__name__,
            "message": str(error)[:2000],
            "traceback": tb[-4000:],
            "attempt": attempt,
            "at": time.time(),
        }
    )


class _Timeouts:
    """Raises JobTimeout in threads whose sync handler ran past its deadline.

    CPython can only deliver the exception between bytecodes: a handler
    blocked inside one long C call (a socket read without a timeout) sees it
    when that call returns. Handlers should still use timeouts of their own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deadlines: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float) -> None:
        with self._lock:
            self._deadlines[threading.get_ident()] = time.monotonic() + seconds
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="conveyor-timeouts", daemon=True
                )
                self._thread.start()

    def disarm(self) -> None:
        with self._lock:
            self._deadlines.pop(threading.get_ident(), None)

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            now = time.monotonic()
            with self._lock:
                late = [t for t, d in self._deadlines.items() if d <= now]
                for ident in late:
                    del self._deadlines[ident]
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(
                        ctypes.c_ulong(ident), ctypes.py_object(JobTimeout)
                    )


class Worker:
    """Runs `app`'s handlers for jobs of `queues` (default: all of the app's).

    `queues` items are names or `(name, weight)`: each fetch picks a queue
    with probability proportional to its weight, or with `strict=True` always
    the first non-empty queue in the order given. `threads` jobs run at once.
    A job runs under a lease of `lease_s`, extended while it runs; if the
    process dies, another worker takes the job back when the lease expires.
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
    ) -> None:
        if threads < 1:
            raise InvalidJobError(f"threads must be at least 1, not {threads}")
        if not 1 <= max_batch <= 1000:
            raise InvalidJobError(f"max_batch must be 1 to 1000, not {max_batch}")
        self.app = app
        names = queues if queues is not None else sorted(app.queues())
        self.queues: list[tuple[str, int]] = [
            (q, 1) if isinstance(q, str) else (q[0], int(q[1])) for q in names
        ]
        self.threads = threads
        self.lease_s = lease_s
        self.max_batch = max_batch
        self.grace_s = grace_s
        self.middleware = tuple(middleware)
        self._handlers: dict[str, JobType[Any, Any]] = dict(app.registry)
        self._async = {
            name for name, jt in self._handlers.items() if inspect.iscoroutinefunction(jt.fn)
        }
        if not self.queues:
            raise InvalidJobError("a worker needs at least one queue")
        s = app.settings
        urls = {s.redis_url_for(q) for q, _ in self.queues}
        if len(urls) > 1:
            raise InvalidJobError(
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
        )
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._keeper: threading.Thread | None = None
        self._timeouts = _Timeouts()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lost_leases = 0
        self._periodic_enqueued = 0

    # Lifecycle

    def start(self) -> None:
        """Start the worker threads and the keeper; returns at once."""
        if self._threads:
            raise RuntimeError("worker already started")
        if self._async:
            self._loop = asyncio.new_event_loop()
            loop_thread = threading.Thread(
                target=self._loop.run_forever, name="conveyor-async", daemon=True
            )
            loop_thread.start()
        for i in range(self.threads):
            t = threading.Thread(target=self._work, name=f"conveyor-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        self._keeper = threading.Thread(target=self._keep, name="conveyor-keeper", daemon=True)
        self._keeper.start()

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
        self._stopped.set()
        if self._keeper is not None:
            # It may be mid-call (a heartbeat, a periodic occurrence): let it end.
            self._keeper.join(5.0)
        self._timeouts.stop()
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
        released, leases lost to the reaper, periodic occurrences enqueued."""
        out = dict(self._queues.stats())
        out["lost_leases"] = self._lost_leases
        out["periodic_enqueued"] = self._periodic_enqueued
        return out

    def metrics(self) -> str:
        """This process's worker metrics in Prometheus' text format."""
        return self._queues.metrics()

    # Threads

    def _keep(self) -> None:
        # Heartbeat well inside the lease; reap at least once a second; look
        # at periodic schedules four times a second.
        beat_every = max(0.05, min(self.lease_s / 3, 1.0))
        schedules = list(self.app.schedules.values())
        tick = min(beat_every, 0.25) if schedules else beat_every
        stores: dict[str, _core.RedisStore] = {}
        checked_until = time.time()
        last_beat = time.monotonic()
        while not self._stopped.wait(tick):
            if time.monotonic() - last_beat >= beat_every:
                last_beat = time.monotonic()
                self._beat()
            if schedules:
                try:
                    checked_until = self._enqueue_due(stores, schedules, checked_until)
                except ConveyorError as err:
                    stores.clear()
                    log.warning("periodic jobs: %s (trying again)", err)

    def _beat(self) -> None:
        try:
            lost = self._queues.heartbeat()
            if lost:
                self._lost_leases += len(lost)
                log.warning("leases expired before their jobs ended (may run twice): %s", lost)
            self._queues.reap()
        except ConveyorError as err:
            log.warning("keeper: %s", err)

    def _enqueue_due(
        self, stores: dict[str, _core.RedisStore], schedules: list[Schedule], after: float
    ) -> float:
        """Enqueues the occurrences due in `(after, now]`; returns now. Each
        occurrence goes in once across all workers (the script claims it)."""
        now = time.time()
        namespace = self.app.settings.namespace
        limit = self.app.settings.max_payload_bytes
        for schedule in schedules:
            for occurrence_ms in schedule.occurrences(after, now):
                payload = encode_call(schedule.args, schedule.kwargs, limit)
                envelope = _core.Envelope(
                    schedule.job_type, payload, run_at_us=occurrence_ms * 1000
                ).encode()
                url = self.app.settings.redis_url_for(schedule.queue)
                store = stores.get(url) or stores.setdefault(url, _core.RedisStore(url))
                if store.enqueue_occurrence(
                    namespace, schedule.queue, schedule.name, occurrence_ms, envelope
                ):
                    self._periodic_enqueued += 1
        return now

    def _work(self) -> None:
        batch_size = 1
        while not self._stopping.is_set():
            try:
                batch = self._queues.fetch(batch_size)
            except ConveyorError as err:
                log.warning("fetch failed, retrying: %s", err)
                self._stopping.wait(0.5)
                continue
            if batch is None:
                try:
                    self._queues.wait_for_work(_IDLE_WAIT_S)
                except ConveyorError as err:
                    log.warning("waiting for jobs failed, retrying: %s", err)
                    self._stopping.wait(0.5)
                continue
            began = time.monotonic()
            ran = self._run_batch(batch)
            if ran:
                per_job = (time.monotonic() - began) / ran
                want = int(_BATCH_TARGET_S / per_job) if per_job > 0 else self.max_batch
                batch_size = max(1, min(self.max_batch, want, batch_size * 2))

    def _run_batch(self, batch: _core.LeasedBatch) -> int:
        """Runs a batch's jobs in order and settles it; returns how many ran."""
        ends: list[float] = []
        failures: dict[int, tuple[str, float | None]] = {}
        handlers = self._handlers
        now = time.time
        queue = batch.queue
        hooks = self.middleware
        simple = not hooks and not self._async
        for i, (job_type, payload, attempt, job_id) in enumerate(batch.jobs):
            if self._stopping.is_set():
                break
            jt = handlers.get(job_type)
            if (
                simple
                and jt is not None
                and jt.options.timeout_s is None
                and attempt < jt.options.max_attempts
            ):
                # The hot path: no hooks, no timeout.
                info = JobInfo(job_id, job_type, attempt + 1, queue, batch=batch, index=i)
                _current.job = info
                try:
                    call = json.loads(payload)
                    args, kwargs = call["args"], call["kwargs"]
                except (ValueError, TypeError, KeyError) as err:
                    # Retrying cannot fix a payload that is not a call.
                    bad = PermanentError(f"job payload is not a Conveyor call: {err!r}")
                    failures[i] = self._failure(jt.options, info, bad)
                else:
                    try:
                        jt.fn(*args, **kwargs)
                    except Exception as err:  # a handler may raise anything
                        failures[i] = self._failure(jt.options, info, err)
                ends.append(now())
                continue
            info = JobInfo(job_id, job_type, attempt + 1, queue, batch=batch, index=i)
            error = self._run_one(jt, info, payload)
            if error is not None:
                options = jt.options if jt is not None else _UNKNOWN_TYPE
                failures[i] = self._failure(options, info, error)
            ends.append(now())
        _current.job = None
        self._settle(batch, ends, failures)
        return len(ends)

    def _run_one(
        self, jt: JobType[Any, Any] | None, info: JobInfo, payload: bytes
    ) -> BaseException | None:
        """One job with every check: unknown type, attempts left, hooks,
        timeout. Returns the error if the attempt failed."""
        _current.job = info
        if jt is None:
            return InvalidJobError(
                f"no handler for job type {info.job_type!r} in this worker "
                f"(it knows {sorted(self._handlers)[:20]})"
            )
        options = jt.options
        if info.attempt > options.max_attempts:
            # Back from the reaper (its worker died mid-job) with no attempts left.
            return PermanentError(
                f"no attempts left: {info.attempt - 1} of {options.max_attempts} made "
                "(the last one's worker died or hung until its lease expired)"
            )
        error: BaseException | None = None
        self._hook("before", info)
        try:
            args, kwargs = decode_call(payload)
        except InvalidJobError as err:
            error = PermanentError(str(err))
        else:
            try:
                self._call(jt, options, args, kwargs)
            except Exception as err:  # a handler may raise anything
                error = err
        self._hook("after", info, error)
        return error

    def _call(
        self,
        jt: JobType[Any, Any],
        options: JobOptions,
        args: list[Any],
        kwargs: dict[str, Any],
    ) -> None:
        timeout = options.timeout_s
        if jt.name in self._async:
            assert self._loop is not None
            coro: Coroutine[Any, Any, Any] = jt.fn(*args, **kwargs)
            if timeout is not None:
                coro = _with_timeout(coro, timeout)
            asyncio.run_coroutine_threadsafe(coro, self._loop).result()
            return
        if timeout is None:
            jt.fn(*args, **kwargs)
            return
        # The timeout may land anywhere up to disarm() returning: catch it here too.
        try:
            self._timeouts.arm(timeout)
            try:
                jt.fn(*args, **kwargs)
            finally:
                self._timeouts.disarm()
        except JobTimeout:
            raise JobTimeout(f"attempt ran longer than its timeout of {timeout}s") from None

    def _failure(
        self, options: JobOptions, info: JobInfo, error: BaseException
    ) -> tuple[str, float | None]:
        """The settle entry for a failed attempt: retry with backoff, or dead."""
        record = error_record(error, info.attempt)
        if isinstance(error, PermanentError) or info.attempt >= options.max_attempts:
            self._hook("on_dead", info, error)
            return record, None
        delay = retry_delay(info.attempt, options.backoff_s, options.backoff_max_s)
        self._hook("on_retry", info, error, delay)
        return record, delay

    def _hook(self, name: str, *args: Any) -> None:
        for m in self.middleware:
            try:
                getattr(m, name)(*args)
            except Exception:
                log.exception("middleware %r.%s failed", m, name)

    def _settle(
        self,
        batch: _core.LeasedBatch,
        ends: list[float],
        failures: dict[int, tuple[str, float | None]],
    ) -> None:
        # Redis away: keep trying while the lease lasts; after that the reaper
        # gives the jobs back, and they run again (at least once, never lost).
        give_up = time.monotonic() + self.lease_s
        while True:
            try:
                self._queues.settle(batch, ends, failures)
                return
            except ConveyorError as err:
                if time.monotonic() > give_up:
                    log.error("could not settle a batch before its lease expired: %s", err)
                    return
                log.warning("settle failed, retrying: %s", err)
                time.sleep(0.2)


async def _with_timeout(coro: Coroutine[Any, Any, Any], seconds: float) -> Any:
    try:
        return await asyncio.wait_for(coro, seconds)
    except TimeoutError:
        raise JobTimeout(f"attempt ran longer than its timeout of {seconds}s") from None


def parse_queues(specs: Sequence[str]) -> list[tuple[str, int]]:
    """`["emails:3", "reports"]` -> `[("emails", 3), ("reports", 1)]`."""
    out = []
    for spec in specs:
        name, _, weight = spec.partition(":")
        _core.check_queue_name(name)
        try:
            w = int(weight) if weight else 1
        except ValueError:
            raise InvalidJobError(f"queue weight in {spec!r} must be a whole number") from None
        if w < 1:
            raise InvalidJobError(f"queue weight in {spec!r} must be at least 1")
        out.append((name, w))
    return out


def load_app(path: str) -> Conveyor:
    """The `Conveyor` object named by `"module:attribute"`."""
    import importlib

    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise InvalidJobError(f"expected MODULE:APP (like myproject.jobs:app), got {path!r}")
    module = importlib.import_module(module_name)
    app = getattr(module, attr, None)
    if not isinstance(app, Conveyor):
        raise InvalidJobError(f"{path} is not a conveyor.Conveyor (got {type(app).__name__})")
    return app
