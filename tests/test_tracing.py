"""OpenTelemetry: with an SDK configured, an enqueue opens a producer span
whose context the job carries (taken from the caller's span), and the worker
records the job's waits from its stage stamps and a run span that the
handler's own spans nest under, an error recorded on it; through Kafka and
on the direct path. Without an SDK, jobs carry no trace context."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import conveyor
from conveyor import tracing
from tests.helpers.relay import start_relay
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    """The SDK, set once per process (OpenTelemetry allows one provider)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


def _by_name(spans: tuple[ReadableSpan, ...], trace_id: int) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans if s.context is not None and s.context.trace_id == trace_id}


@pytest.mark.timeout(120)
def test_a_job_is_traced_from_the_callers_span_to_its_handler(
    app: conveyor.Conveyor, exporter: InMemorySpanExporter
) -> None:
    tracer = trace.get_tracer("test")

    @app.job("tr.work")
    def work(n: int) -> None:
        with tracer.start_as_current_span("inside the handler"):
            if n < 0:
                raise ValueError("negative")

    @app.job("tr.fail", max_attempts=1)
    def fail() -> None:
        raise ValueError("always")

    app.set_route("tr.fail", conveyor.Route(kafka_percent=0))
    relay = start_relay(app)
    worker = conveyor.Worker(app, threads=1, middleware=[tracing.Tracing()])
    worker.start()
    try:
        with tracer.start_as_current_span("web request") as request:
            handle = work.enqueue(1)
            failing = fail.enqueue()
        trace_id = request.get_span_context().trace_id
        want = {"inside the handler", "conveyor.run tr.work", "conveyor.run tr.fail"}
        wait_until(
            lambda: want <= set(_by_name(exporter.get_finished_spans(), trace_id)), 30, "spans"
        )
    finally:
        worker.stop(grace_s=5)
        relay.stop()
    spans = _by_name(exporter.get_finished_spans(), trace_id)
    enqueue = spans["conveyor.enqueue tr.work"]
    assert enqueue.parent is not None
    assert enqueue.parent.span_id == request.get_span_context().span_id
    assert enqueue.kind == trace.SpanKind.PRODUCER
    run = spans["conveyor.run tr.work"]
    assert run.parent is not None
    assert run.parent.span_id == enqueue.context.span_id
    assert run.attributes is not None
    assert run.attributes["conveyor.job_id"] == handle.id
    inner = spans["inside the handler"]
    assert inner.parent is not None
    assert inner.parent.span_id == run.context.span_id
    for wait in ("conveyor.to_kafka", "conveyor.in_kafka", "conveyor.in_redis"):
        assert wait in spans, sorted(spans)
    to_kafka, in_kafka = spans["conveyor.to_kafka"], spans["conveyor.in_kafka"]
    assert to_kafka.end_time == in_kafka.start_time, "the waits follow each other"
    assert in_kafka.end_time == spans["conveyor.in_redis"].start_time
    failed = spans["conveyor.run tr.fail"]
    assert failed.status.status_code == trace.StatusCode.ERROR
    assert "always" in str(failed.status.description)
    assert [e.name for e in failed.events] == ["exception"]
    assert app.lookup(failing.id) is not None


_ENQUEUE_WITHOUT_SDK = """
import sys
from opentelemetry import trace
import conveyor
app = conveyor.Conveyor(conveyor.Settings(redis_url=sys.argv[1], namespace=sys.argv[2]))
app.set_route("tr.plain", conveyor.Route(kafka_percent=0))
with trace.get_tracer("x").start_as_current_span("no sdk"):
    app.enqueue("tr.plain").wait(10)
"""


def test_jobs_carry_the_callers_trace_only_with_an_sdk(
    app: conveyor.Conveyor, exporter: InMemorySpanExporter
) -> None:
    s = app.settings
    app.set_route("tr.plain", conveyor.Route(kafka_percent=0))
    with trace.get_tracer("test").start_as_current_span("with sdk") as span:
        app.enqueue("tr.plain").wait(10)
    ran = subprocess.run(
        [sys.executable, "-c", _ENQUEUE_WITHOUT_SDK, s.redis_url, s.namespace],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    client = redis.Redis.from_url(s.redis_url)
    ready = client.lrange(f"cv:{s.namespace}:{{default}}:ready", 0, -1)
    first, second = (conveyor.Envelope.decode(raw) for raw in ready if isinstance(raw, bytes))
    trace_id = f"{span.get_span_context().trace_id:032x}"
    assert first.trace_context is not None
    assert first.trace_context.split("-")[1] == trace_id
    assert second.trace_context is None, "no SDK: nothing recorded, nothing carried"
