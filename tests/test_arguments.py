"""Arguments people actually pass: dataclasses, pydantic models, datetimes,
UUIDs, decimals and enums go as plain JSON and come back as the
handler's annotated types; a job whose arguments do not fit (sent over HTTP,
say) is dead at its first attempt with the reason, not retried."""

from __future__ import annotations

import datetime as dt
import enum
import json
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pydantic
import pytest

import conveyor
from conveyor import _core
from conveyor.arguments import Reader
from conveyor.devservers import DevServers
from conveyor.payload import decode_call
from tests.helpers.gate import start_gate
from tests.helpers.relay import start_relay
from tests.helpers.waiting import wait_until

LIMIT = 1 << 20


class Kind(enum.Enum):
    RUSH = "rush"
    SLOW = "slow"


@dataclass
class Address:
    city: str
    since: dt.date


@dataclass
class Order:
    id: uuid.UUID
    placed: dt.datetime
    total: Decimal
    ship_to: Address
    tags: tuple[str, ...]
    kind: Kind


class Customer(pydantic.BaseModel):
    name: str
    joined: dt.datetime


def handle(
    order: Order,
    customer: Customer,
    ids: list[uuid.UUID],
    amounts: dict[str, Decimal],
    at: dt.time | None = None,
    *,
    day: dt.date,
) -> None: ...


ORDER = Order(
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    dt.datetime(2026, 12, 2, 9, 30, 15, 123456, tzinfo=dt.timezone.utc),
    Decimal("12345678901234567890.10"),
    Address("Lyon", dt.date(2020, 2, 29)),
    ("gift",),
    Kind.RUSH,
)
CUSTOMER = Customer(name="Ada", joined=dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc))

#: ORDER and CUSTOMER as JSON.
WIRE = json.loads(_core.encode_call([ORDER, CUSTOMER], {}, LIMIT))["args"]


def roundtrip(args: list[Any], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    payload = _core.encode_call(args, kwargs, LIMIT)
    args, kwargs = decode_call(payload)
    reader = Reader.of("t", handle)
    assert reader is not None
    reader(args, kwargs)
    return args, kwargs


def test_rich_arguments_come_back_as_the_annotated_types() -> None:
    ids = [uuid.uuid4(), uuid.uuid4()]
    amounts = {"net": Decimal("0.1"), "tax": Decimal("-3.000")}
    args, kwargs = roundtrip(
        [ORDER, CUSTOMER, ids, amounts, dt.time(23, 59)], {"day": dt.date(2026, 12, 2)}
    )
    assert args == [ORDER, CUSTOMER, ids, amounts, dt.time(23, 59)]
    assert kwargs == {"day": dt.date(2026, 12, 2)}
    assert str(args[0].total) == "12345678901234567890.10", "decimal digits kept exactly"


def test_the_wire_form_is_plain_json_any_language_can_write() -> None:
    payload = _core.encode_call([ORDER], {}, LIMIT)
    [order] = json.loads(payload)["args"]
    assert order == {
        "id": "12345678-1234-5678-1234-567812345678",
        "placed": "2026-12-02T09:30:15.123456+00:00",
        "total": "12345678901234567890.10",
        "ship_to": {"city": "Lyon", "since": "2020-02-29"},
        "tags": ["gift"],
        "kind": "rush",
    }
    # What another language sends reads the same: a Z suffix, a number for a decimal.
    args, kwargs = decode_call(
        json.dumps({"args": [{**order, "placed": "2026-12-02T09:30:15.123456Z"}], "kwargs": {}})
        .replace('"12345678901234567890.10"', "12.5")
        .encode()
    )
    Reader.of("t", handle)(args, kwargs)  # type: ignore[misc]
    assert args[0].placed == ORDER.placed
    assert args[0].total == Decimal("12.5")


def test_objects_that_are_not_arguments_are_still_refused() -> None:
    for bad, why in [
        (object(), "object is not a JSON type"),
        (Decimal("NaN"), "not a finite decimal"),
        ({uuid.uuid4(): 1}, "dict keys must be strings"),
    ]:
        with pytest.raises(conveyor.InvalidJobError, match=why):
            _core.encode_call([bad], {}, LIMIT)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["not an object", {}, [], {}], "'order'.*expected an object"),
        ([{"id": "nope"}, {}, [], {}], "'order'"),
        (
            [json.loads(_core.encode_call([ORDER], {}, LIMIT))["args"][0], {"name": 1}, [], {}],
            "'customer'.*ValidationError",
        ),
        ([*WIRE, ["x"], {}], "'ids'.*badly formed"),
        ([*WIRE, [], {"a": [1]}], "'amounts'.*expected a decimal"),
    ],
)
def test_values_that_cannot_be_read_name_their_argument(args: list[Any], reason: str) -> None:
    reader = Reader.of("t", handle)
    assert reader is not None
    kwargs: dict[str, Any] = {"day": "2026-12-02"}
    with pytest.raises(conveyor.InvalidJobError, match=reason):
        reader(list(args), kwargs)


