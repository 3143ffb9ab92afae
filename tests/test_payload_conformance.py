"""The payload `{"args": [...], "kwargs": {...}}` written once per language and
held together: the bytes the gate frames around a client's JSON, the bytes
the Python client's encoder writes, and what the worker's decoder hands a
handler must agree."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

import conveyor
from conveyor import _core
from conveyor.devservers import DevServers
from conveyor.payload import decode_call
from tests.helpers.kafka_reader import read_all

pytestmark = pytest.mark.servers

SAMPLES: list[tuple[list[Any], dict[str, Any]]] = [
    ([], {}),
    (["inv-é", 1250, -7, 1.5, True, False, None], {}),
    ([[1, [2, [3, []]]], {"a": {"b": [], "c": "\u2603"}}], {"k": "v", "ü": [0.25, 0.001]}),
    ([], {"only": "kwargs", "quote": 'a "b" \\ c', "tab": "\t", "nl": "\n"}),
    ([2**63 - 1, -(2**63), 12345678901234567890], {"big": 10**30}),
]


@pytest.fixture
def gate(servers: DevServers, namespace: str) -> Iterator[tuple[conveyor.Conveyor, _core.Gate]]:
    app = conveyor.Conveyor(
        conveyor.Settings(
            kafka_bootstrap=servers.kafka.bootstrap,
            redis_url=servers.redis.url,
            namespace=namespace,
        )
    )
    app.ensure_topics(["default"])
    gate = _core.Gate(
        "127.0.0.1:0",
        servers.kafka.bootstrap,
        namespace=namespace,
        routes={"t.x": "default"},
    )
    yield app, gate
    gate.stop()
    app.close()


#: Spelled differently by Python's json (`1e-05`) and the Rust encoder
#: (`1e-5`): the bytes may differ, the values a handler gets may not.
EXPONENTS: tuple[list[Any], dict[str, Any]] = ([1e-05, 1e300, -2.5e-300], {"x": 6.02e23})


def test_gate_client_and_worker_agree_on_the_payload(
    gate: tuple[conveyor.Conveyor, _core.Gate],
) -> None:
    app, server = gate
    for args, kwargs in [*SAMPLES, EXPONENTS]:
        body = json.dumps(
            {"type": "t.x", "args": args, "kwargs": kwargs},
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()
        request = urllib.request.Request(f"http://{server.address}/v1/jobs", data=body)
        with urllib.request.urlopen(request, timeout=15) as response:
            assert response.status == 200
    records = read_all(
        app.settings.kafka_bootstrap, app.settings.topic_for("default"), len(SAMPLES)
    )
    by_payload = {conveyor.Envelope.decode(r.value).payload for r in records}
    for args, kwargs in SAMPLES:
        encoded = _core.encode_call(args, kwargs)
        assert encoded in by_payload, f"the gate framed {args!r}, {kwargs!r} differently"
        assert decode_call(encoded) == (args, kwargs)
