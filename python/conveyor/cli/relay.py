"""`relay` and `relays`: run relays and see what they report."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from conveyor.cli.stopping import stop_on_signals

if TYPE_CHECKING:
    from conveyor import _core
    from conveyor.canaries import CanarySender
    from conveyor.settings import Settings


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `relay` and `relays`."""
    relay = commands.add_parser("relay", help="relay queues' Kafka topics into Redis")
    relay.add_argument(
        "queues",
        nargs="*",
        help="queues (default: the configured ones and every queue in the job type "
        "registry, followed while it runs)",
    )
    relay.add_argument(
        "--report-every",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="print counters this often (default 5)",
    )
    relay.add_argument(
        "--memory-high",
        type=float,
        default=0.8,
        metavar="FRACTION",
        help="stop writing when Redis uses this much of maxmemory (default 0.8)",
    )
    relay.add_argument(
        "--memory-low",
        type=float,
        default=0.6,
        metavar="FRACTION",
        help="resume below this fraction of maxmemory (default 0.6)",
    )
    relay.add_argument(
        "--depth-high",
        type=int,
        metavar="JOBS",
        help="stop writing into a queue holding this many jobs (default: no limit)",
    )
    relay.add_argument(
        "--metrics-bind", metavar="HOST:PORT", help="serve Prometheus metrics at /metrics"
    )
    relay.add_argument(
        "--canary-every",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="send a canary job into every partition of every relayed queue this often and "
        "export what comes back (conveyor.canaries; default: off)",
    )
    relay.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="log lines as text or one JSON object each, with the job's id and type on "
        "lines about a job (default: CONVEYOR_LOG_FORMAT, else text)",
    )
    relay.add_argument(
        "--depth-low",
        type=int,
        metavar="JOBS",
        help="resume below this many (default: half of --depth-high)",
    )
    relay.set_defaults(run=_relay)

    relays = commands.add_parser("relays", help="running relays: partitions, lag, guards")
    relays.set_defaults(run=_relays)


#: How often a relay started without queue names reads the registry again.
FOLLOW_EVERY_S = 5.0


def _relay(args: argparse.Namespace) -> int:
    import logging
    import sys
    import time

    from conveyor.cli.ignored import IgnoredValues
    from conveyor.logs import configure
    from conveyor.relays import QueueFollower
    from conveyor.settings import Settings

    configure(args.log_format)
    settings = Settings.from_env()
    follower = None if args.queues else QueueFollower(settings)
    queues = args.queues or (follower and follower.queues()) or list(settings.queues)
    relays = _start(settings, queues, args)
    stop = stop_on_signals()
    canaries = [_canaries(settings, queues, args.canary_every)]
    if args.metrics_bind:
        _serve(args.metrics_bind, relays, canaries)
    # Counters of relays replaced when the queues changed, so totals go on.
    carried: dict[str, int] = {}
    last, last_at = 0, time.monotonic()
    followed_at = reported_at = last_at
    ignored = IgnoredValues(logging.getLogger("conveyor.relay"), "a relay control")
    while not stop.wait(min(1.0, args.report_every)):
        now = time.monotonic()
        if (wrong := _health(relays)) is not None:
            # A relay whose loop ended relays nothing: say so and exit, so
            # whatever runs this process restarts it.
            print(f"relay: {wrong}; exiting", file=sys.stderr, flush=True)
            _stop(relays)
            return 1
        if follower is not None and now - followed_at >= FOLLOW_EVERY_S:
            followed_at = now
            wanted = follower.queues()
            if wanted and wanted != sorted(queues):
                added = sorted(set(wanted) - set(queues))
                print(f"relay: new queues in the registry: {', '.join(added)}", flush=True)
                for key, value in _totals(relays).items():
                    carried[key] = carried.get(key, 0) + value
                for relay in relays:
                    relay.stop()
                queues = wanted
                relays[:] = _start(settings, queues, args)
                canaries[0] = _canaries(settings, queues, args.canary_every)
        _send(canaries[0])
        if now - reported_at < args.report_every:
            continue
        reported_at = now
        ignored.report(why for relay in relays for _, _, why in relay.ignored_controls())
        totals = _totals(relays, carried)
        rate = (totals["relayed"] - last) / (now - last_at)
        last, last_at = totals["relayed"], now
        guard = " REDIS NEAR FULL, holding back;" if totals["memory_guarded"] else ""
        owned = sum(len(relay.assignment()) for relay in relays)
        print(
            f"relay:{guard} {totals['relayed']} relayed ({rate:,.0f}/s), {totals['skipped']} "
            f"skipped, {totals['shadowed']} shadowed, {totals['dead_lettered']} dead-lettered, "
            f"{totals['redis_errors']} Redis errors, {totals['held']} held for rate or pause, "
            f"{owned} partitions owned",
            flush=True,
        )
    print("relay stopping: finishing the batch in flight ...", flush=True)
    return 0 if _stop(relays) else 1


