"""`conveyor replay`: a time range of a queue's jobs, read back from Kafka and
admitted into Redis again (what an operator does after a bad deploy or a lost
Redis)."""

from __future__ import annotations

import datetime
import time

import pytest
from confluent_kafka import Producer

import conveyor
from conveyor import _core
from tests.helpers.cli import conveyor as conveyor_cli

pytestmark = pytest.mark.servers


def ready_ids(app: conveyor.Conveyor) -> list[str]:
    store = _core.RedisStore(app.settings.redis_url)
    ns = app.settings.namespace
    raw = store.peek_ready(ns, "default", store.ready_len(ns, "default"))
    return [e.id for e in conveyor.decode_many(raw)]


def test_replay_admits_the_jobs_of_a_time_range_again(app: conveyor.Conveyor) -> None:
    before = app.enqueue_many("r.a", [[i] for i in range(30)])
    before.wait(30)
    time.sleep(1.2)
    middle = datetime.datetime.now(datetime.timezone.utc).isoformat()
    time.sleep(0.2)
    raw = Producer({"bootstrap.servers": app.settings.kafka_bootstrap})
    raw.produce(app.settings.topic_for("default"), b"not an envelope")  # skipped, counted
    raw.flush(10)
    later_a = app.enqueue_many("r.a", [[i] for i in range(20)])
    later_b = app.enqueue_many("r.b", [[i] for i in range(10)])
    later_a.wait(30)
    later_b.wait(30)
    env = {
        "CONVEYOR_KAFKA_BOOTSTRAP": app.settings.kafka_bootstrap,
        "CONVEYOR_REDIS_URL": app.settings.redis_url,
        "CONVEYOR_NAMESPACE": app.settings.namespace,
    }
    assert ready_ids(app) == [], "no relay runs: Redis holds only what replay puts in"
    done = conveyor_cli("replay", "default", "--from", middle, env=env)
    assert done.returncode == 0, done.stderr
    assert "30 jobs queued" in done.stdout
    assert "1 not envelopes (skipped)" in done.stdout
    assert sorted(ready_ids(app)) == sorted(later_a.ids + later_b.ids)

    _core.RedisStore(app.settings.redis_url).purge(app.settings.namespace, "default")
    only_b = conveyor_cli("replay", "default", "--from", "1h", "--type", "r.b", env=env)
    assert only_b.returncode == 0, only_b.stderr
    assert sorted(ready_ids(app)) == sorted(later_b.ids)


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--from", "last tuesday"], "neither an ISO 8601 time"),
        (["--from", "1h", "--to", "2h"], "--to must come after --from"),
        (["--from", "1h", "--queue-is-not-an-option"], "unrecognized arguments"),
    ],
)
def test_replay_refuses_bad_times_with_a_reason(
    app: conveyor.Conveyor, argv: list[str], reason: str
) -> None:
    done = conveyor_cli("replay", "default", *argv, env={"CONVEYOR_NAMESPACE": "x"})
    assert done.returncode != 0
    assert reason in done.stderr
    assert "Traceback" not in done.stderr
