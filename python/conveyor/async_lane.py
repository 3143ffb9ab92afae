"""The worker's async lane: async handlers run concurrently on one event loop,
up to a per-process limit of their own, instead of each holding a worker
thread while it awaits.

A worker thread runs a batch's jobs in order: a sync job itself, an async job
only started on the loop (`Runner.start_async`), after taking one of the
lane's `limit` slots (`acquire`; with none free, the thread waits for one).
Then it fetches again. Sync jobs never wait on the limit. A batch with async
jobs is settled by the lane's settle thread once the last of them ends, in
one call like any other batch; its lease is renewed meanwhile like any other
(`LeasedBatch.begin` for each job started).
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable

from conveyor import _core
from conveyor.runner import BatchRun, Runner, Started, error_record

log = logging.getLogger("conveyor.worker")


class _Waiting:
    """A batch whose async jobs are still running."""

    __slots__ = ("batch", "left", "ran")

    def __init__(self, batch: _core.LeasedBatch, ran: BatchRun, left: int) -> None:
        self.batch = batch
        self.ran = ran
        self.left = left


#: One async job that ended: its batch, and what `Runner.finish_async` needs.
_Ended = tuple[_Waiting, Started]


class AsyncLane:
    """At most `limit` async jobs in flight on `runner`'s loop; batches
    holding them are settled with `settle` on the lane's own thread."""

    def __init__(
        self,
        runner: Runner,
        limit: int,
        settle: Callable[[_core.LeasedBatch, BatchRun], object],
    ) -> None:
        self.runner = runner
        self.limit = limit
        self._settle = settle
        self._room = threading.Condition()
        #: Async jobs holding a slot: started, or about to be.
        self.running = 0
        self._ended: queue.Queue[_Ended | None] = queue.Queue()
        self._thread = threading.Thread(target=self._settle_loop, name="conveyor-async-settle")
        self._thread.daemon = True
        self._thread.start()

    def acquire(self, stopping: threading.Event) -> bool:
        """Takes a slot for an async job, waiting while all are taken;
        False (nothing taken) once `stopping` is set."""
        with self._room:
            while self.running >= self.limit:
                if stopping.is_set():
                    return False
                self._room.wait(0.25)
            self.running += 1
            return True

    def release(self) -> None:
        """Gives back a slot (its job ended, or did not start)."""
        with self._room:
            self.running -= 1
            self._room.notify_all()

    def hand_over(self, batch: _core.LeasedBatch, ran: BatchRun) -> None:
        """Takes a batch whose `ran.started` async jobs run on the loop: it
        is settled once they all end."""
        waiting = _Waiting(batch, ran, len(ran.started))
        for item in ran.started:
            item[3].add_done_callback(functools.partial(self._on_done, waiting, item))

    def _on_done(self, waiting: _Waiting, item: Started, _done: object) -> None:
        # On the loop's thread: hand the rest to the settle thread.
        self._ended.put((waiting, item))

    def wait_idle(self, timeout_s: float) -> bool:
        """Waits until no async job runs (at most `timeout_s`); whether none does."""
        with self._room:
            return self._room.wait_for(lambda: self.running == 0, timeout_s)

    def stop(self) -> None:
        """Ends the settle thread once it has settled what already ended."""
        self._ended.put(None)
        self._thread.join(5.0)

    def _settle_loop(self) -> None:
        while (ended := self._ended.get()) is not None:
            waiting, (i, jt, info, done) = ended
            try:
                self.runner.finish_async(waiting.ran, i, jt, info, done)
            except BaseException as err:
                # Not the handler's error (the runner records those): the
                # job still ends, as a failed attempt, so the batch settles.
                log.exception("fault while finishing an async job")
                ran = waiting.ran
                ran.ends[i] = ran.ends[i] or time.time()
                ran.failures.setdefault(i, (error_record(err, info.attempt), None))
            waiting.left -= 1
            if waiting.left == 0:
                try:
                    self._settle(waiting.batch, waiting.ran)
                except BaseException:
                    log.exception("fault while settling an async batch")
            self.release()
