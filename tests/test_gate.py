"""The gate: HTTP in, Kafka out, no Python per request; read back independently."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import conveyor
from conveyor import _core
from conveyor.devservers import DevServers
from tests.helpers.gate import start_gate
from tests.helpers.kafka_reader import read_all
from tests.helpers.ports import fixed_port

pytestmark = pytest.mark.servers


def _lower(headers: Message) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def post(
    address: str, path: str, body: bytes, token: str | None = None, timeout: float = 15
) -> tuple[int, dict[str, Any], dict[str, str]]:
    request = urllib.request.Request(
        f"http://{address}{path}",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read()), _lower(response.headers)
    except urllib.error.HTTPError as err:
        raw = err.read()
        return err.code, (json.loads(raw) if raw.startswith(b"{") else {}), _lower(err.headers)


def get(address: str, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture
def app(gate_app: conveyor.Conveyor) -> conveyor.Conveyor:
    return gate_app


@pytest.fixture
def gate(app: conveyor.Conveyor) -> Iterator[_core.Gate]:
    gate = start_gate(app, max_payload_bytes=4096, max_batch=50)
    yield gate
    gate.stop()


def test_a_posted_job_is_in_kafka_with_the_callers_bytes(
    app: conveyor.Conveyor, gate: _core.Gate
) -> None:
    # Odd spacing and escapes must survive: the gate never re-encodes arguments.
    body = b'{"type": "billing.charge", "args": ["inv-\\u00e9",  1250 ], "dedup_key": "inv-9"}'
    status, answer, _ = post(gate.address, "/v1/jobs", body)
    assert status == 200, answer
    [record] = read_all(app.settings.kafka_bootstrap, app.settings.topic_for("billing"), 1)
    env = conveyor.Envelope.decode(record.value)
    assert env.id == answer["id"]
    assert (record.partition, record.offset) == (answer["partition"], answer["offset"])
    assert env.payload == b'{"args":["inv-\\u00e9",  1250 ],"kwargs":{}}'
    assert env.job_type == "billing.charge"
    assert env.dedup_key == "inv-9"
    assert record.key == b"inv-9"


def test_a_batch_goes_to_each_types_queue_in_order(
    app: conveyor.Conveyor, gate: _core.Gate
) -> None:
    jobs: list[dict[str, Any]] = [{"type": "notify.push", "args": [i]} for i in range(30)]
    jobs += [{"type": "billing.charge", "kwargs": {"invoice": "x", "amount_cents": 5}}]
    status, answer, _ = post(gate.address, "/v1/jobs/batch", json.dumps({"jobs": jobs}).encode())
    assert status == 200, answer
    ids = [j["id"] for j in answer["jobs"]]
    assert len(set(ids)) == 31
    pushes = read_all(app.settings.kafka_bootstrap, app.settings.topic_for("default"), 30)
    by_id = {conveyor.Envelope.decode(r.value).id: r for r in pushes}
    assert set(by_id) == set(ids[:30])
    for i, job_id in enumerate(ids[:30]):
        assert json.loads(conveyor.Envelope.decode(by_id[job_id].value).payload)["args"] == [i]
    [billing] = read_all(app.settings.kafka_bootstrap, app.settings.topic_for("billing"), 1)
    assert conveyor.Envelope.decode(billing.value).id == ids[30]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_job"),
        (b'{"type": "nobody.registered"}', 422, "unknown_type"),
        (b'{"type": "notify.push", "args": {"a": 1}}', 400, "invalid_job"),
        (b'{"type": "notify.push", "kwargs": [1]}', 400, "invalid_job"),
        (b'{"type": "notify.push", "surprise": 1}', 400, "invalid_job"),
        (b'{"type": "notify.push", "delay": -1}', 400, "invalid_job"),
        (b'{"type": "notify.push", "delay": 1, "run_at": 2}', 400, "invalid_job"),
        (b'{"type": "9bad"}', 400, "invalid_job"),
        (b'{"type": "notify.push", "args": ["' + b"x" * 5000 + b'"]}', 413, "too_large"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_reason(
    gate: _core.Gate, body: bytes, status: int, code: str
) -> None:
    got, answer, _ = post(gate.address, "/v1/jobs", body)
    assert (got, answer["code"]) == (status, code)
    assert answer["error"]


def test_a_bad_job_in_a_batch_sends_nothing(app: conveyor.Conveyor, gate: _core.Gate) -> None:
    jobs = [{"type": "notify.push", "args": [1]}, {"type": "ghost.type"}]
    status, answer, _ = post(gate.address, "/v1/jobs/batch", json.dumps({"jobs": jobs}).encode())
    assert (status, answer["index"]) == (422, 1)
    too_many = {"jobs": [{"type": "notify.push"}] * 51}
    assert post(gate.address, "/v1/jobs/batch", json.dumps(too_many).encode())[0] == 400
    assert read_all(app.settings.kafka_bootstrap, app.settings.topic_for("default"), 1, 2) == []


def test_new_job_types_are_learned_from_the_registry(
    app: conveyor.Conveyor, gate: _core.Gate
) -> None:
    body = b'{"type": "late.comer"}'
    assert post(gate.address, "/v1/jobs", body)[0] == 422
    app.job("late.comer")(lambda: None)
    app.publish_registry()
    deadline = time.monotonic() + 5
    while "late.comer" not in gate.routes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert post(gate.address, "/v1/jobs", body)[0] == 200


def test_enqueues_go_on_when_redis_is_unreachable(app: conveyor.Conveyor) -> None:
    s = app.settings
    gate = _core.Gate(
        "127.0.0.1:0",
        s.kafka_bootstrap,
        namespace=s.namespace,
        routes={"notify.push": "default"},
        registry_url="redis://127.0.0.1:1/0",
        registry_refresh_s=0.1,
    )
    try:
        status, answer, _ = post(gate.address, "/v1/jobs", b'{"type": "notify.push"}')
        assert status == 200, answer
        _, metrics = get(gate.address, "/metrics")
        errors = next(
            line
            for line in metrics.splitlines()
            if line.startswith("conveyor_gate_registry_refresh_errors_total ")
        )
        assert int(errors.split()[1]) >= 1
        assert get(gate.address, "/healthz") == (200, "ok\n")
        assert get(gate.address, "/readyz")[0] == 200
    finally:
        gate.stop()


def test_token_is_required_when_configured(app: conveyor.Conveyor) -> None:
    s = app.settings
    gate = _core.Gate(
        "127.0.0.1:0",
        s.kafka_bootstrap,
        namespace=s.namespace,
        routes={"notify.push": "default"},
        token="s3cret",
    )
    try:
        body = b'{"type": "notify.push"}'
        assert post(gate.address, "/v1/jobs", body)[0] == 401
        assert post(gate.address, "/v1/jobs", body, token="wrong")[0] == 401
        assert post(gate.address, "/v1/jobs", body, token="s3cret")[0] == 200
    finally:
        gate.stop()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.dictionaries(
            st.sampled_from(
                [
                    "type",
                    "args",
                    "kwargs",
                    "delay",
                    "run_at",
                    "partition",
                    "dedup_key",
                    "trace_context",
                    "extra",
                ]
            ),
            json_values,
            max_size=5,
        ).map(lambda d: json.dumps(d).encode()),
    )
)
def test_generated_bad_requests_get_4xx_and_the_gate_keeps_serving(
    gate: _core.Gate, body: bytes
) -> None:
    path = "/v1/jobs/batch" if body[:1] == b"[" else "/v1/jobs"
    status, answer, _ = post(gate.address, path, body)
    # Anything not a well-formed job of a registered type is refused with a reason;
    # a request that happens to be valid is accepted.
    assert status == 200 or (400 <= status < 500 and answer.get("error")), (status, answer)
    assert post(gate.address, "/v1/jobs", b'{"type": "notify.push", "args": [1]}')[0] == 200


def test_no_2xx_without_a_durable_write_while_the_broker_stops(tmp_path: Path) -> None:
    # A broker of this test's own, so stopping it disturbs nobody else.
    own = DevServers.at(tmp_path, kafka_port=fixed_port(29192), redis_port=fixed_port(26479))
    own.kafka.up()
    try:
        bootstrap = own.kafka.bootstrap
        topic = "conveyor.default"
        _core.kafka_create_topic(bootstrap, topic, 3)
        gate = _core.Gate(
            "127.0.0.1:0",
            bootstrap,
            routes={"crash.test": "default"},
            request_timeout_s=2.0,
            delivery_timeout_s=60.0,
        )
        accepted: list[str] = []
        refused: list[int] = []
        problems: list[str] = []
        stop = threading.Event()

        def load() -> None:
            try:
                send_until_stopped()
            except Exception as err:  # surfaced by the main thread's assertion
                problems.append(repr(err))

        def send_until_stopped() -> None:
            n = 0
            while not stop.is_set() and n < 5000:
                n += 1
                status, answer, headers = post(
                    gate.address,
                    "/v1/jobs",
                    json.dumps({"type": "crash.test", "args": [n]}).encode(),
                )
                if status == 200:
                    accepted.append(answer["id"])
                elif status == 503 and headers.get("retry-after") == "1":
                    refused.append(n)
                else:
                    problems.append(f"request {n}: {status} {headers} {answer}")

        thread = threading.Thread(target=load)
        thread.start()
        time.sleep(1.0)
        own.kafka.down()
        time.sleep(3.0)
        own.kafka.up()
        time.sleep(1.5)
        stop.set()
        thread.join(60)
        gate.stop()
        counts = f"{len(accepted)} accepted, {len(refused)} refused, problems: {problems[:5]}"
        assert not problems, counts
        assert refused, f"the broker was down: some requests must have been refused ({counts})"
        assert len(accepted) > 10, counts
        records = read_all(bootstrap, topic, len(accepted), timeout_s=60)
        in_kafka = {conveyor.Envelope.decode(r.value).id for r in records}
        missing = set(accepted) - in_kafka
        assert not missing, f"{len(missing)} acknowledged jobs are not in Kafka ({counts})"
    finally:
        own.kafka.down()
