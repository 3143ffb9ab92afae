"""The dashboard's API through the real servers: a token is required (and
compared whole), a read-only dashboard refuses every change, bad requests
get a 4xx with a reason, a selection of dead letters is replayed or deleted
by id, pause/resume/throttle enter the control history as the dashboard's,
and the page may not be framed. The page itself is driven in Chromium by
test_dashboard_browser.py."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

import conveyor
from conveyor import _core
from conveyor.dashboard import Dashboard
from conveyor.errors import ConfigError
from tests.helpers.cli import conveyor as conveyor_cli
from tests.helpers.relay import start_relay
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.servers
TOKEN = "dash-token-0123456789"


def call(
    dashboard: Dashboard,
    path: str,
    body: object = None,
    token: str | None = TOKEN,
    raw: bytes | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """`(status, JSON answer, headers)` of a GET (no body) or POST."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{dashboard.address}{path}", data=data)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
            return response.status, json.loads(text or b"{}"), dict(response.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


@pytest.fixture
def dashboard(app: conveyor.Conveyor) -> Iterator[Dashboard]:
    d = Dashboard(
        app.settings, TOKEN, address=("127.0.0.1", 0), queues=["default"], sample_every_s=0.3
    )
    d.start()
    yield d
    d.stop()


def _dead_jobs(app: conveyor.Conveyor, count: int) -> list[str]:
    """`count` jobs of type dash.fails dead in `default` (run by a worker)."""
    healed = threading.Event()

    @app.job("dash.fails", max_attempts=1)
    def fails(n: int) -> None:
        if not healed.is_set():
            raise ValueError(f"not yet {n}")

    relay = start_relay(app)
    worker = conveyor.Worker(app, threads=2)
    worker.start()
    try:
        ids = [fails.enqueue(n).id for n in range(count)]
        app.flush()
        store = _core.RedisStore(app.settings.redis_url)
        wait_until(
            lambda: store.depth(app.settings.namespace, "default")["dead"] == count, 30, "dead"
        )
    finally:
        worker.stop(grace_s=2)
        relay.stop()
    return ids


def test_the_api_wants_the_whole_token(dashboard: Dashboard) -> None:
    assert call(dashboard, "/api/overview", token=None)[0] == 401
    assert call(dashboard, "/api/overview", token=TOKEN[:-1])[0] == 401
    assert call(dashboard, "/api/overview", token=TOKEN + "x")[0] == 401
    status, answer, _ = call(dashboard, "/api/overview")
    assert status == 200
    assert [q["name"] for q in answer["queues"]] == ["default"]
    assert answer["read_only"] is False
    assert call(dashboard, "/api/nothing")[0] == 404


def test_the_page_holds_no_data_and_may_not_be_framed(dashboard: Dashboard) -> None:
    with urllib.request.urlopen(f"http://{dashboard.address}/", timeout=10) as page:
        html = page.read().decode()
        headers = {k.lower(): v for k, v in page.headers.items()}
    assert '<script src="/dashboard.js">' in html
    assert headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "script-src" not in headers["content-security-policy"], "scripts only from 'self'"


def test_bad_requests_get_a_reason(dashboard: Dashboard) -> None:
    cases: list[tuple[str, object, bytes | None, int, str]] = [
        ("/api/dead/replay", None, b"{nope", 400, "JSON"),
        ("/api/dead/replay", [1, 2], None, 400, "object"),
        ("/api/dead/replay", {"queue": "default", "ids": "x"}, None, 400, "ids"),
        ("/api/dead/replay", {"queue": "nope", "ids": ["a"]}, None, 400, "unknown queue"),
        ("/api/dead/replay", {"queue": "default", "ids": ["x"] * 1001}, None, 400, "at most"),
        ("/api/dead/delete", {"queue": "default", "ids": ["not-an-id"]}, None, 400, "id"),
        ("/api/dead/delete", None, b"x" * (64 * 1024 + 1), 413, "at most"),
        ("/api/control", {"queue": "default", "action": "explode"}, None, 400, "action"),
        (
            "/api/control",
            {"queue": "default", "action": "throttle", "rate": "-3"},
            None,
            400,
            "rate",
        ),
    ]
    for path, body, raw, status, reason in cases:
        got, answer, _ = call(dashboard, path, body, raw=raw)
        assert (got, reason.lower() in answer["error"].lower()) == (status, True), (path, answer)
    assert call(dashboard, "/api/jobs?queue=default&state=running")[0] == 400
    assert call(dashboard, "/api/jobs?queue=default&limit=x")[0] == 400
    assert call(dashboard, "/api/job")[0] == 400
    assert call(dashboard, "/api/job?id=nope")[0] == 400
    missing = "0" * 26
    assert call(dashboard, f"/api/job?id={missing}")[0] == 404


@pytest.mark.timeout(120)
def test_a_selection_of_dead_letters_is_replayed_or_deleted(
    app: conveyor.Conveyor, dashboard: Dashboard
) -> None:
    ids = _dead_jobs(app, 4)
    status, found, _ = call(dashboard, "/api/jobs?queue=default&state=dead&error=NOT+YET+2")
    assert status == 200
    assert [j["id"] for j in found["jobs"]] == [ids[2]], "filtered by a piece of the error"
    assert found["jobs"][0]["error"] == "ValueError: not yet 2"
    assert call(dashboard, "/api/jobs?queue=default&state=dead&type=other")[1]["matched"] == 0

    replayed = call(dashboard, "/api/dead/replay", {"queue": "default", "ids": [ids[0], ids[1]]})
    assert replayed[:2] == (200, {"moved": 2, "kept": 0})
    deleted = call(dashboard, "/api/dead/delete", {"queue": "default", "ids": [ids[2], ids[1]]})
    assert deleted[:2] == (200, {"deleted": 1}), "a job replayed meanwhile is not deleted"
    store = _core.RedisStore(app.settings.redis_url)
    ns = app.settings.namespace
    queued = {_core.Envelope.decode(raw).id for raw in store.peek_ready(ns, "default", 10)}
    assert queued == {ids[0], ids[1]}
    dead = [_core.Envelope.decode(raw).id for raw, _, _ in store.dead_letters(ns, "default", 10)]
    assert dead == [ids[3]]
    assert store.counts(ns, "default").get("dead_purged") == 1
    listed = call(dashboard, "/api/jobs?queue=default&state=queued&type=dash.fails")[1]
    assert sorted(j["id"] for j in listed["jobs"]) == sorted(ids[:2])


def test_steering_enters_the_history_as_the_dashboards(
    app: conveyor.Conveyor, dashboard: Dashboard
) -> None:
    store = _core.RedisStore(app.settings.redis_url)
    ns, topic = app.settings.namespace, app.settings.topic_for("default")
    assert call(dashboard, "/api/control", {"queue": "default", "action": "pause"})[0] == 200
    assert dict(store.relay_controls(ns)) == {f"paused:{topic}": "1"}
    assert call(dashboard, "/api/overview")[1]["steering"]["default"]["paused"] is True
    call(dashboard, "/api/control", {"queue": "default", "action": "throttle", "rate": "250"})
    call(dashboard, "/api/control", {"queue": "default", "action": "resume"})
    assert dict(store.relay_controls(ns)) == {f"rate:{topic}": "250"}
    history = [json.loads(raw) for raw in store.control_history(ns, False)]
    assert len(history) == 3
    assert {(h["who"], h["from"]) for h in history} == {("dashboard", "127.0.0.1")}


def test_a_read_only_dashboard_changes_nothing(app: conveyor.Conveyor) -> None:
    d = Dashboard(app.settings, TOKEN, address=("127.0.0.1", 0), read_only=True)
    d.start()
    try:
        for path in ("/api/control", "/api/dead/replay", "/api/dead/delete"):
            status, answer, _ = call(d, path, {"queue": "default", "action": "pause", "ids": ["a"]})
            assert (status, answer["error"]) == (403, "this dashboard is read-only")
        assert (
            dict(_core.RedisStore(app.settings.redis_url).relay_controls(app.settings.namespace))
            == {}
        )
        assert call(d, "/api/overview")[1]["read_only"] is True
    finally:
        d.stop()


def test_throughput_is_sampled_over_time(app: conveyor.Conveyor, dashboard: Dashboard) -> None:
    @app.job("dash.ok")
    def ok() -> None:
        pass

    relay = start_relay(app)
    worker = conveyor.Worker(app, threads=2)
    worker.start()
    try:
        ok.enqueue_many([()] * 300)
        app.flush()

        store = _core.RedisStore(app.settings.redis_url)
        ns = app.settings.namespace
        wait_until(lambda: store.counts(ns, "default").get("done") == 300, 30, "all done")
        time.sleep(1.0)  # samples after the last job
        rates = call(dashboard, "/api/overview")[1]["series"]["rates"]["default"]
        spans = [0.3] + [b[0] - a[0] for a, b in itertools.pairwise(rates)]
        done = sum(point[1] * span for point, span in zip(rates, spans, strict=True))
        assert 300 * 0.7 < done < 300 * 1.3, rates
        assert max(point[1] for point in rates) > 0
    finally:
        worker.stop(grace_s=2)
        relay.stop()


def _serve(env: dict[str, str], *argv: str) -> tuple[subprocess.Popen[str], str]:
    """`conveyor dashboard ARGV` started, and the line it prints on start."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "dashboard", "--port", "0", *argv],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    return proc, proc.stderr.readline()


@pytest.mark.timeout(60)
def test_the_command_prints_a_made_token_once_and_never_a_given_one(
    app: conveyor.Conveyor,
) -> None:
    s = app.settings
    env = {"CONVEYOR_REDIS_URL": s.redis_url, "CONVEYOR_NAMESPACE": s.namespace}
    made, line = _serve({**env, "CONVEYOR_DASHBOARD_TOKEN": ""})
    try:
        match = re.search(r"open http://([\d.:]+)/#token=(\S+)", line)
        assert match, line
        address, token = match.groups()
        request = urllib.request.Request(f"http://{address}/api/overview")
        request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["read_only"] is False
    finally:
        made.send_signal(signal.SIGTERM)
        assert made.wait(timeout=20) == 0
    given, line = _serve({**env, "CONVEYOR_DASHBOARD_TOKEN": TOKEN}, "--read-only")
    try:
        assert "(read-only)" in line, line
        assert "#token=<CONVEYOR_DASHBOARD_TOKEN>" in line, line
    finally:
        given.send_signal(signal.SIGTERM)
        out, err = given.communicate(timeout=20)
    assert TOKEN not in line + out + err


def test_leaving_loopback_over_plain_http_is_a_choice(app: conveyor.Conveyor) -> None:
    with pytest.raises(ConfigError, match="--insecure"):
        Dashboard(app.settings, TOKEN, address=("0.0.0.0", 0))
    out = conveyor_cli(
        "dashboard",
        "--host",
        "0.0.0.0",
        "--port",
        "0",
        env={"CONVEYOR_DASHBOARD_TOKEN": TOKEN, "CONVEYOR_REDIS_URL": app.settings.redis_url},
    )
    assert out.returncode != 0
    assert "TLS-terminating proxy" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
