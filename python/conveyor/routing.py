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
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from conveyor import _core
from conveyor.errors import InvalidJobError


@dataclass(frozen=True)
class Route:
    """Which path a job type's jobs take; see the module doc."""

    #: Share of jobs (0 to 100) sent through Kafka; the rest go direct to Redis.
    kafka_percent: float = 100.0
    #: Every job both ways (direct to Redis and through Kafka, shadowed).
    double_write: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.kafka_percent <= 100.0:
            raise InvalidJobError(f"kafka_percent must be 0 to 100, not {self.kafka_percent}")

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
