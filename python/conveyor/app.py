"""The application object: registry of job types and the producer behind enqueue."""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from conveyor import _core, results, tracing
from conveyor.cancellation import cancel
from conveyor.deliveries import DeliveryFailure, DeliveryWatcher, OnDeliveryFailure, let_go
from conveyor.enqueue import Enqueued
from conveyor.errors import ConveyorError, InvalidJobError
from conveyor.handles import app_result_reader
from conveyor.jobs import JobOptions, JobType, P, R
from conveyor.lookup import JobInfo, find
from conveyor.payload import Call, encode_call
from conveyor.routing import DIRECT, Route, RouteTable, routes_reader
from conveyor.schedules import Cron, Schedule
from conveyor.settings import Settings
from conveyor.tallies import SentTally
from conveyor.transports import (
    PLAIN,
    KafkaTransport,
    RoutedTransport,
    SendOptions,
    Target,
    Transport,
)

# Producers inherited across fork(): librdkafka's threads do not survive it, and
# destroying such a client in the child can hang, so they are kept, never used.
_ORPHANED_BY_FORK: list[_core.KafkaProducer] = []
_LIVE_APPS: weakref.WeakSet[Conveyor] = weakref.WeakSet()
#: Enough routes for any real set of job types; past it, names are checked each time.
_ROUTE_CACHE_SIZE = 10_000


