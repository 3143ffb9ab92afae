"""Starting the relays a set of queues needs: one per Redis deployment.

Queues map to Redis deployments by `Settings.queue_redis`; each deployment
gets its own relay (a Rust thread with its own Kafka consumer), all in the
same consumer group, which assigns each topic's partitions only among the
relays subscribed to it. So one `conveyor relay` process can feed several
independent Redis servers, and several such processes share the work.

`QueueFollower` is what `conveyor relay` with no queue named relays: the
configured queues and every queue of the job type registry whose topic
exists, read again while it runs, so a queue that a new worker serves is
relayed without anyone restarting the relay.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from conveyor import _core
from conveyor.errors import ConveyorError, InvalidJobError
from conveyor.settings import Settings

log = logging.getLogger("conveyor.relay")


def group_id(settings: Settings) -> str:
    """The consumer group every relay of a namespace joins."""
    return _core.relay_group(settings.namespace)


def start_relays(
    settings: Settings, queues: Sequence[str], **options: Any
) -> list[tuple[str, list[str], _core.Relay]]:
    """A relay per Redis deployment of `queues`: `(redis_url, queues, relay)`.
    `options` go to each `_core.Relay` (guards, batch sizes)."""
    by_url: dict[str, list[str]] = {}
    for queue in queues:
        _core.check_queue_name(queue)
        by_url.setdefault(settings.redis_url_for(queue), []).append(queue)
    started: list[tuple[str, list[str], _core.Relay]] = []
    try:
        for url, names in by_url.items():
            relay = _core.Relay(
                settings.kafka_bootstrap,
                url,
                [(settings.topic_for(q), q) for q in names],
                namespace=settings.namespace,
                group_id=group_id(settings),
                properties=list(settings.kafka_properties),
                tallies=settings.tallies,
                **options,
            )
            started.append((url, names, relay))
    except BaseException:
        for _, _, relay in started:
            relay.stop()
        raise
    return started


def merged_metrics(relays: Sequence[_core.Relay]) -> str:
    """The relays' Prometheus text as one exposition: each sample gets a
    `relay` label (its index), each metric's HELP and TYPE appear once."""
    if len(relays) == 1:
        return relays[0].metrics()
    seen: set[str] = set()
    out: list[str] = []
    for index, relay in enumerate(relays):
        for line in relay.metrics().splitlines():
            if line.startswith("#"):
                if line not in seen:
                    seen.add(line)
                    out.append(line)
                continue
            name, _, value = line.rpartition(" ")
            label = f'relay="{index}"'
            name = f"{name[:-1]},{label}}}" if name.endswith("}") else f"{name}{{{label}}}"
            out.append(f"{name} {value}")
    return "\n".join(out) + "\n"


class QueueFollower:
    """The queues to relay when none is named; see the module doc."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._store: _core.RedisStore | None = None
        #: Queues (and bad entries) already reported, so each is said once.
        self._told: set[str] = set()

    def queues(self) -> list[str]:
        """The configured queues, plus each registry queue whose topic
        exists, sorted; empty while Redis or Kafka cannot say (keep what
        runs)."""
        s = self._settings
        wanted = set(s.queues)
        try:
            if self._store is None:
                self._store = _core.RedisStore(s.redis_url)
            entries = self._store.read_registry(s.namespace)
            _, _, topics = _core.kafka_cluster_info(
                s.kafka_bootstrap, properties=list(s.kafka_properties)
            )
        except ConveyorError as err:
            self._store = None
            self._tell(f"cannot read the registry or Kafka's topics (keeping the queues): {err}")
            return []
        existing = set(topics)
        for type_name, options in entries:
            try:
                queue = _core.check_registry_entry(type_name, options)
            except InvalidJobError as err:
                self._tell(f"ignoring a registry entry: {err}")
                continue
            if s.topic_for(queue) in existing:
                wanted.add(queue)
            else:
                self._tell(
                    f"queue {queue} (job type {type_name}) has no Kafka topic "
                    f"{s.topic_for(queue)} yet: not relayed until it exists "
                    f"(`conveyor topics create {queue}`, or a worker starting creates it)"
                )
        return sorted(wanted)

    def _tell(self, message: str) -> None:
        if message not in self._told:
            self._told.add(message)
            log.warning("%s", message)
