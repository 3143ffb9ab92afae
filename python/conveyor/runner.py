"""Running handlers: the one place that turns a leased (or captured) job into
a handler call and its outcome. The worker's hot path, its careful path and
`conveyor.testing` all run jobs through a `Runner`.

One attempt: look up the handler; refuse an unknown type or a job with no
attempts left; run the `before` hooks; decode the payload (a payload that is
not a call can never run, so it fails permanently); call the handler, sync or
async, under its timeout; run the `after` hooks. A failure becomes a retry
after a backoff, or a dead letter.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import time
import traceback
from collections.abc import Coroutine, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from conveyor import _core
from conveyor.errors import InvalidJobError, JobCancelled, JobTimeout, PermanentError
from conveyor.job_context import JobInfo, current, leased_job, task_job
from conveyor.jobs import JobOptions, JobType
from conveyor.middleware import Middleware, call_hooks
from conveyor.payload import decode_call
from conveyor.results import encode_error, encode_value
from conveyor.retry import retry_delay
from conveyor.timeouts import Timeouts, with_timeout

#: Options for job types this worker has no handler for: they are retried (a
#: deploy may be rolling out the handler) and then dead-lettered.
UNKNOWN_TYPE = JobOptions(max_attempts=5, backoff_s=5.0, backoff_max_s=300.0)

#: How a failed job is settled: its error record (JSON) and the delay before
#: the next attempt, or None to dead-letter it.
Failure = tuple[str, float | None]

#: A job's arguments as the runner gets them: its payload, or the `(args,
#: kwargs)` the fast reader already read from it at fetch.
Arguments = bytes | tuple[list[Any], dict[str, Any]]

#: A result to keep for a job's waiters (`conveyor.results`) and for how long (s).
Kept = tuple[bytes, float]

#: An async job handed to the loop: its index in the batch, type, job and
#: the future of its run.
Started = tuple[int, "JobType[Any, Any]", JobInfo, "Future[Any]"]


def read_arguments(arguments: Arguments) -> tuple[list[Any], dict[str, Any]]:
    """The `(args, kwargs)` of `arguments`; InvalidJobError if its payload is
    not a call."""
    return arguments if isinstance(arguments, tuple) else decode_call(arguments)


class Slots(Protocol):
    """Room for async jobs in flight (the worker's `AsyncLane`)."""

    def acquire(self, stopping: threading.Event) -> bool:
        """Takes a slot, waiting while none is free; False once `stopping` is set."""
        ...

    def release(self) -> None:
        """Gives back a slot taken for a job that did not start."""
        ...


@dataclass
class BatchRun:
    """How the jobs of a batch that ran ended, by index, for settle."""

    #: When each job that ran ended (seconds since the epoch), in order.
    ends: list[float] = field(default_factory=list)
    #: The failed ones.
    failures: dict[int, Failure] = field(default_factory=dict)
    #: Results to keep (`store_result` types).
    results: dict[int, Kept] = field(default_factory=dict)
    #: The ones that stopped for a cancel (`JobCancelled`).
    cancelled: list[int] = field(default_factory=list)
    #: Async jobs started on the loop and not awaited (`run_batch` with slots).
    started: list[Started] = field(default_factory=list)


#: How often a running async handler looks whether its job was cancelled.
_CANCEL_POLL_S = 0.2


async def until_cancelled(coro: Coroutine[Any, Any, Any], info: JobInfo) -> Any:
    """Runs an async handler's coroutine, cancelling it once its job's cancel
    is asked (`JobInfo.cancelled`); raises `JobCancelled` if it then stops.
    The handler's task carries its job for `current_job()`."""
    task_job.set(info)  # in this task's own context, copied into the handler's
    task = asyncio.ensure_future(coro)
    while True:
        done, _ = await asyncio.wait({task}, timeout=_CANCEL_POLL_S)
        if done:
            return task.result()
        if info.cancelled:
            task.cancel()
            try:
                return await task  # a handler may catch the cancel and finish
            except asyncio.CancelledError:
                raise JobCancelled("cancelled while it ran") from None


def error_record(error: BaseException, attempt: int) -> str:
    """The JSON kept with a failed job: type, message, traceback tail, attempt.
    An error that cannot describe itself (its `__str__` raises) is still
    recorded, by its type."""
    try:
        message = str(error)[:2000]
    except Exception:
        message = f"<unprintable {type(error).__name__}>"
    try:
        tb = "".join(traceback.format_exception(error))
    except Exception:
        tb = "<traceback unavailable>"
    return json.dumps(
        {
            "type": type(error).__name__,
            "message": message,
            "traceback": tb[-4000:],
            "attempt": attempt,
            "at": time.time(),
        }
    )


class Runner:
    """Runs jobs with `handlers` (job type -> registered type).

    Async handlers run on `loop` (a loop running on another thread) when one
    is given, else each in a loop of its own (`asyncio.run`, for tests).
    """

    def __init__(
        self,
        handlers: Mapping[str, JobType[Any, Any]],
        middleware: Sequence[Middleware] = (),
        loop: asyncio.AbstractEventLoop | None = None,
        result_limit: int = _core.MAX_PAYLOAD_LEN,
    ) -> None:
        self.handlers = dict(handlers)
        #: Largest result kept (bytes, encoded); a larger one is kept as an error.
        self.result_limit = result_limit
        self.middleware = tuple(middleware)
        self.loop = loop
        self.timeouts = Timeouts()
        self.async_types = frozenset(
            name for name, jt in self.handlers.items() if inspect.iscoroutinefunction(jt.fn)
        )
        #: The types `run_batch`'s hot path runs: no hook, timeout, kept
        #: result or event loop to go through.
        self.plain = {
            name: (jt.fn, jt.options.max_attempts, jt.reader, jt)
            for name, jt in self.handlers.items()
            if not self.middleware
            and jt.options.timeout_s is None
            and not jt.options.store_result
            and name not in self.async_types
        }

    def run_batch(
        self,
        batch: _core.LeasedBatch,
        stopping: threading.Event,
        ran: BatchRun,
        slots: Slots | None = None,
    ) -> None:
        """Runs a batch's jobs in order until `stopping` is set, recording in
        `ran` how each one that ran ended, for settle. Filled as jobs end, so
        that what ran is known even if this is interrupted.

        With `slots`, an async job takes a slot and is only started on the
        loop (`ran.started`; its `ends` entry is 0.0 until `finish_async`
        fills it): the worker's async lane awaits it while this thread moves
        on. With no slot free, the thread waits for one."""
        handlers, plain = self.handlers, self.plain
        now, begin = time.time, batch.begin
        ends, failures = ran.ends, ran.failures
        current.job, current.batch = None, batch
        try:
            for i, (job_type, call, attempt) in enumerate(batch.jobs):
                if stopping.is_set():
                    break
                hot = plain.get(job_type)
                if hot is not None and attempt < hot[1]:
                    # The hot path: the same steps as `attempt` with nothing to
                    # hook or time, spelled out to save calls per job; its
                    # `JobInfo` is made only if asked for (`current_job()`).
                    fn, _, reader, jt = hot
                    begin(i)
                    try:
                        args, kwargs = call if call is not None else decode_call(batch.payload(i))
                        if reader is not None:
                            reader(args, kwargs)
                    except InvalidJobError as err:
                        failures[i] = self.failure(
                            jt.options, leased_job(batch, i), PermanentError(str(err))
                        )
                    else:
                        try:
                            if kwargs:
                                fn(*args, **kwargs)
                            else:  # unpacking an empty dict costs a third of a no-op call
                                fn(*args)
                        except BaseException as err:  # a handler may raise anything at all
                            self._raised(batch, i, jt, (args, kwargs), err, ran=ran)
                    ends.append(now())
                    continue
                if not self._run_one(
                    batch, i, handlers.get(job_type), call, stopping=stopping, ran=ran, slots=slots
                ):
                    break  # stopping: this job and the rest go back unstarted
        finally:
            current.job = current.batch = None

    def _raised(
        self,
        batch: _core.LeasedBatch,
        i: int,
        jt: JobType[Any, Any],
        call: tuple[list[Any], dict[str, Any]],
        err: BaseException,
        *,
        ran: BatchRun,
    ) -> None:
        """Records how job `i` of `run_batch`'s hot path ended when its
        handler raised `err`: cancelled, or failed."""
        if isinstance(err, JobCancelled):
            ran.cancelled.append(i)
            return
        if type(err) is TypeError:
            err = jt.misfit(*call, err)
        ran.failures[i] = self.failure(jt.options, leased_job(batch, i), err)

    def _run_one(
        self,
        batch: _core.LeasedBatch,
        i: int,
        jt: JobType[Any, Any] | None,
        call: tuple[list[Any], dict[str, Any]] | None,
        *,
        stopping: threading.Event,
        ran: BatchRun,
        slots: Slots | None,
    ) -> bool:
        """Job `i` of `run_batch` with every check (or started on the async
        lane); False, with nothing started, once `stopping` is set while it
        waits for a slot."""
        lane = slots if jt is not None and jt.name in self.async_types else None
        if lane is not None and not lane.acquire(stopping):
            return False
        batch.begin(i)
        info = leased_job(batch, i)
        arguments = call if call is not None else batch.payload(i)
        if (
            lane is not None
            and jt is not None
            and self._lane_start(lane, i, jt, info, arguments, ran=ran)
        ):
            ran.ends.append(0.0)
            return True
        kept: list[Any] = []
        error = self.attempt(jt, info, arguments, kept)
        current.job = None
        options = jt.options if jt is not None else UNKNOWN_TYPE
        self._record(ran, i, options, info, error=error, kept=kept)
        ran.ends.append(time.time())
        return True

    def _record(
        self,
        ran: BatchRun,
        i: int,
        options: JobOptions,
        info: JobInfo,
        *,
        error: BaseException | None,
        kept: list[Any],
    ) -> None:
        """Records how job `i`, run with every check, ended (not its end time)."""
        ttl = options.result_ttl_s
        if isinstance(error, JobCancelled):
            ran.cancelled.append(i)
            if options.store_result:
                ran.results[i] = (encode_error(error_record(error, info.attempt)), ttl)
        elif error is not None:
            ran.failures[i] = failure = self.failure(options, info, error)
            if options.store_result and failure[1] is None:
                ran.results[i] = (encode_error(failure[0]), ttl)
        elif kept:
            ran.results[i] = (encode_value(kept[0], self.result_limit), ttl)

    def attempt(
        self,
        jt: JobType[Any, Any] | None,
        info: JobInfo,
        payload: Arguments,
        kept: list[Any] | None = None,
    ) -> BaseException | None:
        """One job with every check: unknown type, attempts left, hooks,
        timeout. Returns the error if the attempt failed; appends what the
        handler returned to `kept` (if given) for a type that keeps results."""
        current.job = info
        if jt is None:
            return InvalidJobError(
                f"no handler for job type {info.job_type!r} in this worker "
                f"(it knows {sorted(self.handlers)[:20]})"
            )
        options = jt.options
        if info.attempt > options.max_attempts:
            # Back from the reaper (its worker died mid-job) with no attempts left.
            return PermanentError(
                f"no attempts left: {info.attempt - 1} of {options.max_attempts} made "
                "(the last one's worker died or hung until its lease expired)"
            )
        error: BaseException | None = None
        call_hooks(self.middleware, "before", info)
        try:
            args, kwargs = read_arguments(payload)
            if jt.reader is not None:
                jt.reader(args, kwargs)
        except InvalidJobError as err:
            error = PermanentError(str(err))
        else:
            try:
                value = self._call(jt, options, args, kwargs, info)
                if kept is not None and options.store_result:
                    kept.append(value)
            except BaseException as err:  # a handler may raise anything at all
                error = jt.misfit(args, kwargs, err) if type(err) is TypeError else err
        call_hooks(self.middleware, "after", info, error)
        return error

    def start_async(
        self, jt: JobType[Any, Any], info: JobInfo, payload: Arguments
    ) -> Future[Any] | None:
        """Starts an async job on the loop after the checks and `before`
        hooks of `attempt`; None (nothing done) when the attempt cannot start
        (no attempts left, a payload that is not a call): `attempt` then
        records why."""
        if self.loop is None or info.attempt > jt.options.max_attempts:
            return None
        try:
            args, kwargs = read_arguments(payload)
            if jt.reader is not None:
                jt.reader(args, kwargs)
        except InvalidJobError:
            return None
        call_hooks(self.middleware, "before", info)
        try:
            coro = self._coroutine(jt, jt.options, args, kwargs, info)
        except BaseException as err:  # calling an async def raises only for bad arguments
            failed: Future[Any] = Future()
            failed.set_exception(jt.misfit(args, kwargs, err) if type(err) is TypeError else err)
            return failed
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def _lane_start(
        self,
        slots: Slots,
        i: int,
        jt: JobType[Any, Any],
        info: JobInfo,
        payload: Arguments,
        *,
        ran: BatchRun,
    ) -> bool:
        """Starts an async job with the slot taken for it; False when it
        cannot start (the slot given back; `attempt` then records why)."""
        started = self.start_async(jt, info, payload)
        if started is None:
            slots.release()
            return False
        ran.started.append((i, jt, info, started))
        return True

    def finish_async(
        self, ran: BatchRun, i: int, jt: JobType[Any, Any], info: JobInfo, done: Future[Any]
    ) -> None:
        """Records how a job started by `start_async` ended, after its
        `after` hooks (on the calling thread)."""
        error: BaseException | None = None
        kept: list[Any] = []
        current.job = info
        try:
            value = done.result()
            if jt.options.store_result:
                kept.append(value)
        except BaseException as err:  # a handler may raise anything at all
            error = err
        call_hooks(self.middleware, "after", info, error)
        self._record(ran, i, jt.options, info, error=error, kept=kept)
        current.job = None
        ran.ends[i] = time.time()

    def _coroutine(
        self,
        jt: JobType[Any, Any],
        options: JobOptions,
        args: list[Any],
        kwargs: dict[str, Any],
        info: JobInfo,
    ) -> Coroutine[Any, Any, Any]:
        """An async handler's call under its timeout and cancel watch."""
        coro: Coroutine[Any, Any, Any] = jt.fn(*args, **kwargs)
        if options.timeout_s is not None:
            coro = with_timeout(coro, options.timeout_s)
        return until_cancelled(coro, info)

    def _call(
        self,
        jt: JobType[Any, Any],
        options: JobOptions,
        args: list[Any],
        kwargs: dict[str, Any],
        info: JobInfo,
    ) -> Any:
        """Calls the handler; returns what it returned."""
        timeout = options.timeout_s
        if jt.name in self.async_types:
            coro = self._coroutine(jt, options, args, kwargs, info)
            if self.loop is None:
                return asyncio.run(coro)
            return asyncio.run_coroutine_threadsafe(coro, self.loop).result()
        if timeout is None:
            return jt.fn(*args, **kwargs)
        # The timeout may land anywhere up to disarm() returning: catch it here too.
        try:
            self.timeouts.arm(timeout)
            try:
                return jt.fn(*args, **kwargs)
            finally:
                self.timeouts.disarm()
        except JobTimeout:
            raise JobTimeout(f"attempt ran longer than its timeout of {timeout}s") from None

    def failure(self, options: JobOptions, info: JobInfo, error: BaseException) -> Failure:
        """The settle entry for a failed attempt: retry with backoff, or dead."""
        record = error_record(error, info.attempt)
        if isinstance(error, PermanentError) or info.attempt >= options.max_attempts:
            call_hooks(self.middleware, "on_dead", info, error)
            return record, None
        delay = retry_delay(info.attempt, options.backoff_s, options.backoff_max_s)
        call_hooks(self.middleware, "on_retry", info, error, delay)
        return record, delay
