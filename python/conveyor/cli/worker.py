"""`worker`, `queues` and `dead`: run handlers and inspect Redis queues."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from conveyor.errors import ConveyorError

if TYPE_CHECKING:
    from conveyor import _core


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `worker`, `queues` and `dead`."""
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
    worker.add_argument(
        "--threads", type=int, default=8, help="sync jobs run at once per process (default 8)"
    )
    worker.add_argument(
        "--async-limit",
        type=int,
        default=100,
        help="async jobs in flight at once per process, on one event loop (default 100)",
    )
    worker.add_argument("--processes", type=int, default=1, help="worker processes (default 1)")
    worker.add_argument("--lease", type=float, default=30.0, help="lease in seconds (default 30)")
    worker.add_argument(
        "--grace", type=float, default=30.0, help="seconds running jobs get at shutdown"
    )
    worker.add_argument(
        "--max-job",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="longest a job without a timeout keeps its lease (default 3600); one with a "
        "timeout keeps it for the timeout plus the lease",
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
        "--log-format",
        choices=("text", "json"),
        help="log lines as text or one JSON object each, with the job's id and type on "
        "lines about a job (default: CONVEYOR_LOG_FORMAT, else text)",
    )
    worker.add_argument(
        "--no-setup",
        action="store_true",
        help="do not publish the job registry or create missing Kafka topics at start",
    )
    worker.set_defaults(run=_worker)

    queues = commands.add_parser("queues", help="jobs per state in each queue's Redis")
    queues.add_argument("queues", nargs="*", help="queues (default: the configured ones)")
    queues.set_defaults(run=_queues)

    job = commands.add_parser("job", help="a job's state and timeline, by its id")
    job.add_argument("id", help="the job id (26 characters)")
    job.add_argument(
        "--queue",
        action="append",
        help="look only in this queue (repeatable; default: the configured queues and "
        "every queue of the registry)",
    )
    job.set_defaults(run=_job)

    cancel = commands.add_parser("cancel", help="cancel a job by its id")
    cancel.add_argument("id", help="the job id (26 characters)")
    cancel.add_argument(
        "--queue",
        action="append",
        help="the job's queue (repeatable; default: where it is found among the configured "
        "queues and every queue of the registry, or all of them)",
    )
    cancel.set_defaults(run=_cancel)

    dead = commands.add_parser("dead", help="list, replay or purge a queue's dead-lettered jobs")
    dead.add_argument("action", choices=["list", "replay", "purge"])
    dead.add_argument("queue")
    dead.add_argument("--limit", type=int, default=100, help="most jobs (default 100)")
    dead.add_argument(
        "--older-than",
        type=float,
        metavar="SECONDS",
        help="purge: only jobs dead for longer than this (default: every dead job)",
    )
    dead.set_defaults(run=_dead)


def _worker(args: argparse.Namespace) -> int:
    import sys

    from conveyor.logs import configure
    from conveyor.processes import run_processes
    from conveyor.worker import Worker, load_app, parse_queues

    configure(args.log_format)
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
            max_job_s=args.max_job,
            async_limit=args.async_limit,
        )
        names = ", ".join(f"{q}:{w}" for q, w in worker.queues)
        print(f"worker: {args.threads} threads on {names} (lease {args.lease}s)", flush=True)
        if args.metrics_bind:
            from conveyor.metrics_http import serve_metrics

            # With several processes each gets its own port: base, base + 1, ...
            host, _, port = args.metrics_bind.rpartition(":")
            if port.isdigit() and int(port):
                port = str(int(port) + index)
            server = serve_metrics(f"{host}:{port}", worker.metrics, worker.health)
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
    if app.settings.redis_only:
        return
    try:
        created = app.ensure_topics([q for q, _ in queues] if queues else None)
        if created:
            print(f"worker: created topics {', '.join(created)}", flush=True)
    except ConveyorError as err:
        print(f"worker: could not check Kafka topics: {err}", file=sys.stderr)


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


