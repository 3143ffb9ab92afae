"""The `conveyor` command line."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from conveyor.errors import ConveyorError


def _dev(args: argparse.Namespace) -> int:
    from conveyor.devservers import DevServers

    servers = DevServers.default()
    if args.action == "up":
        kafka_started, redis_started = servers.up()
        _print_status(servers, {"kafka": kafka_started, "redis": redis_started})
        print("\nOther conveyor commands use these servers when nothing else is configured.")
    elif args.action == "down":
        servers.down()
        print("stopped local Kafka and Redis")
    else:
        _print_status(servers, {})
        if servers.redis.pid() is None or any(pid is None for _, pid in servers.kafka.status()):
            return 1
    return 0


def _print_status(servers: object, started: dict[str, bool]) -> None:
    from conveyor.devservers import DevServers

    assert isinstance(servers, DevServers)

    def state(pid: int | None, name: str) -> str:
        if pid is None:
            return "stopped"
        how = "started" if started.get(name) else "running"
        return f"{how} (pid {pid})"

    rows = [
        (f"kafka node {node.node_id}", node.bootstrap, state(pid, "kafka"))
        for node, pid in servers.kafka.status()
    ]
    rows.append(("redis", servers.redis.url, state(servers.redis.pid(), "redis")))
    for name, address, status in rows:
        print(f"{name:<14} {address:<28} {status}")


def _topics(args: argparse.Namespace) -> int:
    from conveyor import _core
    from conveyor.app import Conveyor
    from conveyor.settings import Settings

    settings = Settings.from_env()
    if args.action == "list":
        _, _, topics = _core.kafka_cluster_info(
            settings.kafka_bootstrap, properties=list(settings.kafka_properties)
        )
        for topic in sorted(t for t in topics if t.startswith(settings.topic_prefix)):
            print(topic)
        return 0
    if args.partitions is not None or args.replication is not None:
        from dataclasses import replace

        settings = replace(
            settings,
            topic_partitions=args.partitions or settings.topic_partitions,
            topic_replication=args.replication or settings.topic_replication,
        )
    app = Conveyor(settings)
    queues = args.queues or sorted(app.queues())
    created = set(app.ensure_topics(queues))
    for queue in queues:
        topic = settings.topic_for(queue)
        print(f"{topic:<40} {'created' if topic in created else 'exists (left as it is)'}")
    return 0


def _stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM: long-running commands stop cleanly."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _gate(args: argparse.Namespace) -> int:
    import os

    from conveyor import _core
    from conveyor.errors import InvalidJobError
    from conveyor.settings import Settings

    settings = Settings.from_env()
    routes = {}
    for route in args.route:
        job_type, sep, queue = route.partition("=")
        if not sep:
            raise InvalidJobError(f"--route takes TYPE=QUEUE, not {route!r}")
        routes[job_type] = queue
    gate = _core.Gate(
        args.bind,
        settings.kafka_bootstrap,
        namespace=settings.namespace,
        topic_prefix=settings.topic_prefix,
        routes=routes,
        registry_url=None if args.no_registry else settings.redis_url,
        acks=args.acks or settings.acks,
        request_timeout_s=args.request_timeout,
        delivery_timeout_s=settings.delivery_timeout_s,
        max_payload_bytes=settings.max_payload_bytes,
        token=os.environ.get("CONVEYOR_GATE_TOKEN") or None,
        properties=list(settings.kafka_properties),
    )
    stop = _stop_on_signals()
    print(
        f"gate serving on http://{gate.address}  (Kafka {settings.kafka_bootstrap}, "
        f"{len(gate.routes())} job types known)",
        flush=True,
    )
    while not stop.wait(0.5):
        pass
    print("gate stopping: finishing requests in flight ...", flush=True)
    gate.stop()
    return 0


def _relay(args: argparse.Namespace) -> int:
    import time

    from conveyor.relays import group_id, merged_metrics, start_relays
    from conveyor.settings import Settings

    settings = Settings.from_env()
    queues = args.queues or list(settings.queues)
    started = start_relays(
        settings,
        queues,
        memory_high=args.memory_high,
        memory_low=args.memory_low,
        depth_high=args.depth_high,
        depth_low=args.depth_low if args.depth_low is not None else (args.depth_high or 0) // 2,
    )
    relays = [relay for _, _, relay in started]
    stop = _stop_on_signals()
    for _, names, _ in started:
        print(
            f"relay: {', '.join(names)} from Kafka {settings.kafka_bootstrap} into Redis "
            f"{'(default)' if len(started) == 1 else 'deployment of ' + names[0]} "
            f"(group {group_id(settings)})",
            flush=True,
        )
    if args.metrics_bind:
        from conveyor.metrics_http import serve_metrics

        server = serve_metrics(args.metrics_bind, lambda: merged_metrics(relays))
        host, port = server.server_address[:2]
        print(f"relay: metrics on http://{host!s}:{port}/metrics", flush=True)
    last, last_at = 0, time.monotonic()
    while not stop.wait(args.report_every):
        totals: dict[str, int] = {}
        for relay in relays:
            for key, value in relay.stats().items():
                totals[key] = totals.get(key, 0) + value
        now = time.monotonic()
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
    for relay in relays:
        relay.stop()
    return 0


def _control(args: argparse.Namespace) -> int:
    from conveyor import _core
    from conveyor.errors import InvalidJobError
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
                raise InvalidJobError(
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
    from conveyor.errors import InvalidJobError
    from conveyor.settings import Settings

    settings = Settings.from_env()
    # Producers read the routes from the main Redis, next to the registry.
    store = _core.RedisStore(settings.redis_url)
    if args.type is None:
        if args.kafka_percent is not None or args.double_write or args.clear:
            raise InvalidJobError("name the job type to route")
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
            raise InvalidJobError("--clear takes no other option")
        store.set_route(settings.namespace, args.type, None)
        print(f"{args.type}: run-time route cleared; producers route by their configuration")
        return 0
    if args.kafka_percent is None and not args.double_write:
        raise InvalidJobError("give --kafka-percent, --double-write or --clear")
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


def _worker(args: argparse.Namespace) -> int:
    import logging
    import sys

    from conveyor.processes import run_processes
    from conveyor.worker import Worker, load_app, parse_queues

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if "" not in sys.path:
        sys.path.insert(0, "")  # MODULE:APP is importable from the working folder
    app = load_app(args.app)
    queues = parse_queues(args.queue) if args.queue else None
    if not args.no_setup:
        _worker_setup(app, queues)

    def child(index: int) -> int:
        worker = Worker(
            app,
            queues,
            threads=args.threads,
            lease_s=args.lease,
            strict=args.strict,
            max_batch=args.batch,
            grace_s=args.grace,
        )
        names = ", ".join(f"{q}:{w}" for q, w in worker.queues)
        print(f"worker: {args.threads} threads on {names} (lease {args.lease}s)", flush=True)
        if args.metrics_bind:
            from conveyor.metrics_http import serve_metrics

            # With several processes each gets its own port: base, base + 1, ...
            host, _, port = args.metrics_bind.rpartition(":")
            if port.isdigit() and int(port):
                port = str(int(port) + index)
            server = serve_metrics(f"{host}:{port}", worker.metrics)
            url = f"http://{host}:{server.server_address[1]}/metrics"
            print(f"worker: metrics on {url}", flush=True)
        worker.run(progress_every_s=args.report_every)
        print(f"worker stopped: {worker.stats()}", flush=True)
        return 0

    if args.processes <= 1:
        return child(0)
    return run_processes(args.processes, child)


def _worker_setup(app: object, queues: list[tuple[str, int]] | None) -> None:
    """Publish the registry for gates and create missing topics; a worker can
    still run jobs already in Redis when Kafka is away, so failures only warn."""
    from conveyor.app import Conveyor

    assert isinstance(app, Conveyor)
    try:
        app.publish_registry()
    except ConveyorError as err:
        print(f"worker: could not publish the job registry: {err}", file=sys.stderr)
    try:
        created = app.ensure_topics([q for q, _ in queues] if queues else None)
        if created:
            print(f"worker: created topics {', '.join(created)}", flush=True)
    except ConveyorError as err:
        print(f"worker: could not check Kafka topics: {err}", file=sys.stderr)


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
        print(f"  {'topic':<36} {'partition':>9} {'high':>12} {'relayed to':>12} {'lag':>10}")
        for p in s["partitions"]:
            print(
                f"  {p['topic']:<36} {p['partition']:>9} {p['high']:>12} "
                f"{p['relayed_to']:>12} {p['lag']:>10}"
            )
    return 0


def _queues(args: argparse.Namespace) -> int:
    from conveyor import _core
    from conveyor.settings import Settings

    settings = Settings.from_env()
    names = args.queues or list(settings.queues)
    header: tuple[str, ...] = ("queue", "queued", "scheduled", "leases", "dead")
    header += ("admitted", "done", "retried", "reaped")
    print("  ".join(f"{h:>10}" for h in header))
    for name in names:
        store = _core.RedisStore(settings.redis_url_for(name))
        depth = store.depth(settings.namespace, name)
        counts = store.counts(settings.namespace, name)
        row = [name] + [str(depth[k]) for k in ("queued", "scheduled", "leases", "dead")]
        row += [str(counts.get(k, 0)) for k in ("admitted", "done", "retried", "reaped")]
        print("  ".join(f"{c:>10}" for c in row))
    return 0


def _dead(args: argparse.Namespace) -> int:
    import datetime
    import json

    from conveyor import _core
    from conveyor._core import Envelope
    from conveyor.settings import Settings

    settings = Settings.from_env()
    store = _core.RedisStore(settings.redis_url_for(args.queue))
    if args.action == "replay":
        moved = 0
        while moved < args.limit:
            n = store.replay_dead(settings.namespace, args.queue, min(1000, args.limit - moved))
            moved += n
            if n == 0:
                break
        print(f"{args.queue}: {moved} dead jobs back in the queue with fresh attempts")
        return 0
    for raw, at, error in store.dead_letters(settings.namespace, args.queue, args.limit):
        env = Envelope.decode(raw)
        when = datetime.datetime.fromtimestamp(at, datetime.UTC).isoformat(timespec="seconds")
        reason = json.loads(error) if error else {}
        print(
            f"{env.id}  {env.job_type:<24} attempts {env.attempt}  died {when}  "
            f"{reason.get('type', '?')}: {reason.get('message', '')}"
        )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from conveyor.demo import run

    return run(jobs=args.jobs, keep_servers=args.keep_servers)


def _add_worker_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`worker`, `queues` and `dead`: running and inspecting Redis queues."""
    worker = commands.add_parser("worker", help="run an application's handlers for its queues")
    worker.add_argument(
        "app", help="MODULE:APP, the conveyor.Conveyor that registered the handlers"
    )
    worker.add_argument(
        "-q",
        "--queue",
        action="append",
        default=[],
        metavar="NAME[:WEIGHT]",
        help="a queue to work (repeatable; default: all of the app's), with a weight",
    )
    worker.add_argument(
        "--strict", action="store_true", help="always take from queues in the order given"
    )
    worker.add_argument("--threads", type=int, default=8, help="jobs run at once per process")
    worker.add_argument("--processes", type=int, default=1, help="worker processes (default 1)")
    worker.add_argument("--lease", type=float, default=30.0, help="lease in seconds (default 30)")
    worker.add_argument(
        "--grace", type=float, default=30.0, help="seconds running jobs get at shutdown"
    )
    worker.add_argument("--batch", type=int, default=100, help="most jobs per fetch (default 100)")
    worker.add_argument(
        "--report-every", type=float, default=10.0, metavar="SECONDS", help="log counts this often"
    )
    worker.add_argument(
        "--metrics-bind",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at /metrics (process i of --processes on PORT + i)",
    )
    worker.add_argument(
        "--no-setup",
        action="store_true",
        help="do not publish the job registry or create missing Kafka topics at start",
    )
    worker.set_defaults(run=_worker)

    relays = commands.add_parser("relays", help="running relays: partitions, lag, guards")
    relays.set_defaults(run=_relays)

    queues = commands.add_parser("queues", help="jobs per state in each queue's Redis")
    queues.add_argument("queues", nargs="*", help="queues (default: the configured ones)")
    queues.set_defaults(run=_queues)

    dead = commands.add_parser("dead", help="list or replay a queue's dead-lettered jobs")
    dead.add_argument("action", choices=["list", "replay"])
    dead.add_argument("queue")
    dead.add_argument("--limit", type=int, default=100, help="most jobs (default 100)")
    dead.set_defaults(run=_dead)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="conveyor", description="Conveyor: a durable job queue, Kafka in front of Redis."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    dev = commands.add_parser("dev", help="local development servers (Kafka and Redis on loopback)")
    dev.add_argument("action", choices=["up", "down", "status"])
    dev.set_defaults(run=_dev)

    topics = commands.add_parser("topics", help="Kafka topics of queues (created on purpose)")
    topics.add_argument("action", choices=["create", "list"])
    topics.add_argument("queues", nargs="*", help="queues (default: the configured ones)")
    topics.add_argument("--partitions", type=int, help="partitions of new topics (default 3)")
    topics.add_argument("--replication", type=int, help="replication of new topics (default 1)")
    topics.set_defaults(run=_topics)

    gate = commands.add_parser(
        "gate", help="serve the HTTP enqueue gate (Rust, no Python per request)"
    )
    gate.add_argument("--bind", default="127.0.0.1:8080", help="HOST:PORT (default 127.0.0.1:8080)")
    gate.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="TYPE=QUEUE",
        help="accept a job type without a published registry entry",
    )
    gate.add_argument(
        "--no-registry", action="store_true", help="do not read the job type registry from Redis"
    )
    gate.add_argument("--acks", choices=["leader", "all"], help="acknowledgement to wait for")
    gate.add_argument(
        "--request-timeout",
        type=float,
        default=5.0,
        help="seconds to wait for Kafka before answering 503 (default 5)",
    )
    gate.set_defaults(run=_gate)

    relay = commands.add_parser("relay", help="relay queues' Kafka topics into Redis")
    relay.add_argument("queues", nargs="*", help="queues (default: the configured ones)")
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
        "--depth-low",
        type=int,
        metavar="JOBS",
        help="resume below this many (default: half of --depth-high)",
    )
    relay.set_defaults(run=_relay)

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

    _add_worker_commands(commands)

    demo = commands.add_parser("demo", help="bring up local servers and run the demo workload")
    demo.add_argument(
        "--jobs", type=int, default=20_000, help="how many jobs to send (default 20,000)"
    )
    demo.add_argument(
        "--keep-servers", action="store_true", help="leave Kafka and Redis running afterwards"
    )
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `conveyor` command."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ConveyorError as err:
        print(f"conveyor: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
