"""Job types: a handler registered under a stable name, and how to enqueue it."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from conveyor.arguments import Reader
from conveyor.errors import InvalidJobError, PermanentError
from conveyor.handles import JobHandle
from conveyor.payload import Call, split_call
from conveyor.transports import PLAIN, SendOptions

if TYPE_CHECKING:
    from conveyor.app import Conveyor

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class JobOptions:
    """How a job type runs. Workers read these from the registry."""

    #: Queue (and so Kafka topic and Redis queue) the job type goes to.
    queue: str = "default"
    #: Attempts before the job is dead-lettered.
    max_attempts: int = 5
    #: Seconds an attempt may run before it counts as failed; None: no limit.
    timeout_s: float | None = None
    #: Delay before the first retry; it doubles with each attempt (with jitter).
    backoff_s: float = 1.0
    #: Longest delay between two attempts.
    backoff_max_s: float = 3600.0
    #: Keep each job's outcome (return value, or last error when given up
    #: on) for `handle.result()` (`conveyor.results`).
    store_result: bool = False
    #: How long a kept result stays readable, in seconds.
    result_ttl_s: float = 3600.0


class JobType(Generic[P, R]):
    """A handler registered with `@app.job(name)`.

    Calling it runs the handler here and now; `enqueue` sends it to run later,
    with arguments checked against the handler's signature before anything is sent.
    """

    def __init__(self, app: Conveyor, name: str, fn: Callable[P, R], options: JobOptions):
        self.app = app
        self.name = name
        self.fn = fn
        self.options = options
        self._signature = inspect.signature(fn)
        self._shape = _Shape.of(self._signature)
        #: Reads JSON arguments into the handler's annotated types (None:
        #: nothing to convert).
        self.reader = Reader.of(name, fn)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"JobType({self.name!r}, queue={self.options.queue!r})"

    def check_args(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Raise InvalidJobError unless the handler accepts these arguments."""
        try:
            self._signature.bind(*args, **kwargs)
        except TypeError as err:
            raise InvalidJobError(
                f"arguments do not fit {self.name}{self._signature}: {err}"
            ) from err

    def misfit(self, args: Sequence[Any], kwargs: Mapping[str, Any], error: TypeError) -> Exception:
        """What a handler's TypeError means: `PermanentError` when the job's
        arguments do not fit its signature (a job written by hand or over
        HTTP: no attempt can succeed), else the handler's own `error`."""
        try:
            self._signature.bind(*args, **kwargs)
        except TypeError as err:
            return PermanentError(f"arguments do not fit {self.name}{self._signature}: {err}")
        return error

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle:
        """Send one job with these handler arguments; returns at once."""
        shape = self._shape
        if shape is None or not shape.accepts_call(args, kwargs):
            self.check_args(args, kwargs)
        return JobHandle(
            self.app.send_one(self.name, self.options.queue, args, kwargs, PLAIN), self
        )

    async def enqueue_async(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle:
        """`enqueue` for async code: returns once the job is acknowledged
        (by Kafka, or by Redis on the direct path; `DeliveryError` if it was
        not), without blocking the event loop. The send runs on the loop's
        default executor: it may wait, for Kafka's metadata the first time a
        topic is used, or for room while Kafka is away."""
        loop = asyncio.get_running_loop()
        handle = await loop.run_in_executor(None, functools.partial(self.enqueue, *args, **kwargs))
        await handle.wait_async()
        return handle

    def enqueue_with(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        dedup_key: str | None = None,
        delay: float | timedelta | None = None,
        run_at: datetime | float | None = None,
        trace_context: str | None = None,
        job_id: str | None = None,
    ) -> JobHandle:
        """Send one job with options: a dedup key, a delay or a run-at time
        (a datetime, or seconds since the epoch), a W3C trace context, the
        id to give it (from `conveyor.new_job_id()`: for a caller that names
        the job before it is sent, such as an enqueue on a transaction's
        commit)."""
        kwargs = kwargs or {}
        self.check_args(args, kwargs)
        options = SendOptions.of([dedup_key], delay, run_at, trace_context, 1, job_id=job_id)
        return JobHandle(
            self.app.send_one(self.name, self.options.queue, args, kwargs, options), self
        )

    def enqueue_many(
        self,
        calls: Iterable[Call],
        *,
        dedup_keys: Sequence[str | None] | None = None,
        delay: float | timedelta | None = None,
        run_at: datetime | float | None = None,
        trace_context: str | None = None,
    ) -> JobHandle:
        """Send a batch in one call: each item is a tuple of positional
        arguments or a dict of keyword arguments. One handle for the batch."""
        materialised = list(calls)
        shape = self._shape
        for call in materialised:
            if shape is None or not shape.accepts(call):
                args, kwargs = split_call(call)
                self.check_args(args, kwargs)
        options = SendOptions.of(dedup_keys, delay, run_at, trace_context, len(materialised))
        return JobHandle(
            self.app.send_many(self.name, self.options.queue, materialised, options), self
        )


@dataclass(frozen=True)
class _Shape:
    """What a plain signature (no positional-only or keyword-only parameters)
    accepts, checked in a few operations per call; `enqueue_many` checks
    thousands of calls. Anything it does not accept gets the full check."""

    required: int
    names: tuple[str, ...]
    required_names: frozenset[str]
    var_args: bool
    var_kwargs: bool

    @classmethod
    def of(cls, signature: inspect.Signature) -> _Shape | None:
        plain, names, required_names = [], [], set()
        var_args = var_kwargs = False
        for p in signature.parameters.values():
            if p.kind is p.VAR_POSITIONAL:
                var_args = True
            elif p.kind is p.VAR_KEYWORD:
                var_kwargs = True
            elif p.kind is p.POSITIONAL_OR_KEYWORD:
                plain.append(p)
                names.append(p.name)
                if p.default is p.empty:
                    required_names.add(p.name)
            else:
                return None
        required = sum(1 for p in plain if p.default is p.empty)
        return cls(required, tuple(names), frozenset(required_names), var_args, var_kwargs)

    def accepts_call(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> bool:
        """Whether `fn(*args, **kwargs)` binds (True only when sure)."""
        n = len(args)
        if n > len(self.names) and not self.var_args:
            return False
        if not kwargs:
            # Required parameters come first in a plain signature.
            return n >= self.required
        taken = self.names[:n]
        for key in kwargs:
            if key in taken or (key not in self.names and not self.var_kwargs):
                return False
        return all(name in kwargs for name in self.required_names if name not in taken)

    def accepts(self, call: object) -> bool:
        if isinstance(call, tuple | list):
            n = len(call)
            return n >= self.required and (n <= len(self.names) or self.var_args)
        if isinstance(call, dict):
            keys = call.keys()
            return self.required_names <= keys and (self.var_kwargs or keys <= set(self.names))
        return False
