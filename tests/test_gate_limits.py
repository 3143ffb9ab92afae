"""Slow, idle, half-open and too many clients cannot starve the gate: headers
and bodies have deadlines, connections have a cap, and `/readyz` answers
from a cached probe."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

import conveyor
from conveyor import _core

pytestmark = pytest.mark.servers

JOB = b'{"type": "t.x", "args": [1]}'


@pytest.fixture
def gate(app: conveyor.Conveyor) -> Iterator[_core.Gate]:
    app.ensure_topics(["default"])
    s = app.settings
    gate = _core.Gate(
        "127.0.0.1:0",
        s.kafka_bootstrap,
        namespace=s.namespace,
        routes={"t.x": "default"},
        max_connections=4,
        header_timeout_s=1.0,
        body_timeout_s=1.0,
    )
    yield gate
    gate.stop()


def connect(gate: _core.Gate) -> socket.socket:
    host, port = gate.address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def request(body: bytes = JOB, length: int | None = None) -> bytes:
    head = (
        f"POST /v1/jobs HTTP/1.1\r\nhost: gate\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body) if length is None else length}\r\n\r\n"
    )
    return head.encode() + body


def post(gate: _core.Gate) -> int:
    req = urllib.request.Request(f"http://{gate.address}/v1/jobs", data=JOB)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code


def read_all(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the gate sends until it closes, and how long that took."""
    began = time.monotonic()
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out, time.monotonic() - began


def test_a_client_trickling_its_headers_is_closed_at_the_header_deadline(
    gate: _core.Gate,
) -> None:
    sock = connect(gate)
    sock.sendall(b"POST /v1/jobs HTTP/1.1\r\nhost: gate\r\n")  # and never the rest
    answer, took = read_all(sock)
    assert took < 5, "closed at the 1 s header deadline, not held open"
    assert not answer or answer.startswith(b"HTTP/1.1 408"), answer


def test_an_idle_kept_alive_connection_is_closed(gate: _core.Gate) -> None:
    sock = connect(gate)
    sock.sendall(request())
    answer, took = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert took < 5, "an idle keep-alive connection counts against the header deadline"


def test_a_body_that_never_arrives_is_a_408(gate: _core.Gate) -> None:
    sock = connect(gate)
    sock.sendall(request(JOB[:10], length=len(JOB)))  # the rest never comes
    answer, took = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"body_timeout" in answer
    assert took < 5


def test_connections_over_the_cap_are_answered_503_and_the_gate_recovers(
    gate: _core.Gate,
) -> None:
    held = [connect(gate) for _ in range(4)]  # open, silent: the cap is reached
    time.sleep(0.2)
    try:
        sock = connect(gate)
        sock.sendall(request())
        answer, _ = read_all(sock)
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert b"retry-after: 1" in answer
        assert b"over_capacity" in answer
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert post(gate) == 200, "slots come back as connections close"


def test_readyz_answers_from_one_probe_at_a_time(namespace: str) -> None:
    # Kafka unreachable: each probe waits 2 s. Ten probes in a row cost one
    # or two of those, not ten (a Kafka client was made per call before).
    gate = _core.Gate("127.0.0.1:0", "127.0.0.1:9", namespace=namespace, routes={"t.x": "q"})
    try:
        began = time.monotonic()
        for _ in range(10):
            try:
                urllib.request.urlopen(f"http://{gate.address}/readyz", timeout=10)
                status = 200
            except urllib.error.HTTPError as err:
                status = err.code
            assert status == 503
        assert time.monotonic() - began < 10
    finally:
        gate.stop(timeout_s=10)
