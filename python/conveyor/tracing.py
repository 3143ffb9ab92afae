"""OpenTelemetry spans for each job, when `opentelemetry-api` is installed
(an optional dependency: `pip install conveyor[otel]`); without it nothing
here costs more than one flag check per enqueue.

The trace of one job, all in the trace of whatever enqueued it:

- `conveyor.enqueue <type>` (producer): the enqueue call, until the jobs
  are handed to the client;
- `conveyor.to_kafka`: the job's enqueue time to the broker's append time
  (its `kafka` stamp);
- `conveyor.in_kafka`: the append to a relay writing it into Redis
  (`relayed`; the relay's read and write included);
- `conveyor.in_redis`: written into Redis (enqueued, on the direct path) to
  its first attempt's start;
- `conveyor.run <type>` (consumer): each attempt, an error recorded on it.

The enqueue span's context travels in the envelope's W3C `traceparent`
(`trace_context`), taken from the caller's current span automatically; an
explicit `trace_context=` wins. The waiting spans are recorded by the worker
from the envelope's stage stamps when the first attempt starts (their times
are the stamps'), and the run span is current while the handler runs, so
the handler's own spans are its children. Workers record spans through
`conveyor.tracing.Tracing`, a `Middleware` (`Worker(app, middleware=[Tracing()])`).
`CONVEYOR_TRACING=0` turns the automatic context off for a producer.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from conveyor.envelope import Stage
from conveyor.middleware import Middleware

if TYPE_CHECKING:
    from conveyor.job_context import JobInfo
    from conveyor.transports import SendOptions

T = TypeVar("T")

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the optional dependency is not installed
    trace = None  # type: ignore[assignment]

#: Whether enqueues open a span and carry its context (the API is installed
#: and not turned off).
ACTIVE = trace is not None and os.environ.get("CONVEYOR_TRACING", "1") != "0"

_TRACER_NAME = "conveyor"


def recording() -> bool:
    """Whether spans are recorded: an SDK's tracer provider is set (the
    API's default records nothing, and then enqueues skip tracing)."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def enqueue_span(type_name: str, count: int) -> tuple[Any, str | None]:
    """Starts the enqueue span; returns it (end it with `end`) and the
    `traceparent` the jobs carry."""
    tracer = trace.get_tracer(_TRACER_NAME)
    span = tracer.start_span(
        f"conveyor.enqueue {type_name}",
        kind=SpanKind.PRODUCER,
        attributes={"conveyor.job_type": type_name, "conveyor.jobs": count},
    )
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, trace.set_span_in_context(span))
    return span, carrier.get("traceparent")


def send_traced(
    type_name: str, count: int, options: SendOptions, send: Callable[[SendOptions], T]
) -> T:
    """Runs `send` inside an enqueue span, its jobs carrying the span's context."""
    span, parent = enqueue_span(type_name, count)
    try:
        return send(replace(options, trace_context=parent))
    finally:
        span.end()


class Tracing(Middleware):
    """Records each job's waiting spans and its run span (see the module)."""

    def __init__(self, tracer: Any = None) -> None:
        if trace is None:
            from conveyor.errors import ConfigError

            raise ConfigError("tracing needs opentelemetry-api: pip install conveyor[otel]")
        self._tracer = tracer or trace.get_tracer(_TRACER_NAME)
        self._running = threading.local()

    def before(self, job: JobInfo) -> None:
        """Records the waits (first attempt) and opens the run span."""
        envelope = job.envelope()
        parent = None
        if envelope is not None and envelope.trace_context:
            carrier = {"traceparent": envelope.trace_context}
            parent = TraceContextTextMapPropagator().extract(carrier)
            if job.attempt == 1:
                self._waits(envelope.enqueued_at_us, envelope.stages, parent)
        span = self._tracer.start_span(
            f"conveyor.run {job.job_type}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "conveyor.job_id": job.id,
                "conveyor.job_type": job.job_type,
                "conveyor.queue": job.queue,
                "conveyor.attempt": job.attempt,
            },
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        self._running.now = (span, token)

    def after(self, job: JobInfo, error: BaseException | None) -> None:
        """Ends the run span, with the error if the attempt failed."""
        running = getattr(self._running, "now", None)
        if running is None:
            return
        self._running.now = None
        span, token = running
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:200]))
        otel_context.detach(token)
        span.end()

    def _waits(self, enqueued_us: int, stages: list[tuple[int, int]], parent: Any) -> None:
        at = {code: us for code, us in stages if code != Stage.SOURCE}
        started = at.get(Stage.STARTED)
        marks: list[tuple[str, int | None, int | None]] = [
            ("conveyor.to_kafka", enqueued_us, at.get(Stage.KAFKA)),
            ("conveyor.in_kafka", at.get(Stage.KAFKA), at.get(Stage.RELAYED)),
        ]
        marks.append(("conveyor.in_redis", at.get(Stage.RELAYED, enqueued_us), started))
        for name, begin, end in marks:
            if begin is None or (end is None and name != "conveyor.in_redis"):
                continue
            end_ns = (end * 1000) if end is not None else None
            span = self._tracer.start_span(name, context=parent, start_time=begin * 1000)
            span.end(end_time=end_ns)
