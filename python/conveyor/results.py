"""Results: what a job's handler returned, kept for whoever waits on its id.

A job type registered with `store_result=True` has its outcome kept in Redis
for `result_ttl_s` seconds under its id (`cv:[ns:]{queue}:result:<id>`),
written in the same atomic step that settles the job (`settle-11.lua`): the
handler's return value when it is done, its last error when it is given up
on. A retry keeps nothing: the job has not ended.

A kept result is a one-byte tag and a body, written and read only here:

- `v` and the value encoded as a call's single argument (the strict JSON
  encoder jobs use: a return value that does not encode, or is larger than
  `max_payload_bytes`, is kept as an error);
- `e` and the error record (JSON), raised as `JobFailed` to the waiter
  (`JobCancelled` for a cancelled job; a worker's Rust side writes that one
  for a job cancelled before it started, `worker/cancels.rs`).

While Redis is nearly full (90% of `maxmemory`) workers keep no results: a
result is a key per job, and jobs must keep finishing without growing a full
Redis. A waiter then times out (`ConveyorTimeout`), as it does once a result
outlived its time to live.

Waiting polls the key, the pause between reads doubling from 2 ms to 100 ms; the async
form reads in a worker thread so that an event loop never blocks on Redis.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from conveyor import _core
from conveyor.errors import ConveyorTimeout, InvalidJobError, JobCancelled, JobFailed
from conveyor.payload import decode_call

VALUE = b"v"
ERROR = b"e"

_FIRST_POLL_S = 0.001
_LAST_POLL_S = 0.1

#: Reads a job's kept result: its bytes, or None while there are none.
Read = Callable[[], "bytes | None"]


def encode_value(value: Any, limit: int) -> bytes:
    """The record of a handler's return value; one that is not JSON or is
    over `limit` bytes is recorded as an error the waiter will see."""
    try:
        return VALUE + _core.encode_call([value], {}, limit)
    except InvalidJobError as err:
        return encode_error(
            json.dumps(
                {
                    "type": "ResultNotEncodable",
                    "message": f"the handler's result was not kept: {err}",
                }
            )
        )


def encode_error(record: str) -> bytes:
    """The record of a job given up on: its error record (JSON)."""
    return ERROR + record.encode()


def decode(job_id: str, raw: bytes) -> Any:
    """The value in a kept result, or the exception it stands for."""
    tag, body = raw[:1], raw[1:]
    if tag == VALUE:
        args, _ = decode_call(body)
        if len(args) == 1:
            return args[0]
    elif tag == ERROR:
        try:
            error = json.loads(body)
        except ValueError:
            error = {"type": "Unknown", "message": body[:200].decode(errors="replace")}
        if isinstance(error, dict):
            return _raise_failed(job_id, error)
    raise InvalidJobError(f"job {job_id}: its kept result is unreadable (tag {tag!r})")


def _raise_failed(job_id: str, error: dict[str, Any]) -> Any:
    if error.get("type") == "JobCancelled":
        raise JobCancelled(f"job {job_id} was cancelled: {error.get('message')}", error)
    raise JobFailed(f"job {job_id} failed: {error.get('type')}: {error.get('message')}", error)


def wait(job_id: str, read: Read, timeout_s: float | None) -> Any:
    """Blocks until job `job_id`'s result is kept (`read` returns it), for at
    most `timeout_s` seconds (None: no limit)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    pause = _FIRST_POLL_S
    while True:
        raw = read()
        if raw is not None:
            return decode(job_id, raw)
        pause = _next_pause(job_id, deadline, timeout_s, pause)
        time.sleep(pause)


async def wait_async(job_id: str, read: Read, timeout_s: float | None) -> Any:
    """`wait` for an event loop: the reads run in the loop's default executor."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    pause = _FIRST_POLL_S
    while True:
        raw = await loop.run_in_executor(None, read)
        if raw is not None:
            return decode(job_id, raw)
        pause = _next_pause(job_id, deadline, timeout_s, pause)
        await asyncio.sleep(pause)


def _next_pause(
    job_id: str, deadline: float | None, timeout_s: float | None, pause: float
) -> float:
    """How long to sleep before the next read; raises once the time is up."""
    if deadline is None:
        return min(pause * 2, _LAST_POLL_S)
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise ConveyorTimeout(
            f"no result for job {job_id} within {timeout_s}s: not ended yet, ended longer "
            "ago than its result_ttl_s, or ended while Redis was nearly full (no result kept)"
        )
    return min(pause * 2, _LAST_POLL_S, remaining)
