"""Finding a job by its id: its state and its timeline.

Workers record each job that ends (done, to be retried, dead) for
`Settings.job_history_s` seconds, in at most `Settings.job_history_max_bytes`
per queue (`store/history.rs`); a job not ended yet is looked for in the leases
(running), the scheduled set and the ready list. The timeline comes from the
envelope's stage stamps: enqueued, written to Kafka (with the partition and
offset the relay read it from), relayed into Redis, and each attempt's start,
failure or end. A job still in Kafka, or that ended longer ago than the
history keeps, is not found: `None`, never a guess.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from conveyor import _core
from conveyor.errors import InvalidJobError
from conveyor.settings import Settings


@dataclass(frozen=True)
class JobInfo:
    """What is known of one job."""

    id: str
    #: `queued`, `scheduled`, `running`, `retrying`, `done` or `dead`.
    state: str
    job_type: str
    queue: str
    #: Attempts started so far (retried and dead jobs count the last one).
    attempts: int
    #: `(stage, seconds since the epoch)`, oldest first: `enqueued`, then the
    #: envelope's stamps (`kafka`, `relayed`, `started`, `failed`, ...), then
    #: `done`/`retrying`/`dead` when it ended (Redis' clock).
    timeline: list[tuple[str, float]] = field(default_factory=list)
    #: Where the relay read it: `(partition, offset)`, None off the Kafka path.
    kafka: tuple[int, int] | None = None
    #: The last error, as the worker recorded it (`{"type", "message", ...}`).
    error: dict[str, object] | None = None


def find(
    settings: Settings, job_id: str, queues: Iterable[str], max_scan: int = 100_000
) -> JobInfo | None:
    """Looks for `job_id` in each of `queues` (in their Redis deployments)."""
    for queue in queues:
        store = _core.RedisStore(settings.redis_url_for(queue))
        found = store.lookup(
            settings.namespace,
            queue,
            job_id,
            history_s=settings.job_history_s,
            history_max_bytes=settings.job_history_max_bytes,
            max_scan=max_scan,
        )
        if found is not None:
            return from_description(json.loads(found))
    return None


def from_description(job: dict[str, Any]) -> JobInfo:
    """A `JobInfo` from the description the core gives (`Found::describe`,
    also the body of the gate's `GET /v1/jobs/{id}`)."""
    kafka = job["kafka"]
    return JobInfo(
        id=job["id"],
        state=job["state"],
        job_type=job["type"],
        queue=job["queue"],
        attempts=job["attempts"],
        timeline=[
            ("enqueued", job["enqueued_at_us"] / 1e6),
            *((str(stage), at / 1e6) for stage, at in job["timeline"]),
        ],
        kafka=None if kafka is None else (kafka["partition"], kafka["offset"]),
        error=job["error"],
    )


def registry_queues(settings: Settings) -> list[str]:
    """The queues named in the job type registry (valid entries only)."""
    store = _core.RedisStore(settings.redis_url)
    queues = set()
    for type_name, options in store.read_registry(settings.namespace):
        try:
            queues.add(_core.check_registry_entry(type_name, options))
        except InvalidJobError:
            continue  # `conveyor controls` and the gate say why
    return sorted(queues)
