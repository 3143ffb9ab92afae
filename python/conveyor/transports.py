"""Where enqueued jobs go, chosen once per enqueue by `Conveyor`: to Kafka
(the default), split between Kafka and the direct path by a run-time route,
or captured by `conveyor.testing`. Every transport takes the same shapes:
one normalised call or a list of them, the resolved `Target`, and one
`SendOptions` value."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from conveyor import _core
from conveyor.enqueue import Enqueued
from conveyor.errors import InvalidJobError
from conveyor.payload import Call, encode_call, split_call
from conveyor.routing import Route, RoutedHandle

if TYPE_CHECKING:
    from conveyor.app import Conveyor

#: One normalised call: positional arguments as a list or tuple, keyword
#: arguments as a dict.
Args = tuple[Sequence[Any], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Target:
    """Where a job type's jobs go: its queue and that queue's topic."""

    queue: str
    topic: str


@dataclass(frozen=True, slots=True)
class SendOptions:
    """What an enqueue asks for beyond its calls, carried as one value from
    the public methods to the transport. `dedup_keys` has one entry per job
    (or is None)."""

    dedup_keys: list[str | None] | None = None
    run_at_us: int | None = None
    trace_context: str | None = None
    #: The id a single job is sent with (made by `conveyor.new_job_id()`).
    job_id: str | None = None

    @staticmethod
    def of(
        dedup_keys: Sequence[str | None] | None,
        delay: float | timedelta | None,
        run_at: datetime | float | None,
        trace_context: str | None,
        jobs: int,
        *,
        job_id: str | None = None,
    ) -> SendOptions:
        """Checks and converts the options of an enqueue of `jobs` jobs."""
        if dedup_keys is not None and len(dedup_keys) != jobs:
            raise InvalidJobError(f"{len(dedup_keys)} dedup keys for {jobs} jobs")
        if job_id is not None and jobs != 1:
            raise InvalidJobError("a job id is given to one job at a time")
        at = None if delay is None and run_at is None else run_at_us(delay, run_at)
        if trace_context is not None:
            _core.check_trace_context(trace_context)
        keys = None if dedup_keys is None else list(dedup_keys)
        return SendOptions(keys, at, trace_context, job_id)

    def keys(self, jobs: int) -> list[str | None]:
        """A dedup key (or None) per job."""
        return self.dedup_keys if self.dedup_keys is not None else [None] * jobs


#: The options of a plain job: the common case, tested by identity.
PLAIN = SendOptions()


def run_at_us(delay: float | timedelta | None, run_at: datetime | float | None) -> int | None:
    """When a job may run, in µs since the epoch, from a delay or a time: at
    most 366 days ahead (the envelope's rule, `_core.MAX_SCHEDULE_AHEAD_US`),
    so that no overflow makes a job run at once or never."""
    if delay is not None and run_at is not None:
        raise InvalidJobError("give a delay or a run_at time, not both")
    ahead_s = _core.MAX_SCHEDULE_AHEAD_US / 1e6
    now = time.time()
    if delay is not None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
        if not 0 <= seconds <= ahead_s:
            raise InvalidJobError(f"delay must be 0 to {ahead_s:.0f} seconds, got {seconds}s")
        return int((now + seconds) * 1_000_000)
    if run_at is not None:
        if isinstance(run_at, datetime):
            if run_at.tzinfo is None:
                raise InvalidJobError(
                    "run_at must be timezone-aware (naive datetimes are ambiguous)"
                )
            at = run_at.timestamp()
        else:
            at = float(run_at)
        if not 0 <= at <= now + ahead_s:
            raise InvalidJobError(
                f"run_at must be a time at most 366 days ahead, got {at} s since the epoch"
            )
        return int(at * 1_000_000)
    return None


def normalised(calls: Sequence[Call]) -> list[Args]:
    """`enqueue_many` items as `(args, kwargs)` pairs."""
    out: list[Args] = []
    for call in calls:
        args, kwargs = split_call(call)
        out.append((args, dict(kwargs)))
    return out


class Transport(Protocol):
    """Sends jobs somewhere."""

    def send_one(
        self,
        type_name: str,
        target: Target,
        args: list[Any] | tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        options: SendOptions,
    ) -> Enqueued:
        """Sends one job."""
        ...

    def send_many(
        self, type_name: str, target: Target, calls: list[Call], options: SendOptions
    ) -> Enqueued:
        """Sends a batch of jobs of one type."""
        ...


class KafkaTransport:
    """Jobs into their queue's Kafka topic through the native producer."""

    def __init__(self, app: Conveyor) -> None:
        self._app = app
        self._limit = app.settings.max_payload_bytes

    def send_one(
        self,
        type_name: str,
        target: Target,
        args: list[Any] | tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        options: SendOptions,
    ) -> Enqueued:
        """Sends one job; returns at once."""
        # The attribute first: a call per job is measurable at 4 us a job.
        producer = self._app._producer or self._app.producer()
        if options is PLAIN:
            # Each keyword argument costs the binding a lookup: the plain job
            # (the common case) passes none it does not need.
            return producer.send_call(
                target.topic, type_name, args, kwargs, max_payload_bytes=self._limit
            )
        return producer.send_call(
            target.topic,
            type_name,
            args,
            kwargs,
            max_payload_bytes=self._limit,
            dedup_key=options.dedup_keys[0] if options.dedup_keys else None,
            run_at_us=options.run_at_us,
            trace_context=options.trace_context,
            job_id=options.job_id,
        )

    def send_many(
        self, type_name: str, target: Target, calls: list[Call], options: SendOptions
    ) -> Enqueued:
        """Sends a batch in one native call."""
        return self._app.producer().send_calls(
            target.topic,
            type_name,
            calls,
            max_payload_bytes=self._limit,
            dedup_keys=options.dedup_keys,
            run_at_us=options.run_at_us,
            trace_context=options.trace_context,
        )


class RoutedTransport:
    """Jobs split between Kafka and the direct path by `route` (or written
    both ways, for double writes)."""

    def __init__(self, app: Conveyor, route: Route) -> None:
        self._app = app
        self._route = route

    def send_one(
        self,
        type_name: str,
        target: Target,
        args: list[Any] | tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        options: SendOptions,
    ) -> Enqueued:
        """Sends one job by the route."""
        return self._send(type_name, target, [(args, kwargs or {})], options)

    def send_many(
        self, type_name: str, target: Target, calls: list[Call], options: SendOptions
    ) -> Enqueued:
        """Sends a batch by the route."""
        return self._send(type_name, target, normalised(calls), options)

    def _send(
        self, type_name: str, target: Target, calls: list[Args], options: SendOptions
    ) -> Enqueued:
        limit = self._app.settings.max_payload_bytes
        envelopes = [
            _core.Envelope(
                type_name,
                encode_call(args, kwargs, limit),
                dedup_key=key,
                run_at_us=options.run_at_us,
                trace_context=options.trace_context,
                id=options.job_id,
            )
            for (args, kwargs), key in zip(calls, options.keys(len(calls)), strict=True)
        ]
        route = self._route
        via_kafka = [True] * len(envelopes) if route.double_write else route.split(len(envelopes))
        direct = [
            e.encode()
            for e, kafka in zip(envelopes, via_kafka, strict=True)
            if route.double_write or not kafka
        ]
        if direct:
            # Written before anything goes to Kafka: with double writes, the
            # job is in Redis before its shadow copy exists.
            settings = self._app.settings
            self._app.store(target.queue).admit(
                settings.namespace, target.queue, direct, tally=settings.tallies
            )
        to_kafka = [e for e, kafka in zip(envelopes, via_kafka, strict=True) if kafka]
        # No producer unless a job goes to Kafka: in Redis-only mode none runs.
        # Double-written records are marked: a relay in shadow mode drops only those.
        handle = (
            self._app.producer().send_envelopes(
                target.topic, to_kafka, double_written=route.double_write
            )
            if to_kafka
            else None
        )
        return RoutedHandle([e.id for e in envelopes], handle, via_kafka)
