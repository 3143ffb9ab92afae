"""Health endpoints for orchestrators: `/healthz` on the metrics port of
workers and relays answers 200 while every thread of the component runs and
503 with what stopped otherwise; a relay says whether its loop still runs."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

import conveyor
from conveyor.metrics_http import serve_metrics
from tests.helpers.relay import start_relay


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_healthz_answers_what_the_component_says() -> None:
    wrong: list[str | None] = [None]
    server = serve_metrics("127.0.0.1:0", lambda: "m 1\n", lambda: wrong[0])
    port = server.server_address[1]
    try:
        assert _get(port, "/healthz") == (200, "ok\n")
        assert _get(port, "/metrics") == (200, "m 1\n")
        wrong[0] = "stopped: conveyor-worker-2"
        assert _get(port, "/healthz") == (503, "stopped: conveyor-worker-2\n")
        assert _get(port, "/other")[0] == 404
    finally:
        server.shutdown()


@pytest.mark.servers
def test_workers_and_relays_report_their_threads(app: conveyor.Conveyor) -> None:
    worker = conveyor.Worker(app, threads=2)
    assert worker.health() == "not started"
    relay = start_relay(app)
    try:
        worker.start()
        assert worker.health() is None
        assert relay.running()
    finally:
        worker.stop(grace_s=5)
        relay.stop()
    assert not relay.running()
    stopped = worker.health()
    assert stopped is not None
    assert "conveyor-keeper" in stopped
