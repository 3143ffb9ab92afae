"""The FastAPI example service under uvicorn, with a worker process and a
relay, against the real servers: a signup enqueues a job (a pydantic model as
its argument) and answers once it is acknowledged; the job runs on the
worker's event loop; its state and result are read back over HTTP; the
service shuts down cleanly."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import conveyor
from tests.helpers.relay import start_relay
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.servers

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _call(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_the_example_service_enqueues_and_reads_back(
    app: conveyor.Conveyor, conveyor_env: dict[str, str]
) -> None:
    env = conveyor_env
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    web = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.fastapi_service:api", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "worker", "examples.fastapi_service:jobs"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    relay = start_relay(app)
    try:

        def up() -> bool:
            try:
                return _call(f"{base}/jobs/nothing")[0] == 404
            except OSError:
                return False

        wait_until(up, timeout_s=30, what="the service to answer")
        ids = []
        for i in range(20):
            status, answer = _call(f"{base}/signup", {"user_id": i, "email": f"u{i}@example.test"})
            assert status == 200, answer
            ids.append(answer["job"])
        status, answer = _call(f"{base}/signup", {"user_id": "not a number", "email": "x"})
        assert status == 422, "FastAPI refuses a bad body before anything is enqueued"

        def done(job_id: str) -> bool:
            status, answer = _call(f"{base}/jobs/{job_id}")
            return status == 200 and answer["state"] == "done"

        wait_until(lambda: all(done(i) for i in ids), timeout_s=60, what="every job done")
        assert _call(f"{base}/jobs/{ids[7]}")[1] == {
            "state": "done",
            "result": "welcome sent to u7@example.test",
        }
    finally:
        relay.stop()
        worker.send_signal(signal.SIGTERM)
        web.send_signal(signal.SIGTERM)
        _, err = web.communicate(timeout=60)
        worker.wait(60)
    # uvicorn ends by raising the signal again once it shut down cleanly.
    assert web.returncode in (0, -signal.SIGTERM), err.decode()[-2000:]
    assert b"Application shutdown complete" in err, err.decode()[-2000:]
