"""`gate`: serve the HTTP enqueue gate."""

from __future__ import annotations

import argparse

from conveyor.cli.stopping import stop_on_signals


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `gate`."""
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
    gate.add_argument(
        "--max-connections",
        type=int,
        default=1024,
        help="connections served at once; one more is answered 503 (default 1024)",
    )
    gate.add_argument(
        "--header-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="a connection closes if a request's headers take longer, idle time included "
        "(default 30)",
    )
    gate.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="a request whose body takes longer is answered 408 (default 30)",
    )
    gate.add_argument(
        "--tokens",
        metavar="FILE",
        help="bearer tokens and their scopes (JSON; default $CONVEYOR_GATE_TOKENS_FILE), "
        "reloaded when the file changes or on SIGHUP",
    )
    gate.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="serve HTTPS with this certificate chain (PEM), reloaded with its key when "
        "either changes or on SIGHUP",
    )
    gate.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    gate.add_argument(
        "--insecure",
        action="store_true",
        help="serve an address other than loopback without tokens or over plain HTTP "
        "(anyone on the path reads tokens and jobs; anyone who reaches it without tokens "
        "may enqueue any job type)",
    )
    gate.set_defaults(run=_gate)


def _gate(args: argparse.Namespace) -> int:
    import os
    import signal
    import threading
    from pathlib import Path

    from conveyor import _core
    from conveyor.cli.gate_tokens import WatchedFile, log, read_tokens, reload_tokens
    from conveyor.cli.ignored import IgnoredValues
    from conveyor.errors import ConfigError
    from conveyor.settings import Settings

    settings = Settings.from_env()
    token_file = args.tokens or os.environ.get("CONVEYOR_GATE_TOKENS_FILE")
    tokens = WatchedFile(Path(token_file)) if token_file else None
    routes = {}
    for route in args.route:
        job_type, sep, queue = route.partition("=")
        if not sep:
            raise ConfigError(f"--route takes TYPE=QUEUE, not {route!r}")
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
        tokens=read_tokens(tokens.path) if tokens else None,
        insecure=args.insecure,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        properties=list(settings.kafka_properties),
        max_connections=args.max_connections,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        tallies=settings.tallies,
    )
    stop = stop_on_signals()
    hangup = threading.Event()
    signal.signal(signal.SIGHUP, lambda *_: hangup.set())
    closed = tokens or os.environ.get("CONVEYOR_GATE_TOKEN")
    print(
        f"gate serving on {'https' if gate.https else 'http'}://{gate.address}  "
        f"(Kafka {settings.kafka_bootstrap}, "
        f"{len(gate.routes())} job types known; "
        f"{'tokens required' if closed else 'open: no token'})",
        flush=True,
    )
    certs = [WatchedFile(Path(p)) for p in (args.tls_cert, args.tls_key) if p]
    ignored = IgnoredValues(log, "a registry entry")
    while not stop.wait(0.5):
        ignored.report(gate.registry_ignored())
        asked = hangup.is_set()
        hangup.clear()
        if tokens and (tokens.changed() or asked):
            reload_tokens(tokens.path, gate.set_tokens)
        # Both files are watched (read once more each); one renewed is enough.
        if certs and (any([c.changed() for c in certs]) or asked):
            try:
                gate.reload_tls()
                log.warning("TLS certificate reloaded")
            except ConfigError as err:
                log.error("TLS certificate not reloaded, the one in force stays: %s", err)
    print("gate stopping: finishing requests in flight ...", flush=True)
    gate.stop()
    return 0
