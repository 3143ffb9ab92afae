"""Run jobs inline in your own tests: no Kafka, no Redis, no worker process.

    from conveyor.testing import capture

    def test_signup_sends_a_welcome_email():
        with capture(app) as jobs:
            signup("ada@example.com")          # calls send_welcome.enqueue(...)
        assert jobs.types() == ["emails.welcome"]
        jobs.run_all()                         # runs the handlers here, now

Arguments go through the same JSON encoder as a real enqueue, so a job that
could not be sent fails here too; handlers see exactly what a worker would
pass them, run by the worker's own runner. A unique job whose dedup key is
held by a captured job not yet run is dropped, as admission into Redis drops
it (`jobs.duplicates` counts them; `tests/test_admission_conformance.py`
holds the two to the same cases). Jobs enqueued by handlers during `run_all`
are captured and run too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from conveyor import _core
from conveyor.app import Conveyor
from conveyor.errors import InvalidJobError
from conveyor.job_context import JobInfo, current
from conveyor.payload import Call, decode_call, encode_call
from conveyor.runner import Runner
from conveyor.transports import Args, SendOptions, Target, normalised


@dataclass(frozen=True)
class CapturedJob:
    """A job an application tried to enqueue."""

    id: str
    job_type: str
    #: The payload exactly as it would have been sent (JSON bytes).
    payload: bytes
    dedup_key: str | None
    run_at_us: int | None

    @property
    def args(self) -> list[Any]:
        """Positional arguments as the handler receives them."""
        return decode_call(self.payload)[0]

    @property
    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments as the handler receives them."""
        return decode_call(self.payload)[1]


class InlineHandle:
    """What `enqueue` returns under `capture`: already 'delivered'."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids

    @property
    def id(self) -> str:
        """The id of the first (usually only) job."""
        return self.ids[0]

    def done(self) -> bool:
        """Always True: nothing is pending."""
        return True

    def wait(self, timeout_s: float | None = None) -> list[tuple[int, int]]:
        """`(partition, offset)` per job; both -1 as nothing went to Kafka."""
        return [(-1, -1)] * len(self.ids)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Captured:
    """Jobs captured from an application, in the order they were enqueued."""

    app: Conveyor
    jobs: list[CapturedJob] = field(default_factory=list)
    #: Unique jobs dropped because a captured job not yet run held their
    #: dedup key (what admission into Redis does).
    duplicates: int = 0

    def types(self) -> list[str]:
        """The job type of each captured job."""
        return [j.job_type for j in self.jobs]

    def run_all(self, max_jobs: int = 10_000) -> int:
        """Runs captured jobs (and any they enqueue) in this thread, first in
        first out, until none are left, with the runner a worker uses (async
        handlers are awaited, timeouts apply); a handler's exception
        propagates. Returns how many ran. Delays and run-at times are ignored."""
        runner = Runner(self.app.registry)
        ran = 0
        try:
            while self.jobs:
                if ran >= max_jobs:
                    raise InvalidJobError(f"more than {max_jobs} jobs: do they enqueue each other?")
                job = self.jobs.pop(0)
                handler = self.app.registry.get(job.job_type)
                if handler is None:
                    raise InvalidJobError(f"no handler registered for job type {job.job_type!r}")
                info = JobInfo(job.id, job.job_type, 1, handler.options.queue)
                error = runner.attempt(handler, info, job.payload)
                current.job = None
                if error is not None:
                    raise error
                ran += 1
        finally:
            current.job = None
            runner.timeouts.stop()
        return ran


class CaptureTransport:
    """The transport `capture` puts in place: jobs are encoded exactly as a
    real enqueue would, then kept instead of sent."""

    def __init__(self, captured: Captured) -> None:
        self._captured = captured
        self._limit = captured.app.settings.max_payload_bytes

    def send_one(
        self,
        type_name: str,
        target: Target,
        args: list[Any] | tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        options: SendOptions,
    ) -> InlineHandle:
        """Captures one job."""
        return self._keep(type_name, [(args, kwargs or {})], options)

    def send_many(
        self, type_name: str, target: Target, calls: list[Call], options: SendOptions
    ) -> InlineHandle:
        """Captures a batch of jobs."""
        return self._keep(type_name, normalised(calls), options)

    def _keep(self, type_name: str, calls: list[Args], options: SendOptions) -> InlineHandle:
        payloads = [encode_call(args, kwargs, self._limit) for args, kwargs in calls]
        ids = [options.job_id or _core.new_job_id() for _ in payloads]
        keys = options.keys(len(payloads))
        captured = self._captured
        # A dedup key is held per job type, as in Redis (`keys::unique_field`).
        held = {(j.job_type, j.dedup_key) for j in captured.jobs if j.dedup_key is not None}
        for job_id, payload, key in zip(ids, payloads, keys, strict=True):
            if key is not None and (type_name, key) in held:
                captured.duplicates += 1
                continue
            if key is not None:
                held.add((type_name, key))
            captured.jobs.append(CapturedJob(job_id, type_name, payload, key, options.run_at_us))
        return InlineHandle(ids)


@contextmanager
def capture(app: Conveyor) -> Iterator[Captured]:
    """Within the block, `app`'s enqueues are captured instead of sent."""
    captured = Captured(app)
    previous = app._capture
    app._capture = CaptureTransport(captured)
    try:
        yield captured
    finally:
        app._capture = previous
