"""The job a handler is running: `conveyor.current_job()` and what it returns."""

from __future__ import annotations

import threading
from contextvars import ContextVar

from conveyor import _core


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

    @property
    def cancelled(self) -> bool:
        """Whether this job's cancel was asked while it ran (`app.cancel`),
        as of its worker's last heartbeat (at most a second ago). A handler
        that sees it should stop: raise `conveyor.JobCancelled`."""
        return self._batch is not None and self._batch.cancel_asked(self._index)

    def envelope(self) -> _core.Envelope | None:
        """The job's envelope as leased: enqueue time, run-at, dedup key,
        trace context and stage stamps (decoded only when asked for)."""
        return None if self._batch is None else self._batch.envelope(self._index)

    def __repr__(self) -> str:
        return (
            f"JobInfo(id={self.id!r}, job_type={self.job_type!r}, "
            f"attempt={self.attempt}, queue={self.queue!r})"
        )


def leased_job(batch: _core.LeasedBatch, index: int) -> JobInfo:
    """The `JobInfo` of job `index` of a leased batch."""
    job_type, _, attempt = batch.jobs[index]
    return JobInfo(
        batch.job_id(index), job_type, attempt + 1, batch.queue, batch=batch, index=index
    )


#: The job running in this thread: `.job` when the runner made its `JobInfo`
#: (every path but the hottest), else the job leased batch `.batch` began
#: last (`LeasedBatch.begun`, recorded by the `begin` the runner calls for
#: every job anyway), whose `JobInfo` is made only if a handler asks
#: (`current_job()`): the hot path sets and builds nothing per job. `.job`,
#: when set, wins: the runner clears it after each job it made one for.
current = threading.local()

#: The job an async handler runs: each runs in a task of its own on the
#: worker's event loop, whose thread many tasks share, so the job travels in
#: the task's context instead (`runner.until_cancelled` sets it).
task_job: ContextVar[JobInfo | None] = ContextVar("conveyor_task_job", default=None)


def current_job() -> JobInfo | None:
    """The job running in this thread (or task), if any."""
    job = task_job.get()
    if job is None:
        job = getattr(current, "job", None)
    batch = getattr(current, "batch", None) if job is None else None
    if batch is not None and batch.begun is not None:
        job = leased_job(batch, batch.begun)
    return job
