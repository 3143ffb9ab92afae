"""Canary jobs: one into every partition of every relayed queue at a fixed
interval (`conveyor relay --canary-every 10`), so a partition that stops
flowing is noticed by a missing canary, not assumed to be idle.

A canary is a job of type `conveyor.canary` sent straight to one partition;
it passes the whole pipeline (Kafka, the relay, Redis, a worker). Every
worker runs it with a built-in handler, whatever its app registers: the
handler records the canary's stage times in its queue's `canaries` hash
(one field per partition, `store/canaries.rs`). From them:

- the relay process exports, per queue and partition, the last canary's
  latency per stage (`conveyor_canary_latency_seconds{stage="to_kafka" |
  "in_kafka" | "in_redis"}`), the age of its arrival
  (`conveyor_canary_age_seconds`) and `conveyor_canary_missing` = 1 when
  the last canary to arrive was sent six intervals (at least a minute
  by default) before the newest one sent: the alert signal;
- `conveyor status` lists each queue's canaries and names the missing ones.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from conveyor import _core
from conveyor.envelope import Stage
from conveyor.job_context import current_job
from conveyor.jobs import JobOptions, JobType

if TYPE_CHECKING:
    from conveyor.app import Conveyor
    from conveyor.settings import Settings

#: The job type of canaries (workers run it whatever their app registers).
CANARY_TYPE = "conveyor.canary"

#: A canary this much older than the newest one sent counts as missing
#: (`conveyor status`, which does not know the interval; a sender uses six
#: of its intervals).
MISSING_AFTER_S = 60.0


def canary_job(app: Conveyor) -> JobType[Any, Any]:
    """The built-in handler of canaries, for a worker of `app`."""
    settings = app.settings

    def ran(queue: str, partition: int, sent_at: float) -> None:
        job = current_job()
        envelope = job.envelope() if job is not None else None
        stamps = dict(envelope.stages) if envelope is not None else {}
        record = {
            "sent_at": sent_at,
            "kafka_at": stamps.get(Stage.KAFKA, 0) / 1e6,
            "relayed_at": stamps.get(Stage.RELAYED, 0) / 1e6,
            "started_at": time.time(),
        }
        store = app.store(queue)
        store.record_canary(settings.namespace, queue, partition, json.dumps(record))

    return JobType(app, CANARY_TYPE, ran, JobOptions(max_attempts=1))


def read(settings: Settings, queue: str) -> dict[int, dict[str, float]]:
    """The last canary that arrived from each partition of `queue`."""
    store = _core.RedisStore(settings.redis_url_for(queue))
    return {p: json.loads(raw) for p, raw in store.canaries(settings.namespace, queue)}


def missing(
    arrived: dict[int, dict[str, float]],
    partitions: int,
    newest_sent: float | None,
    after_s: float = MISSING_AFTER_S,
    since: float | None = None,
) -> list[int]:
    """Partitions whose last canary to arrive was sent more than `after_s`
    before the newest one sent (`newest_sent`; None: the freshest arrival of
    any partition). A partition none arrived from counts from `since` (when
    sending began), else from the oldest arrival of the others."""
    sent = [a["sent_at"] for a in arrived.values()]
    reference = newest_sent if newest_sent is not None else max(sent, default=None)
    if reference is None:
        return []
    fallback = since if since is not None else min(sent, default=reference)
    out = []
    for partition in range(partitions):
        got = arrived.get(partition)
        last = got["sent_at"] if got is not None else fallback
        if reference - last > after_s:
            out.append(partition)
    return out


class CanarySender:
    """Sends a canary into each partition of each queue every `every_s`
    seconds (`tick`) and exports what came back (`metrics`)."""

    def __init__(self, settings: Settings, queues: Sequence[str], every_s: float) -> None:
        self._settings = settings
        self._queues = list(queues)
        self._every_s = every_s
        self._producer = _core.KafkaProducer(
            settings.kafka_bootstrap, properties=list(settings.kafka_properties)
        )
        self._partitions: dict[str, int] = {}
        self._first_sent: float | None = None
        self._sent_at: float | None = None
        self._next = 0.0

    def tick(self) -> int:
        """Sends the canaries if they are due; returns how many were sent."""
        now = time.time()
        if now < self._next:
            return 0
        self._next = now + self._every_s
        s = self._settings
        sent = 0
        for queue in self._queues:
            topic = s.topic_for(queue)
            count = len(
                _core.kafka_end_offsets(
                    s.kafka_bootstrap, topic, properties=list(s.kafka_properties)
                )
            )
            self._partitions[queue] = count
            for partition in range(count):
                self._producer.send_call(
                    topic,
                    CANARY_TYPE,
                    [queue, partition, now],
                    max_payload_bytes=s.max_payload_bytes,
                    partition=partition,
                )
                sent += 1
        self._sent_at = now
        if self._first_sent is None:
            self._first_sent = now
        return sent

    def metrics(self) -> str:
        """The canaries' latencies, ages and missing signals (Prometheus)."""
        latency: list[tuple[str, float]] = []
        age: list[tuple[str, float]] = []
        lost: list[tuple[str, float]] = []
        now = time.time()
        for queue in self._queues:
            arrived = read(self._settings, queue)
            gone = set(
                missing(
                    arrived,
                    self._partitions.get(queue, 0),
                    self._sent_at,
                    after_s=6 * self._every_s,
                    since=self._first_sent,
                )
            )
            for partition in range(self._partitions.get(queue, 0)):
                labels = f'queue="{queue}",partition="{partition}"'
                lost.append((labels, float(partition in gone)))
                got = arrived.get(partition)
                if got is None:
                    continue
                age.append((labels, now - got["started_at"]))
                stages = (
                    ("to_kafka", got["sent_at"], got["kafka_at"]),
                    ("in_kafka", got["kafka_at"], got["relayed_at"]),
                    ("in_redis", got["relayed_at"], got["started_at"]),
                )
                for stage, begin, end in stages:
                    if begin and end:
                        latency.append((f'{labels},stage="{stage}"', max(0.0, end - begin)))
        return (
            _core.render_gauge(
                "conveyor_canary_latency_seconds",
                "The last canary's time in each stage, per queue and partition.",
                latency,
            )
            + _core.render_gauge(
                "conveyor_canary_age_seconds", "Since the last canary arrived.", age
            )
            + _core.render_gauge(
                "conveyor_canary_missing",
                f"1 when a partition's canaries stopped arriving ({MISSING_AFTER_S:g} s).",
                lost,
            )
        )
