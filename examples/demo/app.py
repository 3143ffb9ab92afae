"""The demo's job types, run by `conveyor worker conveyor.demo_app:app`.

Four kinds of work with different sizes and run times, a few failing and
being retried, a few failing for good, and reminders that run later. Every
finished job leaves a trace (its id and the timestamps of each stage, read
from its envelope) in a Redis list that `conveyor demo` turns into its report.
Settings come from the environment, as for any deployed worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import zlib

import redis

from conveyor.app import Conveyor
from conveyor.envelope import Stage
from conveyor.errors import PermanentError
from conveyor.job_context import current_job

app = Conveyor()
TRACE_KEY = f"demo:{app.settings.namespace}:trace"

_client = redis.Redis.from_url(app.settings.redis_url)
_lock = threading.Lock()
_traces: list[str] = []


def _flush() -> None:
    with _lock:
        batch, _traces[:] = list(_traces), []
    if batch:
        _client.rpush(TRACE_KEY, *batch)


def _flusher() -> None:
    while True:
        time.sleep(0.2)
        # On a Redis error the next round tries again; the demo waits for every trace.
        with contextlib.suppress(redis.RedisError):
            _flush()


#: The process whose flusher runs: worker processes are forked after import,
#: and threads do not survive a fork, so each starts its own on first use.
_flusher_pid = [0]


def _trace(started: float) -> None:
    info = current_job()
    envelope = info.envelope() if info else None
    if info is None or envelope is None:
        return
    stamps = dict(envelope.stages)
    record = [
        info.id,
        info.job_type,
        info.attempt,
        envelope.enqueued_at_us,
        envelope.run_at_us or 0,
        stamps.get(Stage.KAFKA, 0),
        stamps.get(Stage.RELAYED, 0),
        int(started * 1e6),
        int(time.time() * 1e6),
    ]
    with _lock:
        _traces.append(json.dumps(record))
        if _flusher_pid[0] != os.getpid():
            _flusher_pid[0] = os.getpid()
            threading.Thread(target=_flusher, name="demo-traces", daemon=True).start()


def _flaky(key: str, percent: int) -> bool:
    """Deterministic per job: the same jobs fail on every run of the demo."""
    return zlib.crc32(key.encode()) % 100 < percent


@app.job("notify.push", queue="default")
def push(user: int, text: str) -> None:
    """A push notification: quick (a millisecond of I/O)."""
    started = time.time()
    time.sleep(0.001)
    _trace(started)


@app.job("unfurl.url", queue="default", max_attempts=4, backoff_s=0.3)
def unfurl(url: str, channel: str) -> None:
    """Fetches a page preview: slower, and 5% fail their first attempt."""
    started = time.time()
    info = current_job()
    if info is not None and info.attempt == 1 and _flaky(url, 5):
        raise ConnectionError(f"upstream timed out fetching {url}")
    time.sleep(0.002)
    _trace(started)


@app.job("billing.charge", queue="billing", max_attempts=3, backoff_s=0.2)
def charge(invoice: str, amount_cents: int, lines: list[str]) -> None:
    """Charges an invoice: a bigger payload; a few cards are declined for good."""
    started = time.time()
    if amount_cents % 499 == 0:
        raise PermanentError(f"card declined for {invoice}")
    time.sleep(0.001)
    _trace(started)


@app.job("reminders.send", queue="default")
def remind(user: int, text: str) -> None:
    """A reminder enqueued with a delay."""
    _trace(time.time())
