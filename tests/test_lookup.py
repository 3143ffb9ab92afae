"""Finding a job by its id (`app.lookup`, `conveyor job`): queued, scheduled,
running, retrying, done and dead jobs each show their state and timeline
(Kafka partition and offset, relayed, every attempt); an unknown id is
"not found", a malformed one refused; with the history off, ended jobs are
not kept."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest

import conveyor
from conveyor.devservers import DevServers
from tests.helpers.cli import conveyor as conveyor_cli
from tests.helpers.gate import start_gate
from tests.helpers.relay import start_relay, wait_until
from tests.test_gate_access import Token

pytestmark = pytest.mark.servers


def _state(app: conveyor.Conveyor, job_id: str) -> str | None:
    info = app.lookup(job_id)
    return None if info is None else info.state


@pytest.mark.timeout(120)
def test_a_job_can_be_found_by_id_in_every_state(app: conveyor.Conveyor) -> None:
    release = threading.Event()
    tries: dict[str, int] = {}

    @app.job("lk.ok")
    def ok() -> None:
        pass

    @app.job("lk.flaky", backoff_s=0.2)
    def flaky() -> None:
        tries["flaky"] = tries.get("flaky", 0) + 1
        if tries["flaky"] == 1:
            raise RuntimeError("first try fails")

    @app.job("lk.bad", max_attempts=2, backoff_s=0.1)
    def bad() -> None:
        raise ValueError("always")

    @app.job("lk.hold")
    def hold() -> None:
        release.wait(60)

    relay = start_relay(app)
    worker = conveyor.Worker(app, threads=2)
    try:
        queued = ok.enqueue()
        queued.wait(10)
        wait_until(lambda: _state(app, queued.id) == "queued", 20, "found queued")
        later = ok.enqueue_with((), delay=600)
        later.wait(10)
        wait_until(lambda: _state(app, later.id) == "scheduled", 20, "found scheduled")
        worker.start()
        held = hold.enqueue()
        wait_until(lambda: _state(app, held.id) == "running", 20, "found running")
        ids = {name: job.enqueue().id for name, job in (("ok", ok), ("flaky", flaky), ("bad", bad))}
        wait_until(lambda: _state(app, ids["ok"]) == "done", 20, "found done")
        wait_until(lambda: _state(app, ids["flaky"]) == "done", 20, "retried, then done")
        wait_until(lambda: _state(app, ids["bad"]) == "dead", 20, "found dead")
    finally:
        release.set()
        worker.stop(grace_s=5)
        relay.stop()

    _check_timelines(app, ids)
    _check_cli(app, ids)


def _check_timelines(app: conveyor.Conveyor, ids: dict[str, str]) -> None:
    done = app.lookup(ids["flaky"])
    assert done is not None
    assert done.job_type == "lk.flaky"
    assert done.queue == "default"
    assert done.attempts == 2
    stages = [stage for stage, _ in done.timeline]
    assert stages[:3] == ["enqueued", "kafka", "relayed"], stages
    assert stages.count("started") == 1, "the leased envelope of the retry: one start"
    assert "failed" in stages
    assert stages[-1] == "done"
    times = [at for _, at in done.timeline]
    assert times == sorted(times), done.timeline
    assert done.kafka is not None
    assert done.kafka[1] >= 0
    dead = app.lookup(ids["bad"])
    assert dead is not None
    assert dead.attempts == 2
    assert dead.error is not None
    assert "always" in str(dead.error)


def _check_cli(app: conveyor.Conveyor, ids: dict[str, str]) -> None:
    env = {
        "CONVEYOR_REDIS_URL": app.settings.redis_url,
        "CONVEYOR_NAMESPACE": app.settings.namespace,
    }
    shown = conveyor_cli("job", ids["bad"], env=env)
    assert shown.returncode == 0, shown.stderr
    assert f"job {ids['bad']}: dead" in shown.stdout
    assert "Kafka partition" in shown.stdout
    assert "always" in shown.stdout
    unknown = conveyor.Envelope("lk.ok", b"{}").id  # a valid id never enqueued
    missing = conveyor_cli("job", unknown, env=env)
    assert missing.returncode == 1
    assert "not found" in missing.stdout
    malformed = conveyor_cli("job", "not-an-id", env=env)
    assert malformed.returncode == 2
    assert "26 characters" in malformed.stderr


def test_with_the_history_off_ended_jobs_are_not_kept(servers: DevServers, namespace: str) -> None:
    app = conveyor.Conveyor(
        conveyor.Settings(
            kafka_bootstrap=servers.kafka.bootstrap,
            redis_url=servers.redis.url,
            namespace=namespace,
            job_history_s=0,
        )
    )
    app.job("lk.off")(lambda: None)
    app.ensure_topics()
    relay = start_relay(app)
    worker = conveyor.Worker(app, threads=1)
    try:
        worker.start()
        handle = app.enqueue("lk.off", [])
        handle.wait(10)
        wait_until(lambda: worker.stats()["done"] == 1, 20, "the job done")
        assert app.lookup(handle.id) is None
    finally:
        worker.stop(grace_s=5)
        relay.stop()
        app.close()


@pytest.mark.timeout(120)
def test_the_gate_answers_a_lookup_within_the_token_scope(app: conveyor.Conveyor) -> None:
    app.job("lk.gate")(lambda: None)
    app.publish_registry()
    svc: Token = ("svc", "s" * 32, ["lk.*"], [], False, None)
    other: Token = ("other", "o" * 32, ["zz.*"], [], False, None)
    gate = start_gate(app, tokens=[svc, other])
    relay = start_relay(app)
    worker = conveyor.Worker(app, threads=1)
    try:
        worker.start()
        handle = app.enqueue("lk.gate", [])
        handle.wait(10)
        wait_until(lambda: _state(app, handle.id) == "done", 20, "the job done")

        def ask(job_id: str, token: str | None) -> tuple[int, dict[str, Any]]:
            request = urllib.request.Request(f"http://{gate.address}/v1/jobs/{job_id}")
            if token:
                request.add_header("Authorization", f"Bearer {token}")
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as err:
                return err.code, json.loads(err.read())

        status, job = ask(handle.id, svc[1])
        assert status == 200, job
        assert job["state"] == "done"
        assert job["type"] == "lk.gate"
        assert [stage for stage, _ in job["timeline"]][-1] == "done"
        # Out of scope reads exactly as absent; no token, no answer.
        never = conveyor.Envelope("lk.gate", b"{}").id
        assert ask(handle.id, other[1]) == ask(never, svc[1])
        assert ask(never, svc[1])[0] == 404
        assert ask(handle.id, None)[0] == 401
        status, refused = ask("not-an-id", svc[1])
        assert status == 400
        assert "26 characters" in str(refused["error"])
    finally:
        worker.stop(grace_s=5)
        relay.stop()
        gate.stop()