def test_plain_handlers_have_no_reader() -> None:
    def plain(a: int, b: str, c: list[dict[str, Any]], d: int | str, *rest: Any) -> None: ...

    assert Reader.of("t", plain) is None


def test_annotations_that_cannot_be_resolved_are_told_at_registration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @dataclass
    class Local:  # defined in a function: this module's string annotations cannot name it
        n: int

    def handler(item: Local, at: uuid.UUID) -> None: ...

    with caplog.at_level("WARNING", logger="conveyor.jobs"):
        assert Reader.of("t.local", handler) is None
    assert "t.local" in caplog.text
    assert "cannot be resolved" in caplog.text


@pytest.fixture
def typed_app(servers: DevServers, namespace: str) -> Iterator[conveyor.Conveyor]:
    app = conveyor.Conveyor(
        conveyor.Settings(
            kafka_bootstrap=servers.kafka.bootstrap,
            redis_url=servers.redis.url,
            namespace=namespace,
        )
    )
    yield app
    app.close()


@pytest.mark.servers
def test_through_kafka_the_gate_and_a_worker(
    typed_app: conveyor.Conveyor, running: list[conveyor.Worker]
) -> None:
    app = typed_app
    got: list[tuple[Order, Customer, dt.date]] = []

    @app.job("a.ship")
    def ship(order: Order, customer: Customer, *, day: dt.date) -> None:
        assert isinstance(order.ship_to, Address)
        assert isinstance(order.id, uuid.UUID)
        got.append((order, customer, day))

    app.ensure_topics()
    app.publish_registry()
    ship.enqueue(ORDER, CUSTOMER, day=dt.date(2026, 12, 2)).wait(30)
    wire = json.loads(_core.encode_call([ORDER, CUSTOMER], {"day": "2026-12-02"}, LIMIT))
    gate = start_gate(app)
    try:
        sent = {
            "good": _post(gate.address, {"type": "a.ship", **wire}),
            "missing": _post(gate.address, {"type": "a.ship", "args": wire["args"]}),
            "extra": _post(gate.address, {"type": "a.ship", **wire, "args": [*wire["args"], 1]}),
            "bad uuid": _post(
                gate.address,
                {
                    "type": "a.ship",
                    **wire,
                    "args": [{**wire["args"][0], "id": "x"}, wire["args"][1]],
                },
            ),
        }
    finally:
        gate.stop()
    relay = start_relay(app)
    worker = conveyor.Worker(app, threads=2)
    running.append(worker)
    worker.start()
    store = _core.RedisStore(app.settings.redis_url)
    ns = app.settings.namespace
    try:
        wait_until(lambda: len(got) == 2 and store.depth(ns, "default")["dead"] == 3)
    finally:
        relay.stop()
    assert got == [(ORDER, CUSTOMER, dt.date(2026, 12, 2))] * 2
    dead = {
        _core.Envelope.decode(raw).id: json.loads(error or "{}")
        for raw, _, error in store.dead_letters(ns, "default", 10)
    }
    reasons = {name: dead[job_id] for name, job_id in sent.items() if job_id in dead}
    assert set(reasons) == {"missing", "extra", "bad uuid"}, "dead at once, the good one ran"
    assert all(r["attempt"] == 1 and r["type"] == "PermanentError" for r in reasons.values())
    # Python 3.12 says "argument", 3.13 "keyword-only argument".
    assert "missing a required" in reasons["missing"]["message"]
    assert "'day'" in reasons["missing"]["message"]
    assert "too many positional arguments" in reasons["extra"]["message"]
    assert "argument 'order' of a.ship cannot be read" in reasons["bad uuid"]["message"]


def _post(address: str, body: dict[str, Any]) -> str:
    request = urllib.request.Request(
        f"http://{address}/v1/jobs",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=15) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return str(answer["id"])
