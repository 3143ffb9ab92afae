"""The gate's single-job endpoint as a minimal Python ASGI app, for comparison.

Same contract as `POST /v1/jobs` of the Rust gate (JSON in, job written to
Kafka and acknowledged, id out), same producer (Conveyor's Rust one), so the
comparison isolates the HTTP serving and per-request Python. Run by
bench/gate_bench.py under uvicorn:
`uvicorn asgi_gate:app` with CONVEYOR_KAFKA_BOOTSTRAP and BENCH_TOPIC set.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

from conveyor import _core
from conveyor.errors import ConveyorError

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TOPIC = os.environ.get("BENCH_TOPIC", "conveyor.default")
ROUTES = {"notify.push": TOPIC}
producer = _core.KafkaProducer(os.environ.get("CONVEYOR_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))


async def _respond(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """POST /v1/jobs, nothing else."""
    if scope["type"] != "http":
        return
    if scope["method"] != "POST" or scope["path"] != "/v1/jobs":
        await _respond(send, 404, {"error": "not found"})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    try:
        job = json.loads(body)
        topic = ROUTES[job["type"]]
        handle = producer.send_call(
            topic,
            job["type"],
            job.get("args", []),
            job.get("kwargs", {}),
            max_payload_bytes=1 << 20,
        )
    except (ValueError, KeyError, TypeError, ConveyorError) as err:
        await _respond(send, 400, {"error": str(err)})
        return
    try:
        [(partition, offset)] = await asyncio.get_running_loop().run_in_executor(
            None, handle.wait, 5.0
        )
    except ConveyorError as err:
        await _respond(send, 503, {"error": str(err)})
        return
    await _respond(send, 200, {"id": handle.id, "partition": partition, "offset": offset})
