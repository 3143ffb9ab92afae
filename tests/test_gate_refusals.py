"""The gate refuses what no worker could run, with a 4xx and a reason, and
sends nothing of a refused request; the Python client refuses the same."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

import conveyor
from conveyor import _core
from conveyor.devservers import DevServers
from conveyor.errors import InvalidJobError

pytestmark = pytest.mark.servers

TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def app(servers: DevServers, namespace: str) -> Iterator[conveyor.Conveyor]:
    app = conveyor.Conveyor(
        conveyor.Settings(
            kafka_bootstrap=servers.kafka.bootstrap,
            redis_url=servers.redis.url,
            namespace=namespace,
            queues=("default", "nowhere"),
        )
    )
    app.ensure_topics(["default"])  # "nowhere" has no topic
    yield app
    app.close()


@pytest.fixture
def gate(app: conveyor.Conveyor) -> Iterator[_core.Gate]:
    s = app.settings
    gate = _core.Gate(
        "127.0.0.1:0",
        s.kafka_bootstrap,
        namespace=s.namespace,
        routes={"t.x": "default", "t.gone": "nowhere"},
    )
    yield gate
    gate.stop()


def post(gate: _core.Gate, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"http://{gate.address}{path}", data=body)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def in_kafka(app: conveyor.Conveyor) -> int:
    s = app.settings
    return sum(end for _, end in _core.kafka_end_offsets(s.kafka_bootstrap, s.topic_for("default")))


def nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def test_what_no_worker_could_run_is_a_400_with_a_reason(
    app: conveyor.Conveyor, gate: _core.Gate
) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    refused: list[tuple[bytes, str]] = [
        (b'{"type":"t.x","args":' + deep + b"}", "deeper than 64"),
        (b'{"type":"t.x","args":[1e99999]}', "not finite"),
        (b'{"type":"t.x","kwargs":{"a":[-2E400]}}', "not finite"),
        (b'{"type":"t.x","delay":1e300}', "366 days"),
        (b'{"type":"t.x","delay":-1}', "366 days"),
        (b'{"type":"t.x","run_at":1e308}', "366 days"),
        (b'{"type":"t.x","partition":99}', "outside topic"),
        (b'{"type":"t.x","trace_context":"hello"}', "traceparent"),
    ]
    for body, reason in refused:
        status, answer = post(gate, "/v1/jobs", body)
        assert status == 400, (body[:60], status, answer)
        assert reason in answer["error"], answer
    assert in_kafka(app) == 0, "nothing of a refused job was sent"
    accepted = [
        {"type": "t.x", "args": [nested(63)], "delay": 3600},
        {"type": "t.x", "run_at": time.time() + 86400, "trace_context": TRACE},
        {"type": "t.x", "args": [12345678901234567890123, 1.5e300], "partition": 2},
    ]
    for job in accepted:
        status, answer = post(gate, "/v1/jobs", json.dumps(job).encode())
        assert status == 200, (job, answer)
    assert in_kafka(app) == 3


def test_a_batch_is_all_or_nothing(app: conveyor.Conveyor, gate: _core.Gate) -> None:
    good = [{"type": "t.x", "args": [i]} for i in range(20)]
    for spoiler in ({"type": "t.gone"}, {"type": "t.x", "partition": 7}):
        status, answer = post(
            gate, "/v1/jobs/batch", json.dumps({"jobs": [*good, spoiler]}).encode()
        )
        assert status >= 400, answer
        assert in_kafka(app) == 0, f"{spoiler}: part of a refused batch was sent"
    status, _ = post(gate, "/v1/jobs/batch", json.dumps({"jobs": good}).encode())
    assert status == 200
    assert in_kafka(app) == 20


def test_the_gate_and_the_client_allow_the_same_depth(gate: _core.Gate) -> None:
    deepest = max(d for d in range(40, 80) if _encodes(nested(d)))
    assert deepest == 63, "args is one level; a value inside may sit 64 below it"
    ok, _ = post(gate, "/v1/jobs", json.dumps({"type": "t.x", "args": [nested(deepest)]}).encode())
    too_deep, _ = post(
        gate, "/v1/jobs", json.dumps({"type": "t.x", "args": [nested(deepest + 1)]}).encode()
    )
    assert (ok, too_deep) == (200, 400)


def _encodes(value: Any) -> bool:
    try:
        _core.encode_call([value], {})
    except InvalidJobError:
        return False
    return True


def test_the_client_refuses_the_same_schedules_and_trace_contexts(app: conveyor.Conveyor) -> None:
    for options in (
        {"delay": 1e300},
        {"delay": float("nan")},
        {"delay": -1},
        {"run_at": 1e308},
        {"run_at": float("inf")},
        {"trace_context": "hello"},
    ):
        with pytest.raises(InvalidJobError):
            app.enqueue("t.x", [], **options)
    app.enqueue("t.x", [], delay=60, trace_context=TRACE).wait(30)


def test_a_body_over_its_routes_limit_is_refused_before_it_is_read(
    app: conveyor.Conveyor,
) -> None:
    import socket

    s = app.settings
    gate = _core.Gate(
        "127.0.0.1:0",
        s.kafka_bootstrap,
        namespace=s.namespace,
        routes={"t.x": "default"},
        max_payload_bytes=4096,
        max_batch=1000,
    )
    try:
        host, port = gate.address.rsplit(":", 1)
        # A single job announced at 4 MB (the batch route allows a thousand
        # jobs, not the single one); the body never comes.
        with socket.create_connection((host, int(port)), timeout=5) as conn:
            conn.sendall(
                b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 4000000\r\n\r\n{"
            )
            answer = conn.recv(200)
        assert answer.startswith(b"HTTP/1.1 413"), answer
    finally:
        gate.stop()
