"""Cancelling a job by its id (`app.cancel`, `conveyor cancel`).

A cancel is a mark in the job's queue (`cancel-1.lua`), kept until the job
meets it (at most 7 days, at most 100,000 waiting per queue):

- a job still in Kafka, queued or scheduled never starts: the worker that
  leases it settles it `cancelled` instead (`fetch-6.lua` names it);
- a running job is told at its worker's next heartbeat (within a second):
  `current_job().cancelled` turns true, and the handler decides how to stop
  (raise `conveyor.JobCancelled`, or finish); an async handler is cancelled
  (`CancelledError` inside it);
- a job that already ended is not changed.

The outcome shows in the job's timeline (`cancelled`, `conveyor job ID`), is
counted per queue (`cancelled`), and a `store_result` job's waiters get
`JobCancelled`.
"""

from __future__ import annotations

from collections.abc import Iterable

from conveyor import _core
from conveyor.lookup import find
from conveyor.settings import Settings

#: States in which a job has ended: a cancel changes nothing.
ENDED = frozenset({"done", "dead", "cancelled"})


def cancel(settings: Settings, job_id: str, queues: Iterable[str]) -> tuple[str, list[str]]:
    """Asks for job `job_id` to be cancelled. Returns its state when asked
    (`done`, `dead` or `cancelled`: nothing to do; otherwise the cancel is
    set) and the queues marked: the job's, or each of `queues` when it was
    not found (it may still be in Kafka)."""
    candidates = sorted(set(queues))
    info = find(settings, job_id, candidates)
    if info is not None and info.state in ENDED:
        return info.state, []
    marked = [info.queue] if info is not None else candidates
    for queue in marked:
        _core.RedisStore(settings.redis_url_for(queue)).cancel(settings.namespace, queue, job_id)
    return ("not found" if info is None else info.state), marked
