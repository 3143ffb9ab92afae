"""Starting the relays a set of queues needs: one per Redis deployment.

Queues map to Redis deployments by `Settings.queue_redis`; each deployment
gets its own relay (a Rust thread with its own Kafka consumer), all in the
same consumer group, which assigns each topic's partitions only among the
relays subscribed to it. So one `conveyor relay` process can feed several
independent Redis servers, and several such processes share the work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conveyor import _core
from conveyor.settings import Settings


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
