"""What every system's no-op handler does: count, and keep enqueue-to-start
latency when the job carries its send time. Both go to Redis once per 100
jobs, so the bookkeeping costs every system the same and almost nothing.
A system that can say where a slow job waited (`slow`) keeps that too.

Configured by the environment: BENCH_REDIS_URL, BENCH_RUN (a key prefix).
"""

from __future__ import annotations

import json
import os
import threading
import time

import redis

_client = redis.Redis.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:16379/0"))
RUN = os.environ.get("BENCH_RUN", "bench")
DONE_KEY = f"bench:{RUN}:done"
LATENCY_KEY = f"bench:{RUN}:latency"
SLOW_KEY = f"bench:{RUN}:slow"
#: A job that waited longer than this to start is a stall worth explaining.
SLOW_S = 0.1
_lock = threading.Lock()
#: Jobs counted since the last flush, and their latencies.
_pending = [0]
_latencies: list[float] = []
#: When this process last kept a slow job (monotonic seconds).
_last_slow = [-1.0]


def job(sent: float) -> float:
    """The no-op handler body: `sent` is the producer's time.time() or 0.
    Returns how long the job waited to start (0 without `sent`)."""
    started = time.time()
    waited = started - sent if sent else 0.0
    with _lock:
        _pending[0] += 1
        if sent:
            _latencies.append(waited)
        if _pending[0] < 100:
            return waited
        n, _pending[0] = _pending[0], 0
        samples, _latencies[:] = list(_latencies), []
    pipe = _client.pipeline(transaction=False)
    pipe.incrby(DONE_KEY, n)
    if samples:
        pipe.rpush(LATENCY_KEY, *samples)
    pipe.execute()
    return waited


def slow(stages_ms: dict[str, float]) -> None:
    """Keeps where a slow job waited: one job per 100 ms at most, so that a
    queue at saturation (every job slow) costs no round trip per job; the
    newest 100 such jobs are kept."""
    now = time.monotonic()
    with _lock:
        if now - _last_slow[0] < 0.1:
            return
        _last_slow[0] = now
    pipe = _client.pipeline(transaction=False)
    pipe.lpush(SLOW_KEY, json.dumps(stages_ms))
    pipe.ltrim(SLOW_KEY, 0, 99)
    pipe.execute()