class Conveyor:
    """A Conveyor application: register job types, enqueue jobs.

    With no settings it reads `Settings.from_env()`, which with nothing set
    points at the servers `conveyor dev up` starts.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        on_delivery_failure: OnDeliveryFailure | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self._jobs: dict[str, JobType[Any, Any]] = {}
        self._lock = threading.Lock()
        self._producer: _core.KafkaProducer | None = None
        #: Called with `[(job id, reason), ...]` when jobs sent without a
        #: `wait()` were not written to Kafka (they are logged regardless).
        self.on_delivery_failure = on_delivery_failure
        self._watcher: DeliveryWatcher | None = None
        self._let_go: weakref.finalize[Any, Any] | None = None
        self._failures_before = 0
        #: Redis connections of the direct path, by deployment URL.
        self._stores: dict[str, _core.RedisStore] = {}
        self._routes = RouteTable(dict(self.settings.routes))
        for queue in self.settings.queues:
            _core.check_queue_name(queue)
        self._queues = frozenset(self.settings.queues)
        # (job type, queue asked for) -> where its jobs go, once the names were checked.
        self._targets: dict[tuple[str, str | None], Target] = {}
        self._schedules: dict[str, Schedule] = {}
        self._kafka = KafkaTransport(self)
        #: Where types without a route go: Kafka, or Redis in Redis-only mode.
        self._unrouted: Transport = (
            RoutedTransport(self, DIRECT) if self.settings.redis_only else self._kafka
        )
        #: Set by `conveyor.testing.capture`: enqueues go here instead of Kafka.
        self._capture: Transport | None = None
        _LIVE_APPS.add(self)

    # Registry

    def job(
        self,
        name: str,
        *,
        queue: str = "default",
        max_attempts: int = 5,
        timeout_s: float | None = None,
        backoff_s: float = 1.0,
        backoff_max_s: float = 3600.0,
        store_result: bool = False,
        result_ttl_s: float = 3600.0,
    ) -> Callable[[Callable[P, R]], JobType[P, R]]:
        """Decorator registering a handler under the stable type name `name`.

        A failed attempt is retried after `backoff_s`, doubling each time up
        to `backoff_max_s` (with jitter), until `max_attempts` attempts were
        made; then the job is dead-lettered with its last error. An attempt
        running longer than `timeout_s` fails with `JobTimeout`. With
        `store_result`, each job's outcome is kept `result_ttl_s` seconds for
        `handle.result()` (`conveyor.results`).
        """
        _core.check_job_type(name)
        _core.check_queue_name(queue)
        if max_attempts < 1:
            raise InvalidJobError(f"max_attempts must be at least 1, not {max_attempts}")
        if timeout_s is not None and not timeout_s > 0:
            raise InvalidJobError(f"timeout_s must be positive, not {timeout_s}")
        if not 0 <= backoff_s <= backoff_max_s:
            raise InvalidJobError("backoff_s must be between 0 and backoff_max_s")
        if not 0 < result_ttl_s < float("inf"):
            raise InvalidJobError(f"result_ttl_s must be positive and finite, not {result_ttl_s}")
        options = JobOptions(
            queue, max_attempts, timeout_s, backoff_s, backoff_max_s, store_result, result_ttl_s
        )

        def register(fn: Callable[P, R]) -> JobType[P, R]:
            if name in self._jobs:
                raise InvalidJobError(f"job type {name!r} is already registered")
            job_type = JobType(self, name, fn, options)
            self._jobs[name] = job_type
            self._queues = self._queues | {queue}
            self._targets.clear()
            return job_type

        return register

    def periodic(
        self,
        job: JobType[Any, Any] | str,
        *,
        every: float | timedelta | None = None,
        cron: str | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> Schedule:
        """Run `job` (a registered job type, or a type name on the default
        queue) with `args` and `kwargs` every `every` seconds or on a `cron`
        timetable (UTC); see `conveyor.schedules`. Workers of this app enqueue
        each occurrence exactly once between them. `name` (default: the job
        type's) must be unique; it keys the schedule's state in Redis."""
        if (every is None) == (cron is None):
            raise InvalidJobError("give a periodic job either every= or cron=, not both")
        type_name = job.name if isinstance(job, JobType) else job
        _core.check_job_type(type_name)
        registered = self._jobs.get(type_name)
        queue = registered.options.queue if registered else "default"
        every_s = every.total_seconds() if isinstance(every, timedelta) else every
        if every_s is not None and not every_s >= 0.1:
            raise InvalidJobError(f"every must be at least 0.1 s, not {every_s}")
        schedule = Schedule(
            name=name or type_name,
            job_type=type_name,
            queue=queue,
            args=tuple(args),
            kwargs=dict(kwargs or {}),
            every_s=every_s,
            cron=Cron.parse(cron) if cron is not None else None,
        )
        # Refuse arguments that could never be sent, now rather than at 3 am.
        encode_call(schedule.args, schedule.kwargs, self.settings.max_payload_bytes)
        if schedule.name in self._schedules:
            raise InvalidJobError(f"periodic schedule {schedule.name!r} is already registered")
        self._schedules[schedule.name] = schedule
        return schedule

    @property
    def schedules(self) -> Mapping[str, Schedule]:
        """Periodic schedules by name."""
        return dict(self._schedules)

    @property
    def registry(self) -> Mapping[str, JobType[Any, Any]]:
        """Registered job types by name."""
        return dict(self._jobs)

    def queues(self) -> frozenset[str]:
        """Queues this application may enqueue to."""
        return self._queues

    # Enqueue

    def enqueue(
        self,
        type_name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        dedup_key: str | None = None,
        delay: float | timedelta | None = None,
        run_at: datetime | float | None = None,
        trace_context: str | None = None,
    ) -> Enqueued:
        """Send one job of type `type_name`, which need not be registered here.

        The queue is the registered type's, else `queue`, else "default".
        Returns at once; `wait()` on the result blocks for the broker's ack.
        """
        if dedup_key is None and delay is None and run_at is None and trace_context is None:
            options = PLAIN
        else:
            options = SendOptions.of([dedup_key], delay, run_at, trace_context, 1)
        return self.send_one(type_name, queue, args, kwargs, options)

    def enqueue_many(
        self,
        type_name: str,
        calls: Iterable[Call],
        *,
        queue: str | None = None,
        dedup_keys: Sequence[str | None] | None = None,
        delay: float | timedelta | None = None,
        run_at: datetime | float | None = None,
        trace_context: str | None = None,
    ) -> Enqueued:
        """Send a batch of jobs of one type in one call."""
        calls = calls if isinstance(calls, list) else list(calls)
        options = SendOptions.of(dedup_keys, delay, run_at, trace_context, len(calls))
        return self.send_many(type_name, queue, calls, options)

    def send_one(
        self,
        type_name: str,
        queue: str | None,
        args: Sequence[Any],
        kwargs: Mapping[str, Any] | None,
        options: SendOptions,
    ) -> Enqueued:
        """`enqueue` with its options as one value (what `JobType` calls)."""
        target = self._targets.get((type_name, queue)) or self._target(type_name, queue)
        positional = args if isinstance(args, (list, tuple)) else list(args)
        if kwargs is not None and not isinstance(kwargs, dict):
            kwargs = dict(kwargs)
        transport = self._transport(type_name)
        if tracing.ACTIVE and options.trace_context is None and tracing.recording():
            return tracing.send_traced(
                type_name,
                1,
                options,
                lambda traced: transport.send_one(type_name, target, positional, kwargs, traced),
            )
        return transport.send_one(type_name, target, positional, kwargs, options)

    def send_many(
        self, type_name: str, queue: str | None, calls: list[Call], options: SendOptions
    ) -> Enqueued:
        """`enqueue_many` with its options as one value (what `JobType` calls)."""
        target = self._targets.get((type_name, queue)) or self._target(type_name, queue)
        transport = self._transport(type_name)
        if tracing.ACTIVE and options.trace_context is None and tracing.recording():
            return tracing.send_traced(
                type_name,
                len(calls),
                options,
                lambda traced: transport.send_many(type_name, target, calls, traced),
            )
        return transport.send_many(type_name, target, calls, options)

    def _target(self, type_name: str, queue: str | None) -> Target:
        """Where `type_name`'s jobs go (checking the names), remembered."""
        registered = self._jobs.get(type_name)
        if registered is None:
            _core.check_job_type(type_name)
        resolved = registered.options.queue if registered else (queue or "default")
        if resolved not in self._queues:
            raise InvalidJobError(
                f"unknown queue {resolved!r}: known queues are {sorted(self._queues)}; "
                "add it to Settings.queues or register a job type on it"
            )
        target = Target(resolved, self.settings.topic_for(resolved))
        if len(self._targets) < _ROUTE_CACHE_SIZE:
            self._targets[(type_name, queue)] = target
        return target

    def _transport(self, type_name: str) -> Transport:
        """The one choice of where jobs go: captured by `conveyor.testing`,
        routed by a run-time route, or (by default) to Kafka (to Redis in
        Redis-only mode)."""
        if self._capture is not None:
            return self._capture
        if not self._routes.watching and self.settings.route_refresh_s:
            self._watch_routes()
        route = self._routes.current.get(type_name)
        if route is not None:
            return RoutedTransport(self, route)
        return self._unrouted

    def set_route(self, type_name: str, route: Route | None) -> None:
        """Send `type_name`'s jobs by `route` from now on (None: Kafka only);
        see `conveyor.routing` for migrating a type a percentage at a time."""
        _core.check_job_type(type_name)
        self._routes.configure(type_name, route)

    def _watch_routes(self) -> None:
        """Start re-reading the routes set at run time (`conveyor route`)."""
        s = self.settings
        self._routes.watch(routes_reader(s.redis_url, s.namespace), float(s.route_refresh_s or 1.0))

    def store(self, queue: str) -> _core.RedisStore:
        """The direct path's Redis connection for `queue`'s deployment."""
        url = self.settings.redis_url_for(queue)
        store = self._stores.get(url)
        if store is None:
            with self._lock:
                store = self._stores.get(url)
                if store is None:
                    store = self._stores[url] = _core.RedisStore(url)
        return store

    def producer(self) -> _core.KafkaProducer:
        """The Kafka producer, made on first use (and again after a fork)."""
        producer = self._producer
        if producer is not None:
            return producer
        with self._lock:
            if self._producer is None:
                s = self.settings
                producer = _core.KafkaProducer(
                    s.kafka_bootstrap,
                    acks=s.acks,
                    delivery_timeout_s=s.delivery_timeout_s,
                    properties=list(s.kafka_properties),
                )
                # A weak reference: the watcher must not keep the app alive.
                method = weakref.WeakMethod(self._delivery_failed)

                def on_failure(failures: list[DeliveryFailure]) -> None:
                    delivery_failed = method()
                    if delivery_failed is not None:
                        delivery_failed(failures)

                self._watcher = DeliveryWatcher(
                    producer, on_failure, SentTally(s) if s.tallies else None
                )
                # Dropped without close(), or at exit: deliver what is
                # pending, as long as a delivery may take, and say what failed.
                self._let_go = weakref.finalize(
                    self, let_go, producer, self._watcher, s.delivery_timeout_s + 5.0
                )
                self._producer = producer
            return self._producer

    def _delivery_failed(self, failures: list[DeliveryFailure]) -> None:
        callback = self.on_delivery_failure
        if callback is not None:
            callback(failures)

    @property
    def delivery_failures(self) -> int:
        """Jobs sent without a `wait()` that Kafka did not take, since the
        application began (each was logged, and offered to
        `on_delivery_failure`)."""
        producer = self._producer
        return self._failures_before + (producer.unobserved_failures if producer else 0)

    def _forget_producer_after_fork(self) -> None:
        # We are a forked child: the parent's client is dead here, and so is
        # its watcher thread; its pending jobs are the parent's to deliver.
        if self._producer is not None:
            _ORPHANED_BY_FORK.append(self._producer)
            self._producer = None
        if self._let_go is not None:
            self._let_go.detach()
            self._let_go = None
        self._watcher = None
        # A Redis connection shared with the parent would interleave replies.
        self._stores = {}
        self._lock = threading.Lock()
        self._routes.forget_watcher()

    def flush(self, timeout_s: float = 30.0) -> None:
        """Deliver everything pending; raises DeliveryError for failed jobs that
        no `wait()` reported."""
        if self._producer is not None:
            self._producer.flush(timeout_s)

    def close(self, timeout_s: float | None = None) -> None:
        """Deliver what is pending (waiting up to `timeout_s`, by default as
        long as a delivery may take), report what could not be delivered
        (raises `DeliveryError`), then let go of the producer."""
        if timeout_s is None:
            timeout_s = self.settings.delivery_timeout_s + 5.0
        try:
            self.flush(timeout_s)
        finally:
            producer, self._producer = self._producer, None
            if producer is not None:
                self._failures_before += producer.unobserved_failures
            if self._let_go is not None:
                self._let_go.detach()
                self._let_go = None
            if self._watcher is not None:
                self._watcher.stop()
                self._watcher = None

    def __enter__(self) -> Conveyor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def lookup(self, job_id: str) -> JobInfo | None:
        """A job's state and timeline by its id, looked for in the queues
        this app may enqueue to (see `conveyor.lookup`);
        None when it is not found. (Not `job`: that name registers handlers.)"""
        return find(self.settings, job_id, sorted(self.queues()))

    def cancel(self, job_id: str, queue: str | None = None) -> str:
        """Asks for job `job_id` to be cancelled (see `conveyor.cancellation`),
        in `queue` or where it is found among this app's queues (all of them
        while it is not found: it may still be in Kafka). Returns its state
        when asked; `done`, `dead` or `cancelled` mean nothing was changed."""
        queues = [queue] if queue is not None else sorted(self.queues())
        return cancel(self.settings, job_id, queues)[0]

    def result(self, job_id: str, timeout_s: float | None = None) -> Any:
        """Job `job_id`'s result (see `JobHandle.result`), read in the queues
        of this app's job types that keep results."""
        return results.wait(job_id, app_result_reader(self, job_id), timeout_s)

    async def result_async(self, job_id: str, timeout_s: float | None = None) -> Any:
        """`result` for async code: awaits without blocking the event loop."""
        return await results.wait_async(job_id, app_result_reader(self, job_id), timeout_s)

    def publish_registry(self) -> int:
        """Record this application's job types in Redis, where gates learn
        which types exist and their queues. Returns how many types the
        registry holds. Workers call this when they start."""
        entries = [
            (
                name,
                json.dumps(
                    {
                        "queue": j.options.queue,
                        "max_attempts": j.options.max_attempts,
                        "timeout_s": j.options.timeout_s,
                    }
                ),
            )
            for name, j in sorted(self._jobs.items())
        ]
        store = _core.RedisStore(self.settings.redis_url)
        return store.publish_registry(self.settings.namespace, entries)

    # Topics

    def ensure_topics(self, queues: Iterable[str] | None = None) -> list[str]:
        """Create the Kafka topics of `queues` (default: all known) that do not
        exist, with the configured partitions and replication. Returns the
        topics created."""
        s = self.settings
        created = []
        for queue in sorted(set(queues) if queues is not None else self.queues()):
            _core.check_queue_name(queue)
            topic = s.topic_for(queue)
            if _core.kafka_create_topic(
                s.kafka_bootstrap,
                topic,
                s.topic_partitions,
                s.topic_replication,
                properties=list(s.kafka_properties),
            ):
                created.append(topic)
        return created


def _after_fork_in_child() -> None:
    for app in list(_LIVE_APPS):
        app._forget_producer_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _flush_at_exit() -> None:
    # Jobs handed to the producer but not yet written must not vanish at exit:
    # wait as long as a delivery may take, then say what failed.
    for app in list(_LIVE_APPS):
        try:
            app.flush(timeout_s=app.settings.delivery_timeout_s + 5.0)
        except ConveyorError as err:
            print(f"conveyor: at exit: {err}", file=sys.stderr)
