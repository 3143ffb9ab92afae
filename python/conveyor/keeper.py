"""The keeper: a worker process's Python housekeeping thread. It logs the
lease events of the native keeper (which renews the process's leases and
reaps dead workers' leases without the GIL, `worker/keeper.rs`), and enqueues
the occurrences of periodic jobs as they come due, each exactly once across
all workers."""

from __future__ import annotations

import logging
import threading

from conveyor import _core
from conveyor.app import Conveyor
from conveyor.errors import ConveyorError
from conveyor.payload import encode_call
from conveyor.schedules import Schedule

log = logging.getLogger("conveyor.worker")


class Keeper:
    """Lease events and periodic jobs for one worker process."""

    def __init__(self, app: Conveyor, queues: _core.WorkQueues) -> None:
        self.app = app
        self.queues = queues
        #: Periodic occurrences this process enqueued.
        self.periodic_enqueued = 0

    def run(self, stopped: threading.Event) -> None:
        """Keeps until `stopped` is set."""
        # Look at periodic schedules four times a second.
        schedules = list(self.app.schedules.values())
        stores: dict[str, _core.RedisStore] = {}
        checked_until: dict[str, float] = {}
        while not stopped.wait(0.25):
            self.log_events()
            if schedules:
                try:
                    self.enqueue_due(stores, schedules, checked_until)
                except ConveyorError as err:
                    stores.clear()
                    log.warning("periodic jobs: %s (trying again)", err)

        self.log_events()

    def log_events(self) -> None:
        """Logs what the native keeper saw since the last call."""
        for event in self.queues.take_events():
            log.warning("%s", event)

    def enqueue_due(
        self,
        stores: dict[str, _core.RedisStore],
        schedules: list[Schedule],
        checked_until: dict[str, float],
    ) -> None:
        """Enqueues the occurrences that came due since the last call, by the
        clock of the Redis each schedule's queue lives on (never this host's:
        a worker whose clock is off must neither skip nor repeat occurrences).
        `checked_until` maps a Redis URL to the time checked up to. Each
        occurrence goes in once across all workers (the script claims it)."""
        namespace = self.app.settings.namespace
        limit = self.app.settings.max_payload_bytes
        now: dict[str, float] = {}
        for schedule in schedules:
            url = self.app.settings.redis_url_for(schedule.queue)
            store = stores.get(url) or stores.setdefault(url, _core.RedisStore(url))
            if url not in now:
                now[url] = store.now_ms() / 1000
            after = checked_until.setdefault(url, now[url])
            for occurrence_ms in schedule.occurrences(after, now[url]):
                payload = encode_call(schedule.args, schedule.kwargs, limit)
                envelope = _core.Envelope(
                    schedule.job_type, payload, run_at_us=occurrence_ms * 1000
                ).encode()
                if store.enqueue_occurrence(
                    namespace, schedule.queue, schedule.name, occurrence_ms, envelope
                ):
                    self.periodic_enqueued += 1
        checked_until.update(now)
