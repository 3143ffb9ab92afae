"""Run jobs inline in your own tests: no Kafka, no Redis, no worker process.

    from conveyor.testing import capture

    def test_signup_sends_a_welcome_email():
        with capture(app) as jobs:
            signup("ada@example.com")          # calls send_welcome.enqueue(...)
        assert jobs.types() == ["emails.welcome"]
        jobs.run_all()                         # runs the handlers here, now

Arguments go through the same JSON encoder as a real enqueue, so a job that
could not be sent fails here too; handlers see exactly what a worker would
pass them. Jobs enqueued by handlers during `run_all` are captured and run too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from conveyor import _core
from conveyor.app import Conveyor
from conveyor.errors import InvalidJobError
from conveyor.payload import encode_call
from conveyor.worker import JobInfo, _current


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
        args: list[Any] = json.loads(self.payload)["args"]
        return args

    @property
    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments as the handler receives them."""
        kwargs: dict[str, Any] = json.loads(self.payload)["kwargs"]
        return kwargs


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

    def types(self) -> list[str]:
        """The job type of each captured job."""
        return [j.job_type for j in self.jobs]

    def run_all(self, max_jobs: int = 10_000) -> int:
        """Runs captured jobs (and any they enqueue) in this thread, first in
        first out, until none are left; a handler's exception propagates.
        Returns how many ran. Delays and run-at times are ignored."""
        ran = 0
        while self.jobs:
            if ran >= max_jobs:
                raise InvalidJobError(f"more than {max_jobs} jobs: do they enqueue each other?")
            job = self.jobs.pop(0)
            handler = self.app.registry.get(job.job_type)
            if handler is None:
                raise InvalidJobError(f"no handler registered for job type {job.job_type!r}")
            _current.job = JobInfo(job.id, job.job_type, 1, handler.options.queue)
            try:
                handler.fn(*job.args, **job.kwargs)
            finally:
                _current.job = None
            ran += 1
        return ran


@contextmanager
def capture(app: Conveyor) -> Iterator[Captured]:
    """Within the block, `app`'s enqueues are captured instead of sent."""
    captured = Captured(app)
    limit = app.settings.max_payload_bytes

    def sink(
        job_type: str,
        calls: list[tuple[list[Any], dict[str, Any]]],
        dedup_keys: list[str | None],
        run_at_us: int | None,
    ) -> InlineHandle:
        payloads = [encode_call(args, kwargs, limit) for args, kwargs in calls]
        ids = [_core.new_job_id() for _ in payloads]
        for job_id, payload, key in zip(ids, payloads, dedup_keys, strict=True):
            captured.jobs.append(CapturedJob(job_id, job_type, payload, key, run_at_us))
        return InlineHandle(ids)

    previous = app._sink
    app._sink = sink
    try:
        yield captured
    finally:
        app._sink = previous
