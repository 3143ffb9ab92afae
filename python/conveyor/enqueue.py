"""What an enqueue returns: the job ids at once, the broker's word on request."""

from __future__ import annotations

from conveyor._core import DeliveryHandle


class Enqueued:
    """Jobs handed to Kafka.

    The ids are known at once. `wait()` blocks until the broker acknowledged
    every job (or raises `DeliveryError` naming those it did not take); a failure
    nobody waits for is raised by the next `Conveyor.flush()` instead.
    """

    __slots__ = ("_handle",)

    def __init__(self, handle: DeliveryHandle) -> None:
        self._handle = handle

    @property
    def ids(self) -> list[str]:
        """The jobs' ids, in the order they were given."""
        return self._handle.ids

    @property
    def id(self) -> str:
        """The id of the first (for a single enqueue, the only) job."""
        return self._handle.ids[0]

    def done(self) -> bool:
        """Whether every job was acknowledged or failed."""
        return self._handle.done()

    def wait(self, timeout_s: float | None = None) -> list[tuple[int, int]]:
        """Block until acknowledged; returns `(partition, offset)` per job."""
        return self._handle.wait(timeout_s)

    def __len__(self) -> int:
        return len(self._handle)

    def __repr__(self) -> str:
        state = "acknowledged or failed" if self.done() else "in flight"
        return f"<Enqueued {len(self)} job(s), {state}>"