def _canaries(settings: Settings, queues: list[str], every_s: float) -> CanarySender | None:
    """The canary sender of `queues`, if canaries are asked for."""
    from conveyor.canaries import CanarySender

    return CanarySender(settings, queues, every_s) if every_s > 0 else None


def _serve(bind: str, relays: list[_core.Relay], canaries: list[CanarySender | None]) -> None:
    """Serves the relays' metrics (and the canaries', if sent) and health;
    both lists are read at each request, as they change."""
    from conveyor.metrics_http import serve_metrics
    from conveyor.relays import merged_metrics

    server = serve_metrics(
        bind,
        lambda: merged_metrics(relays) + (canaries[0].metrics() if canaries[0] else ""),
        lambda: _health(relays),
    )
    host, port = server.server_address[:2]
    print(f"relay: metrics on http://{host!s}:{port}/metrics", flush=True)


def _send(canaries: CanarySender | None) -> None:
    """Sends the canaries if they are due; a failure is logged, and tried
    again at the next interval."""
    import logging

    from conveyor.errors import ConveyorError

    if canaries is not None:
        try:
            canaries.tick()
        except ConveyorError as err:
            logging.getLogger("conveyor.relay").warning("canaries not sent: %s", err)


def _start(settings: Settings, queues: list[str], args: argparse.Namespace) -> list[_core.Relay]:
    """Relays of `queues` (one per Redis deployment), each announced."""
    from conveyor.relays import group_id, start_relays

    started = start_relays(
        settings,
        queues,
        memory_high=args.memory_high,
        memory_low=args.memory_low,
        depth_high=args.depth_high,
        depth_low=args.depth_low if args.depth_low is not None else (args.depth_high or 0) // 2,
    )
    for _, names, _ in started:
        print(
            f"relay: {', '.join(names)} from Kafka {settings.kafka_bootstrap} into Redis "
            f"{'(default)' if len(started) == 1 else 'deployment of ' + names[0]} "
            f"(group {group_id(settings)})",
            flush=True,
        )
    return [relay for _, _, relay in started]


def _stop(relays: list[_core.Relay]) -> bool:
    """Stops every relay; says why any loop had ended. True if none had."""
    import sys

    from conveyor.errors import ConveyorError

    clean = True
    for relay in relays:
        try:
            relay.stop()
        except ConveyorError as err:
            clean = False
            print(f"relay: a relay loop ended: {err}", file=sys.stderr, flush=True)
    return clean


def _health(relays: list[_core.Relay]) -> str | None:
    stopped = sum(not relay.running() for relay in relays)
    return f"{stopped} of {len(relays)} relays stopped" if stopped else None


def _totals(relays: list[_core.Relay], base: dict[str, int] | None = None) -> dict[str, int]:
    totals = dict(base or {})
    for relay in relays:
        for key, value in relay.stats().items():
            totals[key] = totals.get(key, 0) + value
    return totals


def _relays(args: argparse.Namespace) -> int:
    import json
    import time

    from conveyor import _core
    from conveyor.settings import Settings

    settings = Settings.from_env()
    # Each relay reports to the Redis deployment it feeds.
    urls = {settings.redis_url} | {url for _, url in settings.queue_redis}
    statuses = [
        json.loads(raw)
        for url in sorted(urls)
        for _, raw in _core.RedisStore(url).relay_statuses(settings.namespace)
    ]
    now = time.time()
    live = [s for s in statuses if now - s["updated_at"] < 10]
    if not live:
        print("no relay has reported in the last 10 s")
        return 1
    for s in sorted(live, key=lambda s: str(s["id"])):
        guards = "memory guard ON, " if s["memory_guarded"] else ""
        guards += f"depth guard on {s['depth_guarded']} queues, " if s["depth_guarded"] else ""
        print(
            f"relay {s['id']} ({now - s['updated_at']:.1f}s ago): {s['relayed']} relayed, "
            f"{s['shadowed']} shadowed, {s['dead_lettered']} dead-lettered, {guards}"
            f"{s['held']} held for rate or pause, {s['redis_errors']} Redis errors"
        )
        controls = s["controls"]
        for topic, rate in controls["rates"]:
            print(f"  throttled {topic}: {rate:g} jobs/s")
        for name in ("paused", "shadow"):
            for topic in controls[name]:
                print(f"  {name} {topic}")
        # Older relays publish no ignored controls.
        for _, _, why in controls.get("ignored", []):
            print(f"  IGNORED {why}")
        print(
            f"  {'topic':<36} {'partition':>9} {'high':>12} {'relayed to':>12} {'lag':>10} "
            f"{'watermark':>12}"
        )
        for p in s["partitions"]:
            # Older relays publish no watermark.
            mark = p.get("watermark", "")
            print(
                f"  {p['topic']:<36} {p['partition']:>9} {p['high']:>12} "
                f"{p['relayed_to']:>12} {p['lag']:>10} {mark:>12}"
            )
    return 0
