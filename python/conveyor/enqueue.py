"""What an enqueue returns: the job ids at once, the broker's word on request."""

from __future__ import annotations

from typing import Protocol


class Enqueued(Protocol):
    """Jobs handed over for delivery: `.id`/`.ids` at once, `.wait()` for the
    acknowledgement (Kafka's, or Redis' on the direct path; raises
    `DeliveryError` for jobs that were not taken), `.done()` without blocking.

    Through Kafka this is the native `DeliveryHandle`; routed jobs (some or all
    direct to Redis) get a `RoutedHandle` with the same interface.
    """

    @property
    def ids(self) -> list[str]:
        """The jobs' ids, in the order they were given."""
        ...

    @property
    def id(self) -> str:
        """The first (usually only) job's id."""
        ...

    def done(self) -> bool:
        """Whether every job has been acknowledged (or has failed)."""
        ...

    def wait(self, timeout_s: float | None = None) -> list[tuple[int, int]]:
        """Blocks until every job is acknowledged; `(partition, offset)` per
        Kafka job, `(-1, -1)` for a job written directly to Redis."""
        ...

    def __len__(self) -> int: ...


__all__ = ["Enqueued"]
