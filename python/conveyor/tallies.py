"""Counts compared hop by hop, so that a missing job is noticed, not assumed.

Every hop counts the jobs it passed on by the minute their id was made
(`store/tally.rs`): producers count what Kafka acknowledged (`sent`, added
here from the Rust producer about once a second and when the application
lets go of Kafka), the relay what it admitted from Kafka (`relayed`), the
direct path what it wrote (`direct`), workers what ended (`ended`: done,
dead or cancelled). The last three are counted by the scripts that make
the change, so they are exact.

`reconcile` compares them: a minute that has ended, whose topic the relays
have read to the end, and that has fewer jobs relayed than sent lost jobs
between the producers and Redis (a broker that lost acknowledged records, a
topic deleted before it was relayed). `sent` counts only what a producer
lived to add, so a producer killed within a second of its last
acknowledgement can hide a loss, never invent one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from conveyor import _core
from conveyor.errors import ConveyorError
from conveyor.settings import Settings

log = logging.getLogger("conveyor.tallies")

#: The hops, in pipeline order.
HOPS = ("sent", "relayed", "direct", "ended")
#: How long after a minute ends before its counts are compared (s): a
#: producer adds its acknowledgements about once a second, a relay may still
#: hold the minute's last batch.
SETTLE_S = 60.0
#: How many minutes `reconcile` reads.
WINDOW_MINUTES = 60


class SentTally:
    """Adds a producer's acknowledged jobs to their queues' tallies."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._base = settings.topic_for("")
        self._stores: dict[str, _core.RedisStore] = {}
        #: Counts not yet added (Redis was away): (queue, minute) -> jobs.
        self._pending: dict[tuple[str, int], int] = defaultdict(int)
        self._lock = threading.Lock()

    def add(self, taken: list[tuple[str, int, int]]) -> None:
        """Adds `(topic, minute, jobs)` from `KafkaProducer.take_sent`; what
        Redis refuses is kept for the next call."""
        with self._lock:
            self._add(taken)

    def _add(self, taken: list[tuple[str, int, int]]) -> None:
        for topic, minute, n in taken:
            if topic.startswith(self._base):
                self._pending[(topic[len(self._base) :], minute)] += n
        by_queue: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for (queue, minute), n in self._pending.items():
            by_queue[queue].append((minute, n))
        for queue, counts in by_queue.items():
            try:
                self._store(queue).add_tally(self._settings.namespace, queue, "sent", counts)
            except ConveyorError as err:
                log.warning("could not add sent counts for %s (kept for later): %s", queue, err)
                continue
            for minute, _ in counts:
                del self._pending[(queue, minute)]

    def _store(self, queue: str) -> _core.RedisStore:
        url = self._settings.redis_url_for(queue)
        if url not in self._stores:
            self._stores[url] = _core.RedisStore(url)
        return self._stores[url]


@dataclass
class Reconciliation:
    """One queue's counts over the last `WINDOW_MINUTES` minutes."""

    queue: str
    #: Jobs per hop, summed over the window.
    totals: dict[str, int] = field(default_factory=dict)
    #: `(minute start as Unix seconds, jobs)`: minutes compared that have
    #: fewer relayed than sent.
    missing: list[tuple[int, int]] = field(default_factory=list)
    #: Why minutes were not compared, if some were not.
    unchecked: str = ""


def reconcile(
    settings: Settings, queue: str, lag: int | None, now: float | None = None
) -> Reconciliation:
    """Compares `queue`'s hops minute by minute. `lag` is what the live
    relays have left to read of its topic (None: no relay reports it)."""
    now = time.time() if now is None else now
    last = int(now // 60)
    store = _core.RedisStore(settings.redis_url_for(queue))
    minutes = store.tallies(settings.namespace, queue, last - WINDOW_MINUTES + 1, last)
    view = Reconciliation(queue, dict.fromkeys(HOPS, 0))
    for _, counts in minutes:
        for hop, n in counts:
            view.totals[hop] = view.totals.get(hop, 0) + n
    if not view.totals.get("sent"):
        pass  # nothing went through Kafka: nothing to compare (Redis-only mode)
    elif lag is None:
        view.unchecked = "no live relay reads its topic"
    elif lag > 0:
        view.unchecked = f"the relays have {lag} records left to read"
    else:
        view.missing = _missing(minutes, now)
    return view


def _missing(minutes: list[tuple[int, list[tuple[str, int]]]], now: float) -> list[tuple[int, int]]:
    missing = []
    for minute, counts in minutes:
        if (minute + 1) * 60 + SETTLE_S > now:
            continue
        hops: Mapping[str, int] = dict(counts)
        short = hops.get("sent", 0) - hops.get("relayed", 0)
        if short > 0:
            missing.append((minute * 60, short))
    return missing