def _job(args: argparse.Namespace) -> int:
    import datetime
    import json

    from conveyor.lookup import find, registry_queues
    from conveyor.settings import Settings

    settings = Settings.from_env()
    queues = args.queue or sorted({*settings.queues, *registry_queues(settings)})
    info = find(settings, args.id, queues)
    if info is None:
        print(
            f"job {args.id} not found in {', '.join(queues)}: it may still be in Kafka, "
            f"or have ended more than {settings.job_history_s:g}s ago "
            "(CONVEYOR_JOB_HISTORY_S), or be in another queue (--queue)"
        )
        return 1
    print(f"job {info.id}: {info.state}")
    print(f"  type {info.job_type}, queue {info.queue}, attempts {info.attempts}")
    if info.kafka is not None:
        print(f"  Kafka partition {info.kafka[0]}, offset {info.kafka[1]}")
    for stage, at in info.timeline:
        when = datetime.datetime.fromtimestamp(at, datetime.timezone.utc)
        print(f"  {when:%Y-%m-%d %H:%M:%S.%f}Z  {stage}")
    if info.error is not None:
        print(f"  last error: {json.dumps(info.error)}")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from conveyor.cancellation import cancel
    from conveyor.lookup import registry_queues
    from conveyor.settings import Settings

    settings = Settings.from_env()
    queues = args.queue or sorted({*settings.queues, *registry_queues(settings)})
    state, marked = cancel(settings, args.id, queues)
    if not marked:
        print(f"job {args.id} is {state} already: nothing to cancel")
        return 1
    if state == "not found":
        print(
            f"job {args.id} not found (it may still be in Kafka): cancel set in "
            f"{', '.join(marked)}; it will not start"
        )
    else:
        print(
            f"job {args.id} was {state}: cancel set in {marked[0]} "
            "(a running job is told within a second; see conveyor job ID)"
        )
    return 0


def _dead(args: argparse.Namespace) -> int:
    import datetime
    import json

    from conveyor import _core
    from conveyor._core import Envelope
    from conveyor.settings import Settings

    settings = Settings.from_env()
    store = _core.RedisStore(settings.redis_url_for(args.queue))
    if args.action == "purge":
        return _purge(store, settings.namespace, args.queue, args.older_than)
    if args.action == "replay":
        moved, kept = store.replay_dead(settings.namespace, args.queue, args.limit)
        print(f"{args.queue}: {moved} dead jobs back in the queue with fresh attempts")
        if kept:
            print(
                f"{args.queue}: {kept} unique jobs left dead: another job of their type "
                "holds their dedup key now (replaying them would run duplicates)"
            )
        return 0
    dead = store.dead_letters(settings.namespace, args.queue, args.limit)
    if not dead:
        # Said, not left blank: an empty answer looks like a broken command.
        print(f"{args.queue}: no dead jobs")
    for raw, at, error in dead:
        env = Envelope.decode(raw)
        when = datetime.datetime.fromtimestamp(at, datetime.timezone.utc).isoformat(
            timespec="seconds"
        )
        reason = json.loads(error) if error else {}
        print(
            f"{env.id}  {env.job_type:<24} attempts {env.attempt}  died {when}  "
            f"{reason.get('type', '?')}: {reason.get('message', '')}"
        )
    return 0


def _purge(store: _core.RedisStore, namespace: str, queue: str, older_than: float | None) -> int:
    from conveyor.errors import ConfigError

    if older_than is not None and not 0 <= older_than < float("inf"):
        raise ConfigError(f"--older-than must be seconds of at least 0, not {older_than}")
    # Redis' clock decides what is old, as it stamped when each job died.
    if older_than is None:  # every dead job
        older_than, keep = 0.0, 0
    else:
        keep = 2**63
    purged = 0
    while n := store.purge_dead(namespace, queue, older_than_s=older_than, keep=keep, count=1000):
        purged += n
        print(f"\r{queue}: {purged} dead jobs purged ...", end="", flush=True)
    print(f"\r{queue}: {purged} dead jobs purged, with their error records")
    return 0
