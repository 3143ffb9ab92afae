"""Type stubs for the private native module; `make lint` checks them against the build."""

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, final

__all__ = [
    "ENVELOPE_VERSION",
    "ERROR_CODES",
    "MAX_PAYLOAD_LEN",
    "MAX_SCHEDULE_AHEAD_US",
    "STAGES",
    "DeliveryHandle",
    "Envelope",
    "Gate",
    "KafkaProducer",
    "KafkaRecord",
    "LeasedBatch",
    "RedisStore",
    "Relay",
    "WorkQueues",
    "append_stage",
    "check_job_type",
    "check_kafka_percent",
    "check_queue_name",
    "check_registry_entry",
    "check_relay_control",
    "check_route",
    "check_trace_context",
    "dead_letter_topic",
    "decode_call",
    "decode_many",
    "encode_call",
    "encode_many",
    "kafka_cluster_info",
    "kafka_create_topic",
    "kafka_delete_topics",
    "kafka_end_offsets",
    "kafka_offsets_for_time",
    "kafka_read_partition",
    "new_job_id",
    "queue_topic",
    "relay_group",
    "render_gauge",
]

ENVELOPE_VERSION: int
ERROR_CODES: list[str]
MAX_SCHEDULE_AHEAD_US: int
MAX_PAYLOAD_LEN: int
STAGES: list[tuple[int, str]]

