"""Per job type: through Kafka, straight into Redis, or both at once.

The migration the design follows moved job types from a direct-to-Redis queue
to Kafka a step at a time: first double writes (every job to Redis directly
and through Kafka, with the relay in shadow mode dropping what it reads, so
the Kafka path is exercised and counted without running anything twice),
then a growing percentage of jobs through Kafka only, then all of them.

`Route(kafka_percent=25)` sends about a quarter of a type's jobs through
Kafka and the rest straight into Redis with the relay's own `admit` script
(so delayed and unique jobs behave the same either way). `Route(double_write=
True)` writes every job both ways with one id; run the topic's relay with
`conveyor shadow QUEUE on`, or each job would run twice. Types without a route
go through Kafka only.

Routes come from code (`Conveyor.set_route`) or `Settings.routes`, and can be
changed while services run: `conveyor route TYPE --kafka-percent 25` writes
the type's route into Redis (`cv:[<ns>:]routes`), and every producer re-reads
that table about once a second (`Settings.route_refresh_s`) on a thread of its
own, so an enqueue never waits for Redis. A route set at run time overrides
the configured one until `conveyor route TYPE --clear`. While Redis cannot be
read, producers keep the table they last read; a new process routes by its
configuration until its first read (a few milliseconds): both paths deliver
the job, so that moment costs nothing but the split's precision.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from conveyor import _core
from conveyor.errors import ConveyorError, InvalidJobError

log = logging.getLogger("conveyor.routing")


@dataclass(frozen=True)
class Route:
    """Which path a job type's jobs take; see the module doc."""

    #: Share of jobs (0 to 100) sent through Kafka; the rest go direct to Redis.
    kafka_percent: float = 100.0
    #: Every job both ways (direct to Redis and through Kafka, shadowed).
    double_write: bool = False

    def __post_init__(self) -> None:
        _core.check_kafka_percent(self.kafka_percent)

    def split(self, count: int, rng: random.Random | None = None) -> list[bool]:
        """For `count` jobs, whether each goes through Kafka (independently,
        with probability `kafka_percent`); double writes go both ways anyway."""
        if self.kafka_percent >= 100.0:
            return [True] * count
        if self.kafka_percent <= 0.0:
            return [False] * count
        draw = (rng or random).random
        share = self.kafka_percent / 100.0
        return [draw() < share for _ in range(count)]


#: Every job straight into Redis: types without a route in Redis-only mode.
DIRECT = Route(kafka_percent=0.0)


class RoutedHandle:
    """What an enqueue returns when some or all jobs went direct to Redis:
    those are written before it returns; the Kafka part is awaited as usual."""

    def __init__(
        self, ids: list[str], kafka: _core.DeliveryHandle | None, via_kafka: list[bool]
    ) -> None:
        self._ids = ids
        self._kafka = kafka
        self._via_kafka = via_kafka

    @property
    def ids(self) -> list[str]:
        """The jobs' ids, in the order they were given."""
        return list(self._ids)

    @property
    def id(self) -> str:
        """The first (usually only) job's id."""
        return self._ids[0]

    def done(self) -> bool:
        """Whether every job has been acknowledged (or has failed)."""
        return self._kafka is None or self._kafka.done()

    def wait(self, timeout_s: float | None = None) -> list[tuple[int, int]]:
        """`(partition, offset)` per job sent through Kafka (double writes
        too), `(-1, -1)` per job that went only straight into Redis."""
        kafka = iter(self._kafka.wait(timeout_s) if self._kafka is not None else [])
        return [next(kafka) if k else (-1, -1) for k in self._via_kafka]

    def __len__(self) -> int:
        return len(self._ids)


class RouteTable:
    """The routes in force in one application: configured ones overridden by
    those set at run time. `current` is replaced whole, never changed in
    place, so enqueues read it without a lock."""

    def __init__(self, configured: Mapping[str, Route]) -> None:
        self._configured = dict(configured)
        self._runtime: dict[str, Route] = {}
        #: Job type -> route in force; types absent go through Kafka only.
        self.current: dict[str, Route] = dict(configured)
        self._lock = threading.Lock()
        #: Whether a watcher thread runs in this process (reset after a fork).
        self.watching = False
        #: Bad run-time entries already logged.
        self._reported: set[tuple[str, str]] = set()

    def configure(self, type_name: str, route: Route | None) -> None:
        """Set (or with None remove) a type's configured route."""
        with self._lock:
            if route is None:
                self._configured.pop(type_name, None)
            else:
                self._configured[type_name] = route
            self.current = {**self._configured, **self._runtime}

    def apply(self, entries: list[tuple[str, str]]) -> None:
        """Replace the run-time routes with `entries` as read from Redis
        (`(job type, JSON)`); an entry `_core.check_route` refuses is
        skipped, with a logged reason."""
        runtime = {}
        for type_name, text in entries:
            try:
                percent, double_write = _core.check_route(type_name, text)
            except InvalidJobError as err:
                # Said once per bad value, not at every re-read.
                if (type_name, text) not in self._reported:
                    self._reported.add((type_name, text))
                    log.warning("ignoring a run-time route: %s", err)
            else:
                runtime[type_name] = Route(kafka_percent=percent, double_write=double_write)
        with self._lock:
            self._runtime = runtime
            self.current = {**self._configured, **runtime}

    def forget_watcher(self) -> None:
        """In a forked child: the parent's watcher thread does not run here."""
        self.watching = False
        self._lock = threading.Lock()

    def watch(self, read: Callable[[], list[tuple[str, str]]], every_s: float) -> None:
        """Start (once per process) a daemon thread applying `read()` every
        `every_s` seconds; it ends when the table is garbage collected."""
        with self._lock:
            if self.watching:
                return
            self.watching = True
        table = weakref.ref(self)
        threading.Thread(
            target=_watch, args=(table, read, every_s), name="conveyor-routes", daemon=True
        ).start()


def routes_reader(url: str, namespace: str) -> Callable[[], list[tuple[str, str]]]:
    """Reads the run-time routes from the Redis at `url`, connecting on
    first use and again after a failure. It holds no app, so the watcher
    thread using it ends with the app."""
    stores: list[_core.RedisStore] = []

    def read() -> list[tuple[str, str]]:
        if not stores:
            stores.append(_core.RedisStore(url))
        try:
            return stores[0].routes(namespace)
        except ConveyorError:
            stores.clear()
            raise

    return read


def _watch(
    table: weakref.ref[RouteTable], read: Callable[[], list[tuple[str, str]]], every_s: float
) -> None:
    failing = False
    while True:
        try:
            entries = read()
        except ConveyorError as err:
            if not failing:
                log.warning("cannot read the run-time routes (keeping the last read): %s", err)
            failing = True
        else:
            failing = False
            live = table()
            if live is None:
                return
            live.apply(entries)
            del live
        if table() is None:
            return
        time.sleep(every_s)
