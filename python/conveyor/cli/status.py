"""`conveyor status`: the pipeline at a glance, for a tired operator: each
queue's jobs by state and what ended, the relays (live, lag, guards), and a
list of what needs looking at (exit 1 when it is not empty)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conveyor.settings import Settings

#: A relay that has not reported for this long counts as gone.
RELAY_STALE_S = 10.0


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `status`."""
    status = commands.add_parser(
        "status", help="queues, relays and what needs attention, at a glance (exit 1 if any)"
    )
    status.add_argument("queues", nargs="*", help="queues (default: configured and registry)")
    status.set_defaults(run=_status)


def _status(args: argparse.Namespace) -> int:
    import json
    import time

    from conveyor import _core
    from conveyor.lookup import registry_queues
    from conveyor.settings import Settings

    settings = Settings.from_env()
    names = args.queues or sorted({*settings.queues, *registry_queues(settings)})
    attention: list[str] = []

    print("queues")
    header = ("queue", "queued", "scheduled", "leases", "dead", "done", "retried", "cancelled")
    print("  " + "  ".join(f"{h:>10}" for h in header))
    for name in names:
        store = _core.RedisStore(settings.redis_url_for(name))
        depth = store.depth(settings.namespace, name)
        counts = store.counts(settings.namespace, name)
        row = [name] + [str(depth[k]) for k in ("queued", "scheduled", "leases", "dead")]
        row += [str(counts.get(k, 0)) for k in ("done", "retried", "cancelled")]
        print("  " + "  ".join(f"{c:>10}" for c in row))
        if depth["dead"]:
            attention.append(f"{depth['dead']} dead jobs in {name} (conveyor dead list {name})")

    _canaries(settings, names, attention)

    urls = {settings.redis_url} | {url for _, url in settings.queue_redis}
    statuses = [
        json.loads(raw)
        for url in sorted(urls)
        for _, raw in _core.RedisStore(url).relay_statuses(settings.namespace)
    ]
    now = time.time()
    live = [s for s in statuses if now - s["updated_at"] < RELAY_STALE_S]
    print(f"\nrelays: {len(live)} live")
    lag_by_topic: dict[str, int] = {}
    for s in sorted(live, key=lambda s: str(s["id"])):
        lag = sum(p["lag"] for p in s["partitions"])
        for p in s["partitions"]:
            lag_by_topic[p["topic"]] = lag_by_topic.get(p["topic"], 0) + p["lag"]
        guards = []
        if s["memory_guarded"]:
            guards.append("memory guard ON")
            attention.append(f"relay {s['id']}: Redis nearly full, relaying held back")
        if s["depth_guarded"]:
            guards.append(f"depth guard on {s['depth_guarded']} queues")
        controls = s["controls"]
        guards += [f"paused {t}" for t in controls["paused"]]
        guards += [f"throttled {t} to {r:g}/s" for t, r in controls["rates"]]
        print(
            f"  {s['id']}: {len(s['partitions'])} partitions, lag {lag}, "
            f"{s['relayed']} relayed, {s['redis_errors']} Redis errors"
            + (f"; {', '.join(guards)}" if guards else "")
        )
        attention += [f"relay {s['id']}: {why}" for _, _, why in controls.get("ignored", [])]
    for topic, lag in sorted(lag_by_topic.items()):
        print(f"  lag {topic}: {lag}")
    if not live:
        attention.append(
            "no relay has reported in the last 10 s: jobs sent through Kafka wait there "
            "(start conveyor relay)"
        )
    gone = len(statuses) - len(live)
    if gone:
        print(f"  ({gone} relays reported earlier and stopped)")

    print("\nneeds attention" if attention else "\nnothing needs attention")
    for line in attention:
        print(f"  - {line}")
    return 1 if attention else 0


def _canaries(settings: Settings, names: list[str], attention: list[str]) -> None:
    """One line per queue that canaries reach (`conveyor relay --canary-every`)."""
    import time

    from conveyor import _core, canaries
    from conveyor.errors import ConveyorError

    now = time.time()
    for name in names:
        arrived = canaries.read(settings, name)
        if not arrived:
            continue
        try:
            offsets = _core.kafka_end_offsets(
                settings.kafka_bootstrap,
                settings.topic_for(name),
                properties=list(settings.kafka_properties),
            )
            partitions = len(offsets)
        except ConveyorError:
            partitions = max(arrived) + 1  # Kafka unreachable: what arrived
        newest = max(arrived.values(), key=lambda a: a["started_at"])
        slowest = max(a["started_at"] - a["sent_at"] for a in arrived.values())
        print(
            f"\ncanaries {name}: {len(arrived)} of {partitions} partitions, last arrived "
            f"{now - newest['started_at']:.1f}s ago, slowest {slowest * 1000:.0f} ms end to end"
        )
        for partition in canaries.missing(arrived, partitions, now):
            attention.append(
                f"canaries from {name} partition {partition} stopped arriving "
                "(is it relayed? conveyor relays)"
            )