@final
class Envelope:
    """A job envelope. Immutable; timestamps are microseconds since the Unix epoch."""

    def __new__(
        cls,
        job_type: str,
        payload: bytes,
        *,
        id: str | None = None,
        attempt: int = 0,
        enqueued_at_us: int | None = None,
        run_at_us: int | None = None,
        dedup_key: str | None = None,
        trace_context: str | None = None,
        stages: list[tuple[int, int]] = ...,
    ) -> Envelope: ...
    @staticmethod
    def decode(data: bytes) -> Envelope: ...
    def encode(self) -> bytes: ...
    @property
    def id(self) -> str: ...
    @property
    def job_type(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def enqueued_at_us(self) -> int: ...
    @property
    def run_at_us(self) -> int | None: ...
    @property
    def dedup_key(self) -> str | None: ...
    @property
    def trace_context(self) -> str | None: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def stages(self) -> list[tuple[int, int]]: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __ne__(self, other: object, /) -> bool: ...

def encode_many(envelopes: list[Envelope]) -> list[bytes]: ...
def decode_many(data: list[bytes]) -> list[Envelope]: ...
def new_job_id() -> str: ...
def append_stage(data: bytes, code: int, at_us: int) -> bytes: ...
def check_job_type(name: str) -> None: ...
def decode_call(payload: bytes) -> tuple[list[Any], dict[str, Any]] | None: ...
def encode_call(
    args: list[Any] | tuple[Any, ...],
    kwargs: dict[str, Any] | None = None,
    max_payload_bytes: int = ...,
) -> bytes: ...
def check_queue_name(name: str) -> None: ...
def queue_topic(prefix: str, namespace: str, queue: str) -> str: ...
def check_kafka_percent(percent: float) -> None: ...
def check_route(job_type: str, text: str) -> tuple[float, bool]: ...
def check_relay_control(field: str, value: str) -> None: ...
def check_registry_entry(job_type: str, options: str) -> str: ...
def check_trace_context(trace: str) -> None: ...
def dead_letter_topic(topic: str) -> str: ...
def relay_group(namespace: str) -> str: ...
def kafka_cluster_info(
    bootstrap: str, timeout_s: float = 5.0, properties: list[tuple[str, str]] | None = None
) -> tuple[str | None, list[tuple[int, str, int]], list[str]]: ...
def kafka_create_topic(
    bootstrap: str,
    name: str,
    partitions: int,
    replication: int | None = None,
    timeout_s: float = 10.0,
    properties: list[tuple[str, str]] | None = None,
    configs: list[tuple[str, str]] | None = None,
) -> bool: ...
def kafka_delete_topics(
    bootstrap: str,
    names: list[str],
    timeout_s: float = 30.0,
    properties: list[tuple[str, str]] | None = None,
) -> int: ...
def kafka_read_partition(
    bootstrap: str,
    topic: str,
    partition: int,
    from_offset: int,
    max: int,
    timeout_s: float = 5.0,
    properties: list[tuple[str, str]] | None = None,
) -> list[KafkaRecord]: ...
def kafka_offsets_for_time(
    bootstrap: str,
    topic: str,
    at_ms: int,
    timeout_s: float = 10.0,
    properties: list[tuple[str, str]] | None = None,
) -> list[tuple[int, int]]: ...
def render_gauge(name: str, help: str, series: list[tuple[str, float]]) -> str: ...
def kafka_end_offsets(
    bootstrap: str,
    topic: str,
    timeout_s: float = 5.0,
    properties: list[tuple[str, str]] | None = None,
) -> list[tuple[int, int]]: ...

@final
class KafkaRecord:
    """A record read back from Kafka."""

    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp_ms(self) -> int | None: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes: ...
    @property
    def headers(self) -> list[tuple[str, bytes]]: ...

@final
class KafkaProducer:
    """A Kafka producer of envelopes."""

    def __new__(
        cls,
        bootstrap: str,
        *,
        acks: str = "all",
        delivery_timeout_s: float = 30.0,
        enqueue_timeout_s: float = 5.0,
        properties: list[tuple[str, str]] | None = None,
    ) -> KafkaProducer: ...
    def send(
        self,
        topic: str,
        job_type: str,
        payloads: list[bytes],
        *,
        dedup_keys: list[str | None] | None = None,
        run_at_us: int | None = None,
        trace_context: str | None = None,
        partition: int | None = None,
    ) -> DeliveryHandle: ...
    def send_call(
        self,
        topic: str,
        job_type: str,
        args: list[Any] | tuple[Any, ...],
        kwargs: dict[str, Any] | None = None,
        *,
        max_payload_bytes: int,
        dedup_key: str | None = None,
        run_at_us: int | None = None,
        trace_context: str | None = None,
        partition: int | None = None,
        job_id: str | None = None,
    ) -> DeliveryHandle: ...
    def send_calls(
        self,
        topic: str,
        job_type: str,
        calls: Iterable[Sequence[Any] | Mapping[str, Any]],
        *,
        max_payload_bytes: int,
        dedup_keys: list[str | None] | None = None,
        run_at_us: int | None = None,
        trace_context: str | None = None,
        partition: int | None = None,
    ) -> DeliveryHandle: ...
    def send_envelopes(
        self,
        topic: str,
        envelopes: list[Envelope],
        partition: int | None = None,
        *,
        double_written: bool = False,
    ) -> DeliveryHandle: ...
    def check_topic(self, topic: str) -> None: ...
    def take_failures(self, timeout_s: float = 1.0) -> list[tuple[str, str]]: ...
    def take_sent(self) -> list[tuple[str, int, int]]: ...
    @property
    def unobserved_failures(self) -> int: ...
    def flush(self, timeout_s: float = 30.0) -> None: ...

@final
class DeliveryHandle:
    """A batch of jobs handed to Kafka, awaiting the broker's acknowledgements."""

    @property
    def ids(self) -> list[str]: ...
    @property
    def id(self) -> str: ...
    def done(self) -> bool: ...
    def wait(self, timeout_s: float | None = None) -> list[tuple[int, int]]: ...
    def __len__(self) -> int: ...

@final
class RedisStore:
    """One connection to one Redis server."""

    def __new__(cls, url: str, *, timeout_s: float = 5.0) -> RedisStore: ...
    def server_info(self, section: str = "server") -> list[tuple[str, str]]: ...
    def admit(
        self, namespace: str, queue: str, envelopes: list[bytes], *, tally: bool = True
    ) -> tuple[int, int, int]: ...
    def peek_ready(self, namespace: str, queue: str, count: int) -> list[bytes]: ...
    def add_tally(
        self, namespace: str, queue: str, hop: str, counts: list[tuple[int, int]]
    ) -> None: ...
    def tallies(
        self, namespace: str, queue: str, first: int, last: int
    ) -> list[tuple[int, list[tuple[str, int]]]]: ...
    def purge(self, namespace: str, queue: str) -> None: ...
    def publish_registry(self, namespace: str, entries: list[tuple[str, str]]) -> int: ...
    def read_registry(self, namespace: str) -> list[tuple[str, str]]: ...
    def relayed_offsets(self, namespace: str, queue: str) -> list[tuple[str, int]]: ...
    def ready_len(self, namespace: str, queue: str) -> int: ...
    def set_relay_control(
        self,
        namespace: str,
        kind: str,
        topic: str,
        value: str | None = None,
        *,
        who: str = "",
        origin: str = "",
    ) -> str | None: ...
    def relay_controls(self, namespace: str) -> list[tuple[str, str]]: ...
    def set_route(
        self,
        namespace: str,
        job_type: str,
        route: tuple[float, bool] | None = None,
        *,
        who: str = "",
        origin: str = "",
    ) -> str | None: ...
    def control_history(self, namespace: str, routes: bool) -> list[str]: ...
    def lookup(
        self,
        namespace: str,
        queue: str,
        job_id: str,
        *,
        history_s: float = 300.0,
        history_max_bytes: int = 33554432,
        max_scan: int = 100000,
    ) -> str | None: ...
    def result(self, namespace: str, queue: str, job_id: str) -> bytes | None: ...
    def record_canary(self, namespace: str, queue: str, partition: int, record: str) -> None: ...
    def canaries(self, namespace: str, queue: str) -> list[tuple[int, str]]: ...
    def cancel(self, namespace: str, queue: str, job_id: str) -> bool: ...
    def routes(self, namespace: str) -> list[tuple[str, str]]: ...
    def relay_statuses(self, namespace: str) -> list[tuple[str, str]]: ...
    def relay_batch(
        self,
        namespace: str,
        queue: str,
        topic: str,
        partition: int,
        next_offset: int,
        records: list[tuple[int, bytes]],
        *,
        expect: int | None = None,
        scripted: bool = False,
    ) -> tuple[int, int, int, int, int | None]: ...
    def now_ms(self) -> int: ...
    def depth(self, namespace: str, queue: str) -> dict[str, int]: ...
    def counts(self, namespace: str, queue: str) -> dict[str, int]: ...
    def dead_letters(
        self, namespace: str, queue: str, count: int
    ) -> list[tuple[bytes, float, str | None]]: ...
    def replay_dead(self, namespace: str, queue: str, count: int) -> tuple[int, int]: ...
    def replay_dead_ids(
        self, namespace: str, queue: str, job_ids: list[str]
    ) -> tuple[int, int]: ...
    def forget_dead_ids(self, namespace: str, queue: str, job_ids: list[str]) -> int: ...
    def purge_dead(
        self, namespace: str, queue: str, *, older_than_s: float, keep: int, count: int
    ) -> int: ...
    def reap(self, namespace: str, queue: str) -> int: ...
    def enqueue_occurrence(
        self, namespace: str, queue: str, name: str, occurrence_ms: int, envelope: bytes
    ) -> bool: ...

@final
class Relay:
    """A running relay (Kafka topics into Redis queues)."""

    def __new__(
        cls,
        bootstrap: str,
        redis_url: str,
        routes: list[tuple[str, str]],
        *,
        namespace: str = "",
        group_id: str = "conveyor-relay",
        batch_max: int = 5000,
        batch_wait_s: float = 0.005,
        memory_high: float = 0.8,
        memory_low: float = 0.6,
        depth_high: int | None = None,
        depth_low: int = 0,
        properties: list[tuple[str, str]] | None = None,
        tallies: bool = True,
    ) -> Relay: ...
    def stats(self) -> dict[str, int]: ...
    def dead_letter_failures(self) -> list[str]: ...
    def ignored_controls(self) -> list[tuple[str, str, str]]: ...
    def running(self) -> bool: ...
    def assignment(self) -> list[tuple[str, int]]: ...
    def lag(self) -> list[tuple[str, int, int, int, int, int]]: ...
    def metrics(self) -> str: ...
    def stop(self) -> None: ...

@final
class Gate:
    """A running gate (HTTP enqueue service)."""

    def __new__(
        cls,
        bind: str,
        bootstrap: str,
        *,
        namespace: str = "",
        topic_prefix: str = "conveyor.",
        routes: dict[str, str] | None = None,
        registry_url: str | None = None,
        registry_refresh_s: float = 5.0,
        acks: str = "all",
        request_timeout_s: float = 5.0,
        delivery_timeout_s: float = 30.0,
        max_payload_bytes: int = 1048576,
        max_batch: int = 1000,
        token: str | None = None,
        tokens: list[tuple[str, str, list[str], list[str], bool, float | None]] | None = None,
        insecure: bool = False,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        properties: list[tuple[str, str]] | None = None,
        max_connections: int = 1024,
        header_timeout_s: float = 30.0,
        body_timeout_s: float = 30.0,
        tallies: bool = True,
    ) -> Gate: ...
    @property
    def address(self) -> str: ...
    @property
    def https(self) -> bool: ...
    def reload_tls(self) -> None: ...
    def set_tokens(
        self, tokens: list[tuple[str, str, list[str], list[str], bool, float | None]]
    ) -> None: ...
    def routes(self) -> dict[str, str]: ...
    def registry_ignored(self) -> list[str]: ...
    def stop(self, timeout_s: float = 30.0) -> None: ...

@final
class LeasedBatch:
    """Jobs leased by one fetch: `jobs[i]` is `(job_type, call, attempt)`,
    `call` the payload's `(args, kwargs)` as the fast reader read it at
    fetch, or None where it did not (`payload(i)` then gives the bytes)."""

    @property
    def queue(self) -> str: ...
    @property
    def jobs(self) -> list[tuple[str, tuple[list[Any], dict[str, Any]] | None, int]]: ...
    @property
    def token(self) -> str: ...
    @property
    def fetched_at(self) -> float: ...
    @property
    def malformed(self) -> int: ...
    def envelope(self, index: int) -> Envelope: ...
    def job_id(self, index: int) -> str: ...
    def payload(self, index: int) -> bytes: ...
    def begin(self, index: int) -> None:
        """Marks job `index` as starting now: its slot is reported with the
        next heartbeat, and its lease is renewed until its maximum age."""
    @property
    def begun(self) -> int | None:
        """The index of the job begun last (the running one, for a thread
        that runs the batch's jobs in order), or None before the first."""
    def cancel_asked(self, index: int) -> bool: ...
    def __len__(self) -> int: ...

@final
class WorkQueues:
    """A worker process's connection to its queues, shared by its threads."""

    def __new__(
        cls,
        redis_url: str,
        namespace: str,
        queues: list[tuple[str, int]],
        *,
        strict: bool = False,
        worker_id: str | None = None,
        lease_s: float = 30.0,
        max_age_s: dict[str, float] = ...,
        max_age_default_s: float = 3600.0,
        dead_max: int = 100000,
        dead_max_age_s: float = 2592000.0,
        history_s: float = 300.0,
        history_max_bytes: int = 33554432,
        result_ttl_s: dict[str, float] = ...,
        tallies: bool = True,
    ) -> WorkQueues: ...
    def fetch(self, max_jobs: int) -> LeasedBatch | None: ...
    def settle(
        self,
        batch: LeasedBatch,
        ends: list[float],
        failures: dict[int, tuple[str, float | None]],
        starts: list[float] | None = None,
        results: dict[int, tuple[bytes, float]] | None = None,
        cancelled: list[int] | None = None,
    ) -> tuple[int, int, int, int]: ...
    def settle_and_fetch(
        self,
        batch: LeasedBatch,
        ends: list[float],
        failures: dict[int, tuple[str, float | None]],
        max_jobs: int,
        starts: list[float] | None = None,
        results: dict[int, tuple[bytes, float]] | None = None,
        cancelled: list[int] | None = None,
    ) -> tuple[tuple[int, int, int, int], LeasedBatch | None]:
        """`settle`, then the next batch of up to `max_jobs` (None when the
        queues are empty), in one round trip when it comes from the same queue."""
    def abandon(self, batch: LeasedBatch) -> None: ...
    def start_keeper(self) -> None: ...
    def stop_keeper(self) -> None: ...
    def take_events(self) -> list[str]: ...
    def heartbeat(self) -> list[str]: ...
    def reap(self) -> int: ...
    def wait_for_work(self, timeout_s: float) -> bool: ...
    def held(self) -> int: ...
    def stats(self) -> dict[str, int]: ...
    def metrics(self) -> str: ...
