"""Deliveries nobody waits for: a fire-and-forget `enqueue` whose job Kafka
never acknowledged (the delivery timeout passed, the topic vanished) is
logged and counted when it happens and offered to the application's
`on_delivery_failure` callback, never silent. An application that is dropped
or closed, or a process that exits, first delivers what is pending, waiting
as long as the delivery timeout, and reports what it could not deliver."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from conveyor import _core
from conveyor.errors import ConveyorError
from conveyor.tallies import SentTally

log = logging.getLogger("conveyor.enqueue")

#: A job that was not delivered: its id and Kafka's reason.
DeliveryFailure = tuple[str, str]
#: Called (on a watcher thread) with each group of failures as they happen.
OnDeliveryFailure = Callable[[list[DeliveryFailure]], None]

#: How often acknowledged jobs are added to the tallies (s).
TALLY_EVERY_S = 1.0
#: How many failed ids one log line lists before it only counts.
_LOGGED_IDS = 10


class DeliveryWatcher:
    """A daemon thread that takes a producer's unobserved failures as they
    happen, and adds its acknowledged jobs to the queues' tallies
    (`conveyor.tallies`) about once a second. It holds the producer, never
    the application, so that dropping the application can end it."""

    def __init__(
        self,
        producer: _core.KafkaProducer,
        on_failure: OnDeliveryFailure | None,
        tally: SentTally | None = None,
    ) -> None:
        self._producer = producer
        self._on_failure = on_failure
        self._tally = tally
        if tally is not None:
            producer.take_sent()  # the producer counts from its first take on
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="conveyor-deliveries", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        tallied = time.monotonic()
        while not self._stopped.is_set():
            failures = self._producer.take_failures(0.5)
            if failures:
                self.report(failures)
            if time.monotonic() - tallied >= TALLY_EVERY_S:
                self.add_tally()
                tallied = time.monotonic()

    def add_tally(self) -> None:
        """Adds what Kafka acknowledged since the last call to the tallies."""
        if self._tally is not None:
            try:
                self._tally.add(self._producer.take_sent())
            except Exception:
                # Counting must never stop failures from being reported.
                log.exception("could not add to the tallies")

    def report(self, failures: list[DeliveryFailure]) -> None:
        """Logs `failures` and hands them to the callback."""
        listed = ", ".join(f"{job_id} ({reason})" for job_id, reason in failures[:_LOGGED_IDS])
        more = f" and {len(failures) - _LOGGED_IDS} more" if len(failures) > _LOGGED_IDS else ""
        log.error("%d job(s) were not written to Kafka: %s%s", len(failures), listed, more)
        if self._on_failure is not None:
            try:
                self._on_failure(failures)
            except Exception:
                log.exception("the on_delivery_failure callback raised")

    def stop(self) -> None:
        """Ends the thread after reporting what is left."""
        self._stopped.set()
        # The app may be collected on this very thread (its callback held the
        # last reference), which then runs this: it cannot wait for itself.
        if threading.current_thread() is not self._thread:
            self._thread.join(2.0)
        left = self._producer.take_failures(0.0)
        if left:
            self.report(left)
        self.add_tally()


def let_go(producer: _core.KafkaProducer, watcher: DeliveryWatcher, timeout_s: float) -> None:
    """Delivers what `producer` still holds (waiting up to `timeout_s`),
    reports what could not be delivered, and ends its watcher. Runs when an
    application is closed, dropped, or at exit."""
    try:
        producer.flush(timeout_s)
    except ConveyorError as err:
        log.error("jobs not delivered when the application let go of Kafka: %s", err)
    finally:
        watcher.stop()
