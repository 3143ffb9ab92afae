"""`throttle`, `pause`, `resume`, `shadow` and `route`: steer relays and
producers at run time, through Redis."""

from __future__ import annotations

import argparse


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds the relay controls and `route`."""
    throttle = commands.add_parser("throttle", help="limit a queue's relay rate (jobs/s, or off)")
    throttle.add_argument("queue")
    throttle.add_argument("rate", help="jobs per second across all relays, or 'off'")
    throttle.set_defaults(run=_control)
    for name, text in (
        ("pause", "stop relaying a queue into Redis (the backlog waits in Kafka)"),
        ("resume", "resume relaying a paused queue"),
    ):
        control = commands.add_parser(name, help=text)
        control.add_argument("queue")
        control.set_defaults(run=_control)
    shadow = commands.add_parser(
        "shadow", help="relay a queue in shadow mode: read, count, drop (for double writes)"
    )
    shadow.add_argument("queue")
    shadow.add_argument("state", choices=["on", "off"])
    shadow.set_defaults(run=_control)

    route = commands.add_parser(
        "route",
        help="route a job type through Kafka, direct to Redis or both, at run time "
        "(no type: list the routes set)",
    )
    route.add_argument("type", nargs="?", help="the job type name")
    route.add_argument(
        "--kafka-percent",
        type=float,
        metavar="P",
        help="share of jobs (0 to 100) through Kafka; the rest go direct to Redis",
    )
    route.add_argument(
        "--double-write", action="store_true", help="every job both ways (shadow the relay)"
    )
    route.add_argument(
        "--clear", action="store_true", help="drop the run-time route (configuration applies)"
    )
    route.set_defaults(run=_route)


def _control(args: argparse.Namespace) -> int:
    from conveyor import _core
    from conveyor.errors import ConfigError
    from conveyor.settings import Settings

    settings = Settings.from_env()
    _core.check_queue_name(args.queue)
    topic = settings.topic_for(args.queue)
    # Relays read their controls from the Redis they write the queue into.
    store = _core.RedisStore(settings.redis_url_for(args.queue))
    if args.command == "throttle":
        off = args.rate in ("off", "0")
        if not off:
            try:
                rate = float(args.rate)
            except ValueError:
                rate = -1.0
            if not rate > 0:
                raise ConfigError(
                    f"rate must be a positive number of jobs/s or 'off', not {args.rate!r}"
                )
        store.set_relay_control(settings.namespace, "rate", topic, None if off else args.rate)
        print(
            f"{args.queue}: relay rate {'unlimited' if off else args.rate + ' jobs/s'} "
            "(relays apply it within a second)"
        )
    elif args.command == "shadow":
        on = args.state == "on"
        store.set_relay_control(settings.namespace, "shadow", topic, "1" if on else None)
        state = "on: jobs are read, counted and dropped" if on else "off"
        print(f"{args.queue}: relay shadow mode {state} (relays apply it within a second)")
    else:
        paused = args.command == "pause"
        store.set_relay_control(settings.namespace, "paused", topic, "1" if paused else None)
        state = "paused: the backlog waits in Kafka" if paused else "resumed"
        print(f"{args.queue}: relaying {state}")
    return 0


def _route(args: argparse.Namespace) -> int:
    import json

    from conveyor import _core
    from conveyor.errors import ConfigError
    from conveyor.settings import Settings

    settings = Settings.from_env()
    # Producers read the routes from the main Redis, next to the registry.
    store = _core.RedisStore(settings.redis_url)
    if args.type is None:
        if args.kafka_percent is not None or args.double_write or args.clear:
            raise ConfigError("name the job type to route")
        routes = sorted(store.routes(settings.namespace))
        if not routes:
            print("no routes set at run time: every producer routes by its configuration")
        for type_name, text in routes:
            route = json.loads(text)
            both = ", double writes (shadow its queue's relay)" if route["double_write"] else ""
            print(f"{type_name}: {route['kafka_percent']:g}% through Kafka{both}")
        return 0
    if args.clear:
        if args.kafka_percent is not None or args.double_write:
            raise ConfigError("--clear takes no other option")
        store.set_route(settings.namespace, args.type, None)
        print(f"{args.type}: run-time route cleared; producers route by their configuration")
        return 0
    if args.kafka_percent is None and not args.double_write:
        raise ConfigError("give --kafka-percent, --double-write or --clear")
    percent = 100.0 if args.kafka_percent is None else args.kafka_percent
    store.set_route(settings.namespace, args.type, (percent, args.double_write))
    if args.double_write:
        print(
            f"{args.type}: every job both direct to Redis and through Kafka; run "
            "`conveyor shadow QUEUE on` for its queue, or its jobs run twice"
        )
    else:
        print(f"{args.type}: {percent:g}% of jobs through Kafka, the rest direct to Redis")
    print("producers apply it within about a second (Settings.route_refresh_s)")
    return 0
