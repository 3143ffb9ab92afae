"""Telemetry: a worker's metrics count outcomes and run time per queue and
job type (a bounded label set: Rust unit tests hold the bound) and give the
depth of each queue it serves; `--log-format json` logs one JSON object per
line, with the job's id and type on every line logged while it runs."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest
import redis

import conveyor
from conveyor import _core
from conveyor.devservers import RedisServer
from tests.helpers.ports import fixed_port
from tests.helpers.waiting import wait_until
from tests.helpers.workers import spawn_worker

pytestmark = pytest.mark.servers

DIRECT = conveyor.Route(kafka_percent=0)


def _series(metrics: str, name: str) -> dict[str, float]:
    """`{labels: value}` of one metric in Prometheus text."""
    out = {}
    for line in metrics.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match:
            out[match.group(1)] = float(match.group(2))
    return out


@pytest.mark.timeout(60)
def test_worker_metrics_by_queue_and_job_type(app: conveyor.Conveyor) -> None:
    @app.job("tm.ok")
    def ok() -> None:
        pass

    @app.job("tm.bad", max_attempts=1)
    def bad() -> None:
        raise ValueError("no")

    for name in ("tm.ok", "tm.bad"):
        app.set_route(name, DIRECT)
    worker = conveyor.Worker(app, threads=1)
    for _ in range(3):
        ok.enqueue()
    bad.enqueue()
    ok.enqueue_with((), delay=600)
    depth = _series(worker.metrics(), "conveyor_queue_jobs")
    assert depth['queue="default",state="queued"'] == 4
    assert depth['queue="default",state="scheduled"'] == 1
    assert depth['queue="default",state="dead"'] == 0
    worker.start()
    try:
        wait_until(lambda: worker.stats()["done"] + worker.stats()["dead"] == 4, 20, "all ran")
    finally:
        worker.stop(grace_s=5)
    metrics = worker.metrics()
    jobs = _series(metrics, "conveyor_worker_type_jobs_total")
    assert jobs['queue="default",type="tm.ok",outcome="done"'] == 3
    assert jobs['queue="default",type="tm.bad",outcome="dead"'] == 1
    assert jobs['queue="default",type="tm.bad",outcome="done"'] == 0
    run = _series(metrics, "conveyor_worker_type_run_seconds_total")
    assert set(run) == {'queue="default",type="tm.ok"', 'queue="default",type="tm.bad"'}
    depth = _series(metrics, "conveyor_queue_jobs")
    assert depth['queue="default",state="queued"'] == 0
    assert depth['queue="default",state="dead"'] == 1


def test_metrics_are_served_while_redis_is_away(tmp_path: Path) -> None:
    own = RedisServer(port=fixed_port(26684), home=tmp_path / "redis")
    own.up()
    try:
        queues = _core.WorkQueues(own.url, "", [("default", 1)])
        assert 'conveyor_queue_jobs{queue="default",state="queued"} 0' in queues.metrics()
    finally:
        own.down()
    metrics = queues.metrics()
    assert "conveyor_worker_jobs_total" in metrics, "the process' own metrics still served"
    assert "# conveyor_queue_jobs not read: " in metrics


@pytest.mark.timeout(60)
def test_json_logs_carry_the_job(app: conveyor.Conveyor) -> None:
    s = app.settings
    env = {"CONVEYOR_REDIS_URL": s.redis_url, "CONVEYOR_NAMESPACE": s.namespace}
    envelope = conveyor.Envelope("test.log", b'{"args": [7], "kwargs": {}}')
    _core.RedisStore(s.redis_url).admit(s.namespace, "default", [envelope.encode()])
    worker = spawn_worker(env, "--log-format", "json", "--threads", "1")
    client = redis.Redis.from_url(s.redis_url)
    try:
        wait_until(lambda: client.hexists(f"test:{s.namespace}:runs", "7"), 30, "the job ran")
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    assert lines, err.decode()[-2000:]
    (handled,) = [line for line in lines if line["message"] == "handling 7"]
    assert handled["job_id"] == envelope.id
    assert handled["job_type"] == "test.log"
    assert handled["queue"] == "default"
    assert handled["attempt"] == 1
    assert handled["logger"] == "worker_app"
    assert handled["time"].endswith("Z")
    assert all("job_id" not in line for line in lines if line is not handled), "only job lines"
