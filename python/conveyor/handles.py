"""What `JobType.enqueue` returns: the delivery handle (`Enqueued`) of the
jobs sent, plus what can be asked of them once they are on their way: the
result (for job types that keep one) and, by id, where they are."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConfigError
from conveyor.results import Read, wait, wait_async

if TYPE_CHECKING:
    from conveyor.app import Conveyor
    from conveyor.enqueue import Enqueued
    from conveyor.jobs import JobType

#: Longest pause between two looks at an async waiter's acknowledgements.
_ACK_POLL_MAX_S = 0.02


class JobHandle:
    """Jobs of one type handed over for delivery (see `Enqueued` for `id`,
    `ids`, `wait` and `done`), and their results."""

    __slots__ = ("_job_type", "_sent")

    def __init__(self, sent: Enqueued, job_type: JobType[Any, Any]) -> None:
        self._sent = sent
        self._job_type = job_type

    @property
    def ids(self) -> list[str]:
        """The jobs' ids, in the order they were given."""
        return self._sent.ids

    @property
    def id(self) -> str:
        """The first (usually only) job's id."""
        return self._sent.id

    def done(self) -> bool:
        """Whether every job has been acknowledged (or has failed)."""
        return self._sent.done()

    def wait(self, timeout_s: float | None = None) -> list[tuple[int, int]]:
        """Blocks until every job is acknowledged (see `Enqueued.wait`)."""
        return self._sent.wait(timeout_s)

    async def wait_async(self, timeout_s: float | None = None) -> list[tuple[int, int]]:
        """`wait` for async code: awaits the acknowledgements without
        blocking the event loop or holding a thread."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        pause = 0.0005
        while not self._sent.done():
            if deadline is not None and time.monotonic() >= deadline:
                break  # `wait` below raises the timeout as the sync call does
            await asyncio.sleep(pause)
            pause = min(pause * 2, _ACK_POLL_MAX_S)
        return self._sent.wait(0.0 if deadline is not None else None)

    def __len__(self) -> int:
        return len(self._sent)

    def __repr__(self) -> str:
        more = "..." if len(self) > 3 else ""
        return f"JobHandle({self._job_type.name!r}, ids={self.ids[:3]}{more})"

    def result(self, timeout_s: float | None = None) -> Any:
        """The first job's result once it ended, waiting at most `timeout_s`
        seconds (None: no limit): what its handler returned, or `JobFailed`
        if it was given up on; `ConveyorTimeout` when time is up."""
        return wait(self.id, self._reader(self.id), timeout_s)

    async def result_async(self, timeout_s: float | None = None) -> Any:
        """`result` for async code: awaits without blocking the event loop."""
        return await wait_async(self.id, self._reader(self.id), timeout_s)

    def results(self, timeout_s: float | None = None) -> list[Any]:
        """Every job's result in order (each waits at most `timeout_s`)."""
        return [wait(i, self._reader(i), timeout_s) for i in self.ids]

    def cancel(self) -> list[str]:
        """Asks for every job of the handle to be cancelled (`app.cancel`);
        returns each one's state when asked."""
        jt = self._job_type
        return [jt.app.cancel(i, jt.options.queue) for i in self.ids]

    def _reader(self, job_id: str) -> Read:
        jt = self._job_type
        if not jt.options.store_result:
            raise ConfigError(
                f"job type {jt.name!r} keeps no results: register it with store_result=True"
            )
        return result_reader(jt.app, jt.options.queue, job_id)


def app_result_reader(app: Conveyor, job_id: str) -> Read:
    """Reads job `job_id`'s kept result in whichever queue of `app`'s job
    types that keep results holds it."""
    queues = sorted({j.options.queue for j in app.registry.values() if j.options.store_result})
    if not queues:
        raise ConfigError("no job type of this app keeps results (store_result=True)")
    readers = [result_reader(app, queue, job_id) for queue in queues]

    def read() -> bytes | None:
        return next((raw for r in readers if (raw := r()) is not None), None)

    return read


def result_reader(app: Conveyor, queue: str, job_id: str) -> Read:
    """Reads job `job_id`'s kept result in `queue`."""
    namespace = app.settings.namespace

    def read() -> bytes | None:
        return app.store(queue).result(namespace, queue, job_id)

    return read
