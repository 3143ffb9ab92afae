"""`throttle`, `pause`, `resume`, `shadow` and `route`: steer relays and
producers at run time, through Redis; `controls`: what is set, what was
changed (who, from where, when, old and new value) and what is ignored.

Every change goes through one script (`control-2.lua`) that also records it
in the control hash's history, a list of the last 1,000 changes. Who and
from where are what this command tells: the operating system's user, the
Redis account of the URL, and the host name. An account that can write the
control hashes directly can also write their history, so the history is for
operators retracing a change, not proof against Redis' own admins; the
`admin` ACL role (`conveyor acl`) is the one that may write them at all."""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from conveyor import _core
    from conveyor.settings import Settings


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

    controls = commands.add_parser(
        "controls",
        help="relay controls and routes in force, values ignored as invalid, "
        "and (--history) who changed what",
    )
    controls.add_argument(
        "--history", action="store_true", help="the recorded changes, newest first"
    )
    controls.add_argument(
        "--limit", type=int, default=50, metavar="N", help="changes to show (default 50)"
    )
    controls.set_defaults(run=_controls)


def actor(redis_url: str) -> dict[str, str]:
    """Who is changing a control and from where, for its history: the
    operating system's user, the Redis account (if the URL names one) and
    the host name."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (containers)
        who = "uid unknown"
    try:
        account = urlsplit(redis_url).username
    except ValueError:
        account = None
    if account:
        who += f" (redis user {account})"
    return {"who": who, "origin": socket.gethostname()}


def _control(args: argparse.Namespace) -> int:
    from conveyor import _core
    from conveyor.errors import ConfigError, InvalidJobError
    from conveyor.settings import Settings

    settings = Settings.from_env()
    _core.check_queue_name(args.queue)
    topic = settings.topic_for(args.queue)
    # Relays read their controls from the Redis they write the queue into.
    url = settings.redis_url_for(args.queue)
    store = _core.RedisStore(url)
    by = actor(url)
    if args.command == "throttle":
        off = args.rate in ("off", "0")
        if not off:
            try:
                _core.check_relay_control(f"rate:{topic}", args.rate)
            except InvalidJobError:
                raise ConfigError(
                    f"rate must be a positive number of jobs/s or 'off', not {args.rate!r}"
                ) from None
        store.set_relay_control(settings.namespace, "rate", topic, None if off else args.rate, **by)
        print(
            f"{args.queue}: relay rate {'unlimited' if off else args.rate + ' jobs/s'} "
            "(relays apply it within a second)"
        )
    elif args.command == "shadow":
        on = args.state == "on"
        store.set_relay_control(settings.namespace, "shadow", topic, "1" if on else None, **by)
        state = "on: jobs are read, counted and dropped" if on else "off"
        print(f"{args.queue}: relay shadow mode {state} (relays apply it within a second)")
    else:
        paused = args.command == "pause"
        store.set_relay_control(settings.namespace, "paused", topic, "1" if paused else None, **by)
        state = "paused: the backlog waits in Kafka" if paused else "resumed"
        print(f"{args.queue}: relaying {state}")
    return 0


def _route(args: argparse.Namespace) -> int:
    from conveyor import _core
    from conveyor.errors import ConfigError
    from conveyor.settings import Settings

    settings = Settings.from_env()
    # Producers read the routes from the main Redis, next to the registry.
    store = _core.RedisStore(settings.redis_url)
    by = actor(settings.redis_url)
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
        store.set_route(settings.namespace, args.type, None, **by)
        print(f"{args.type}: run-time route cleared; producers route by their configuration")
        return 0
    if args.kafka_percent is None and not args.double_write:
        raise ConfigError("give --kafka-percent, --double-write or --clear")
    percent = 100.0 if args.kafka_percent is None else args.kafka_percent
    store.set_route(settings.namespace, args.type, (percent, args.double_write), **by)
    if args.double_write:
        print(
            f"{args.type}: every job both direct to Redis and through Kafka; run "
            "`conveyor shadow QUEUE on` for its queue, or its jobs run twice"
        )
    else:
        print(f"{args.type}: {percent:g}% of jobs through Kafka, the rest direct to Redis")
    print("producers apply it within about a second (Settings.route_refresh_s)")
    return 0


def _stores(settings: Settings) -> list[tuple[str, _core.RedisStore]]:
    """`(what, store)` for the routes (main Redis) and for the relay controls
    of each Redis deployment."""
    from conveyor import _core

    urls = {settings.redis_url} | {url for _, url in settings.queue_redis}
    stores = [("routes", _core.RedisStore(settings.redis_url))]
    for url in sorted(urls):
        stores.append((f"relay controls in {_where(settings, url)}", _core.RedisStore(url)))
    return stores


def _where(settings: Settings, url: str) -> str:
    if url == settings.redis_url:
        return "the main Redis"
    queues = sorted(q for q, u in settings.queue_redis if u == url)
    return f"the Redis of {', '.join(queues)}"


def _controls(args: argparse.Namespace) -> int:
    from conveyor.errors import ConfigError
    from conveyor.settings import Settings

    if args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, not {args.limit}")
    settings = Settings.from_env()
    stores = _stores(settings)
    if args.history:
        return _history(settings.namespace, stores, args.limit)
    return _in_force(settings.namespace, stores)


def _history(ns: str, stores: list[tuple[str, _core.RedisStore]], limit: int) -> int:
    changes: list[dict[str, Any]] = []
    for what, store in stores:
        for text in store.control_history(ns, what == "routes"):
            try:
                change = dict(json.loads(text))
                change["what"] = "route" if what == "routes" else "relay"
                changes.append(change)
            except (ValueError, TypeError):
                print(f"(an unreadable history entry skipped: {text[:80]!r})")
    changes.sort(key=lambda c: -float(c.get("at", 0)))
    if not changes:
        print("no change recorded")
    for c in changes[:limit]:
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(c.get("at", 0))))
        print(
            f"{at}Z {c.get('what')} {c.get('field')}: {_shown(c.get('old'))} -> "
            f"{_shown(c.get('new'))}  by {c.get('who') or '?'} from {c.get('from') or '?'}"
        )
    return 0


def _in_force(ns: str, stores: list[tuple[str, _core.RedisStore]]) -> int:
    from conveyor import _core
    from conveyor.errors import InvalidJobError

    ignored = 0
    for what, store in stores:
        entries = sorted(store.routes(ns) if what == "routes" else store.relay_controls(ns))
        print(f"{what}:" if entries else f"{what}: none set")
        for field, value in entries:
            try:
                if what == "routes":
                    _core.check_route(field, value)
                else:
                    _core.check_relay_control(field, value)
            except InvalidJobError as err:
                ignored += 1
                print(f"  {field} = {value!r}  IGNORED: {err}")
            else:
                print(f"  {field} = {value}")
    if ignored:
        print(f"{ignored} value(s) ignored by relays and producers; fix or clear them")
    return 1 if ignored else 0


def _shown(value: object) -> str:
    return "(clear)" if value is None else str(value)
