"""The pipeline at a glance, gathered once for `conveyor status` (which
prints it) and the dashboard (which serves it as JSON): each queue's jobs
by state and what ended, the relays that report (lag, guards, controls),
the canaries, and what needs looking at."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from conveyor import _core, canaries, tallies
from conveyor.errors import ConveyorError
from conveyor.settings import Settings
from conveyor.tallies import Reconciliation

#: A relay that has not reported for this long counts as gone.
RELAY_STALE_S = 10.0
#: The counters shown per queue, of those workers keep.
ENDED = ("done", "retried", "cancelled", "dead")


@dataclass
class QueueView:
    """One queue: its jobs by state now and what ended, ever."""

    name: str
    #: `queued`, `scheduled`, `leases`, `dead`.
    depth: dict[str, int]
    #: `done`, `retried`, `cancelled`, `dead` (counted by workers).
    ended: dict[str, int]


@dataclass
class CanaryView:
    """The canaries of one queue (`conveyor relay --canary-every`)."""

    queue: str
    partitions: int
    #: The last canary from each partition: `sent_at`, `kafka_at`,
    #: `relayed_at`, `started_at` (seconds since the epoch).
    arrived: dict[int, dict[str, float]]
    #: Partitions whose canaries stopped arriving.
    missing: list[int]
    #: Since the newest arrival, and the slowest last canary end to end.
    last_arrived_s: float
    slowest_s: float


@dataclass
class Overview:
    """Everything `conveyor status` and the dashboard show."""

    at: float
    queues: list[QueueView]
    #: The relay status reports (`relays.py`) of relays seen in the last
    #: `RELAY_STALE_S` seconds.
    relays: list[dict[str, Any]]
    #: Relays that reported earlier and stopped.
    relays_gone: int
    lag_by_topic: dict[str, int]
    canaries: list[CanaryView]
    #: Counts per hop over the last hour, per queue (`conveyor.tallies`).
    hops: list[Reconciliation] = field(default_factory=list)
    attention: list[str] = field(default_factory=list)


def gather(settings: Settings, names: Sequence[str]) -> Overview:
    """Reads the queues `names`, the relays and canaries from Redis (and
    Kafka for the canaries' partition counts)."""
    now = time.time()
    view = Overview(now, [], [], 0, {}, [])
    for name in names:
        store = _core.RedisStore(settings.redis_url_for(name))
        depth = store.depth(settings.namespace, name)
        counts = store.counts(settings.namespace, name)
        view.queues.append(QueueView(name, dict(depth), {k: counts.get(k, 0) for k in ENDED}))
        if depth["dead"]:
            view.attention.append(
                f"{depth['dead']} dead jobs in {name} (conveyor dead list {name})"
            )
    for name in names:
        canary = _canaries(settings, name, now)
        if canary is not None:
            view.canaries.append(canary)
            view.attention += [
                f"canaries from {name} partition {p} stopped arriving "
                "(is it relayed? conveyor relays)"
                for p in canary.missing
            ]
    _relays(settings, view)
    _hops(settings, names, view, now)
    # In Redis-only mode a relay is needed only once a type is routed to Kafka.
    sent = sum(h.totals.get("sent", 0) for h in view.hops)
    if not view.relays and (sent or not settings.redis_only):
        view.attention.append(
            f"no relay has reported in the last {RELAY_STALE_S:g} s: jobs sent through "
            "Kafka wait there (start conveyor relay)"
        )
    return view


def _hops(settings: Settings, names: Sequence[str], view: Overview, now: float) -> None:
    for name in names:
        topic = settings.topic_for(name)
        # Only a topic some live relay reads can be said to be read to the end.
        lag = view.lag_by_topic.get(topic)
        hops = tallies.reconcile(settings, name, lag, now)
        view.hops.append(hops)
        view.attention += [
            f"{n} jobs of {name} enqueued at {time.strftime('%H:%M', time.gmtime(at))} UTC "
            "were acknowledged by Kafka but never relayed (lost in Kafka? conveyor topics)"
            for at, n in hops.missing
        ]


def _relays(settings: Settings, view: Overview) -> None:
    urls = {settings.redis_url} | {url for _, url in settings.queue_redis}
    statuses = [
        json.loads(raw)
        for url in sorted(urls)
        for _, raw in _core.RedisStore(url).relay_statuses(settings.namespace)
    ]
    view.relays = sorted(
        (s for s in statuses if view.at - s["updated_at"] < RELAY_STALE_S),
        key=lambda s: str(s["id"]),
    )
    view.relays_gone = len(statuses) - len(view.relays)
    for s in view.relays:
        for p in s["partitions"]:
            view.lag_by_topic[p["topic"]] = view.lag_by_topic.get(p["topic"], 0) + p["lag"]
        if s["memory_guarded"]:
            view.attention.append(f"relay {s['id']}: Redis nearly full, relaying held back")
        view.attention += [
            f"relay {s['id']}: {why}" for _, _, why in s["controls"].get("ignored", [])
        ]


def _canaries(settings: Settings, name: str, now: float) -> CanaryView | None:
    arrived = canaries.read(settings, name)
    if not arrived:
        return None
    try:
        offsets = _core.kafka_end_offsets(
            settings.kafka_bootstrap,
            settings.topic_for(name),
            properties=list(settings.kafka_properties),
        )
        partitions = len(offsets)
    except ConveyorError:
        partitions = max(arrived) + 1  # Kafka unreachable: what arrived
    newest = max(a["started_at"] for a in arrived.values())
    return CanaryView(
        queue=name,
        partitions=partitions,
        arrived=arrived,
        missing=canaries.missing(arrived, partitions, now),
        last_arrived_s=now - newest,
        slowest_s=max(a["started_at"] - a["sent_at"] for a in arrived.values()),
    )
