"""The keeper: a worker process's housekeeping thread. It extends the leases
the process holds (heartbeats), returns the jobs of expired leases of dead
workers (reaping), and enqueues the occurrences of periodic jobs as they come
due, each exactly once across all workers."""

from __future__ import annotations

import logging
import threading
import time

from conveyor import _core
from conveyor.app import Conveyor
from conveyor.errors import ConveyorError
from conveyor.payload import encode_call
from conveyor.schedules import Schedule

log = logging.getLogger("conveyor.worker")


class Keeper:
    """Heartbeats, reaping and periodic jobs for one worker process."""

    def __init__(self, app: Conveyor, queues: _core.WorkQueues, lease_s: float) -> None:
        self.app = app
        self.queues = queues
        self.lease_s = lease_s
        #: Leases that expired before their jobs ended (they may run twice).
        self.lost_leases = 0
        #: Periodic occurrences this process enqueued.
        self.periodic_enqueued = 0

    def run(self, stopped: threading.Event) -> None:
        """Keeps until `stopped` is set."""
        # Heartbeat well inside the lease; reap at least once a second; look
        # at periodic schedules four times a second.
        beat_every = max(0.05, min(self.lease_s / 3, 1.0))
        schedules = list(self.app.schedules.values())
        tick = min(beat_every, 0.25) if schedules else beat_every
        stores: dict[str, _core.RedisStore] = {}
        checked_until = time.time()
        last_beat = time.monotonic()
        while not stopped.wait(tick):
            if time.monotonic() - last_beat >= beat_every:
                last_beat = time.monotonic()
                self.beat()
            if schedules:
                try:
                    checked_until = self.enqueue_due(stores, schedules, checked_until)
                except ConveyorError as err:
                    stores.clear()
                    log.warning("periodic jobs: %s (trying again)", err)

    def beat(self) -> None:
        """Extends this process's leases, then reaps expired ones."""
        try:
            lost = self.queues.heartbeat()
            if lost:
                self.lost_leases += len(lost)
                log.warning("leases expired before their jobs ended (may run twice): %s", lost)
            self.queues.reap()
        except ConveyorError as err:
            log.warning("keeper: %s", err)

    def enqueue_due(
        self, stores: dict[str, _core.RedisStore], schedules: list[Schedule], after: float
    ) -> float:
        """Enqueues the occurrences due in `(after, now]`; returns now. Each
        occurrence goes in once across all workers (the script claims it)."""
        now = time.time()
        namespace = self.app.settings.namespace
        limit = self.app.settings.max_payload_bytes
        for schedule in schedules:
            for occurrence_ms in schedule.occurrences(after, now):
                payload = encode_call(schedule.args, schedule.kwargs, limit)
                envelope = _core.Envelope(
                    schedule.job_type, payload, run_at_us=occurrence_ms * 1000
                ).encode()
                url = self.app.settings.redis_url_for(schedule.queue)
                store = stores.get(url) or stores.setdefault(url, _core.RedisStore(url))
                if store.enqueue_occurrence(
                    namespace, schedule.queue, schedule.name, occurrence_ms, envelope
                ):
                    self.periodic_enqueued += 1
        return now
