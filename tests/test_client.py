"""The Python client: register job types, enqueue them through the Rust producer,
and read back exactly what was sent with an independent Kafka client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

import conveyor
from conveyor import _core
from conveyor.devservers import DevServers
from conveyor.errors import DeliveryError, InvalidJobError, UnknownTopicError
from tests.helpers.cli import conveyor as conveyor_cli
from tests.helpers.kafka_reader import read_all

pytestmark = pytest.mark.servers


@pytest.fixture
def app(servers: DevServers, namespace: str) -> Iterator[conveyor.Conveyor]:
    settings = conveyor.Settings(
        kafka_bootstrap=servers.kafka.bootstrap,
        redis_url=servers.redis.url,
        namespace=namespace,
        queues=("default", "billing"),
    )
    app = conveyor.Conveyor(settings)
    assert sorted(app.ensure_topics()) == [
        settings.topic_for("billing"),
        settings.topic_for("default"),
    ]
    yield app
    app.close()


def test_registered_job_is_enqueued_exactly_as_sent(app: conveyor.Conveyor) -> None:
    @app.job("billing.charge", queue="billing", max_attempts=3)
    def charge(invoice: str, amount_cents: int, note: str = "") -> None:
        """Charge an invoice."""

    sent = charge.enqueue("inv-1", 1250, note='café ☃ "quoted"')
    assert len(sent.id) == 26
    [(partition, offset)] = sent.wait(10)
    [record] = read_all(app.settings.kafka_bootstrap, app.settings.topic_for("billing"), 1)
    assert (record.partition, record.offset) == (partition, offset)
    env = conveyor.Envelope.decode(record.value)
    assert env.id == sent.id
    assert env.job_type == "billing.charge"
    assert env.attempt == 0
    assert json.loads(env.payload) == {
        "args": ["inv-1", 1250],
        "kwargs": {"note": 'café ☃ "quoted"'},
    }
    assert record.headers["cv-type"] == b"billing.charge"
    assert record.headers["cv-id"] == sent.id.encode()
    # LogAppendTime: the record's time is the broker's, not before we enqueued.
    assert record.timestamp_ms * 1000 >= env.enqueued_at_us - 1000
    assert charge("inv-2", 1) is None, "calling the job type runs the handler here"


def test_bad_arguments_are_refused_before_anything_is_sent(app: conveyor.Conveyor) -> None:
    @app.job("strict.job")
    def strict(a: int, b: int) -> None: ...

    with pytest.raises(InvalidJobError, match="arguments do not fit"):
        strict.enqueue(1)  # type: ignore[call-arg]
    with pytest.raises(InvalidJobError, match="not JSON-encodable"):
        strict.enqueue(1, object())  # type: ignore[arg-type]
    with pytest.raises(InvalidJobError, match="over the limit"):
        strict.enqueue(1, "x" * (app.settings.max_payload_bytes + 1))  # type: ignore[arg-type]
    with pytest.raises(InvalidJobError, match="unknown queue"):
        app.enqueue("some.type", [1], queue="nowhere")
    with pytest.raises(InvalidJobError, match="job type"):
        app.enqueue("9 bad name", [1])
    with pytest.raises(InvalidJobError, match="not both"):
        strict.enqueue_with((1, 2), delay=1, run_at=time.time())
    with pytest.raises(InvalidJobError, match="timezone-aware"):
        strict.enqueue_with((1, 2), run_at=datetime(2030, 1, 1))
    assert read_all(app.settings.kafka_bootstrap, app.settings.topic_for("default"), 1, 2) == []


def test_registration_rules(app: conveyor.Conveyor) -> None:
    app.job("dup.type")(lambda: None)
    with pytest.raises(InvalidJobError, match="already registered"):
        app.job("dup.type")(lambda: None)
    with pytest.raises(InvalidJobError, match="queue name"):
        app.job("x.y", queue="bad:queue")
    with pytest.raises(InvalidJobError, match="max_attempts"):
        app.job("x.z", max_attempts=0)


def test_enqueue_many_keeps_order_per_partition_and_dedup_keys_pin_partitions(
    app: conveyor.Conveyor,
) -> None:
    @app.job("fanout.message")
    def fanout(user: int, text: str) -> None: ...

    calls = [(i, f"hello {i}") if i % 2 else {"user": i, "text": f"hello {i}"} for i in range(2000)]
    keys = [f"user-{(i // 4) % 10}" if i % 4 == 0 else None for i in range(2000)]
    sent = fanout.enqueue_many(calls, dedup_keys=keys)
    delivered = sent.wait(20)
    assert len(set(sent.ids)) == 2000
    records = read_all(app.settings.kafka_bootstrap, app.settings.topic_for("default"), 2000)
    assert len(records) == 2000
    by_id = {conveyor.Envelope.decode(r.value).id: r for r in records}
    assert set(by_id) == set(sent.ids)
    assert [(by_id[i].partition, by_id[i].offset) for i in sent.ids] == delivered
    per_partition: dict[int, list[str]] = defaultdict(list)
    for job_id, record in sorted(by_id.items(), key=lambda kv: kv[1].offset):
        per_partition[record.partition].append(job_id)
    for ids in per_partition.values():
        assert ids == sorted(ids), "within a partition, jobs keep the order they were sent"
    key_partitions: dict[bytes, set[int]] = defaultdict(set)
    for r in records:
        if r.key is not None:
            key_partitions[r.key].add(r.partition)
    assert len(key_partitions) == 10
    assert all(len(p) == 1 for p in key_partitions.values())


def test_plain_enqueue_without_handler_code_and_run_at(app: conveyor.Conveyor) -> None:
    at = datetime.now(timezone.utc) + timedelta(hours=1)
    first = app.enqueue(
        "remote.type",
        ["a"],
        {"b": 2},
        dedup_key="k1",
        run_at=at,
        trace_context="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    second = app.enqueue("remote.type", [], delay=timedelta(seconds=90))
    first.wait(10)
    second.wait(10)
    records = read_all(app.settings.kafka_bootstrap, app.settings.topic_for("default"), 2)
    envs = {e.id: e for e in (conveyor.Envelope.decode(r.value) for r in records)}
    assert envs[first.id].run_at_us == int(at.timestamp() * 1_000_000)
    assert envs[first.id].dedup_key == "k1"
    assert envs[first.id].trace_context is not None
    delayed = envs[second.id]
    assert delayed.run_at_us is not None
    assert 89e6 <= delayed.run_at_us - delayed.enqueued_at_us <= 91e6


def test_missing_topic_is_a_clear_error_at_once(servers: DevServers, namespace: str) -> None:
    app = conveyor.Conveyor(
        conveyor.Settings(kafka_bootstrap=servers.kafka.bootstrap, namespace=namespace)
    )
    started = time.monotonic()
    with pytest.raises(UnknownTopicError, match="conveyor topics create"):
        app.enqueue("any.type", [])
    assert time.monotonic() - started < 6


def test_flush_delivers_everything_not_waited_for(app: conveyor.Conveyor) -> None:
    ids = [app.enqueue("fire.and.forget", [i]).id for i in range(500)]
    app.flush(20)
    records = read_all(app.settings.kafka_bootstrap, app.settings.topic_for("default"), 500)
    assert {conveyor.Envelope.decode(r.value).id for r in records} == set(ids)


def test_acks_arrive_after_a_burst_of_single_sends_stops(app: conveyor.Conveyor) -> None:
    # While single sends keep coming they serve delivery reports themselves
    # and the polling thread steps aside; once they stop, nobody sends, so
    # the thread must take over or these waits would time out.
    handles = [app.enqueue("burst.job", [i]) for i in range(20_000)]
    started = time.monotonic()
    delivered = [h.wait(10) for h in reversed(handles)]
    assert len(delivered) == 20_000
    # The broker acked within milliseconds; a report left unserved would
    # only have been found by the wait's own timeout.
    assert time.monotonic() - started < 5
    # And a lone send on a quiet producer is acked promptly as well.
    time.sleep(0.2)
    started = time.monotonic()
    app.enqueue("lone.job", []).wait(10)
    assert time.monotonic() - started < 2


def test_delivery_failures_are_never_swallowed(servers: DevServers, topic: str) -> None:
    # Records over the producer's message.max.bytes: Kafka cannot take these
    # jobs. (A partition the topic lacks is refused before sending, with
    # InvalidJobError: see test_gate_refusals.)
    producer = _core.KafkaProducer(
        servers.kafka.bootstrap, delivery_timeout_s=5, properties=[("message.max.bytes", "2000")]
    )
    big = b'{"pad":"' + b"x" * 3000 + b'"}'
    failed = producer.send(topic, "x.y", [big] * 3)
    with pytest.raises(DeliveryError, match="3 job"):
        failed.wait(10)
    # Not waited for: the failure surfaces at the next flush instead.
    dropped = producer.send(topic, "x.y", [big] * 2)
    lost_ids = dropped.ids
    del dropped
    with pytest.raises(DeliveryError, match="2 job") as err:
        producer.flush(10)
    assert all(i in str(err.value) for i in lost_ids)
    producer.flush(10)  # reported once, then clear
    assert producer.send(topic, "x.y", [b"{}"]).wait(10)


def test_forked_child_gets_a_working_producer(app: conveyor.Conveyor) -> None:
    app.enqueue("before.fork", []).wait(10)
    code = f"""
