"""`dev` and `topics`: local servers and Kafka topics."""

from __future__ import annotations

import argparse


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `dev` and `topics`."""
    dev = commands.add_parser("dev", help="local development servers (Kafka and Redis on loopback)")
    dev.add_argument("action", choices=["up", "down", "status"])
    dev.add_argument(
        "--redis-only",
        action="store_true",
        help="up: start Redis alone, for CONVEYOR_REDIS_ONLY=on (no Kafka, no Java); "
        "status: look at Redis alone",
    )
    dev.set_defaults(run=_dev)

    topics = commands.add_parser("topics", help="Kafka topics of queues (created on purpose)")
    topics.add_argument("action", choices=["create", "list"])
    topics.add_argument("queues", nargs="*", help="queues (default: the configured ones)")
    topics.add_argument("--partitions", type=int, help="partitions of new topics (default 3)")
    topics.add_argument(
        "--replication",
        type=int,
        help="replication of new topics (default: 3, or every broker of a smaller cluster)",
    )
    topics.set_defaults(run=_topics)


def _dev(args: argparse.Namespace) -> int:
    from conveyor.devservers import DevServers

    servers = DevServers.default()
    if args.action == "up" and args.redis_only:
        redis_started = servers.redis.up()
        _print_status(servers, {"redis": redis_started}, kafka=False)
        print(
            "\nOther conveyor commands use this Redis when nothing else is configured;"
            "\nset CONVEYOR_REDIS_ONLY=on so that jobs go straight into it (no Kafka)."
        )
    elif args.action == "up":
        kafka_started, redis_started = servers.up()
        _print_status(servers, {"kafka": kafka_started, "redis": redis_started})
        print("\nOther conveyor commands use these servers when nothing else is configured.")
    elif args.action == "down":
        servers.down()
        print("stopped local Kafka and Redis")
    else:
        _print_status(servers, {}, kafka=not args.redis_only)
        kafka_down = any(pid is None for _, pid in servers.kafka.status())
        if servers.redis.pid() is None or (kafka_down and not args.redis_only):
            return 1
    return 0


def _print_status(servers: object, started: dict[str, bool], *, kafka: bool = True) -> None:
    from conveyor.devservers import DevServers

    assert isinstance(servers, DevServers)

    def state(pid: int | None, name: str) -> str:
        if pid is None:
            return "stopped"
        how = "started" if started.get(name) else "running"
        return f"{how} (pid {pid})"

    rows = [
        (f"kafka node {node.node_id}", node.bootstrap, state(pid, "kafka"))
        for node, pid in (servers.kafka.status() if kafka else [])
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