import os, sys
sys.path[:0] = {sys.path!r}
import conveyor
app = conveyor.Conveyor(conveyor.Settings(kafka_bootstrap={app.settings.kafka_bootstrap!r},
                                          namespace={app.settings.namespace!r}))
app.enqueue("parent.job", []).wait(10)
pid = os.fork()
if pid == 0:
    try:
        app.enqueue("child.job", []).wait(10)
        os._exit(0)
    except BaseException as err:
        print("child failed:", err, flush=True)
        os._exit(3)
_, status = os.waitpid(pid, 0)
app.enqueue("parent.after", []).wait(10)
sys.exit(os.waitstatus_to_exitcode(status))
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    records = read_all(app.settings.kafka_bootstrap, app.settings.topic_for("default"), 4)
    types = sorted(conveyor.Envelope.decode(r.value).job_type for r in records)
    assert types == ["before.fork", "child.job", "parent.after", "parent.job"]


def test_topics_cli_creates_and_lists(servers: DevServers, namespace: str) -> None:
    env = {"CONVEYOR_KAFKA_BOOTSTRAP": servers.kafka.bootstrap, "CONVEYOR_NAMESPACE": namespace}
    first = conveyor_cli("topics", "create", "emails", "--partitions", "2", env=env)
    assert first.returncode == 0, first.stderr
    assert f"conveyor.{namespace}.emails" in first.stdout
    assert "created" in first.stdout
    again = conveyor_cli("topics", "create", "emails", env=env)
    assert "exists" in again.stdout
    listed = conveyor_cli("topics", "list", env=env)
    assert f"conveyor.{namespace}.emails" in listed.stdout.split()
    bad = conveyor_cli("topics", "create", "bad:name", env=env)
    assert bad.returncode == 2
    assert "queue name" in bad.stderr


def test_delete_topics_removes_them_and_ignores_missing(
    servers: DevServers, namespace: str
) -> None:
    bootstrap = servers.kafka.bootstrap
    name = f"{namespace}.to-delete"
    assert _core.kafka_create_topic(bootstrap, name, 1)
    assert _core.kafka_delete_topics(bootstrap, [name, f"{namespace}.never-made"]) == 1
    deadline = time.monotonic() + 10
    while name in _core.kafka_cluster_info(bootstrap)[2] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert name not in _core.kafka_cluster_info(bootstrap)[2]
