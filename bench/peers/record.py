"""What every system's no-op handler does: count, and keep enqueue-to-start
latency when the job carries its send time. Both go to Redis once per 100
jobs, so the bookkeeping costs every system the same and almost nothing.

Configured by the environment: BENCH_REDIS_URL, BENCH_RUN (a key prefix).
"""

from __future__ import annotations

import os
import threading
import time

import redis

_client = redis.Redis.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:16379/0"))
RUN = os.environ.get("BENCH_RUN", "bench")
DONE_KEY = f"bench:{RUN}:done"
LATENCY_KEY = f"bench:{RUN}:latency"
_lock = threading.Lock()
#: Jobs counted since the last flush, and their latencies.
_pending = [0]
_latencies: list[float] = []


def job(sent: float) -> None:
    """The no-op handler body: `sent` is the producer's time.time() or 0."""
    started = time.time()
    with _lock:
        _pending[0] += 1
        if sent:
            _latencies.append(started - sent)
        if _pending[0] < 100:
            return
        n, _pending[0] = _pending[0], 0
        samples, _latencies[:] = list(_latencies), []
    pipe = _client.pipeline(transaction=False)
    pipe.incrby(DONE_KEY, n)
    if samples:
        pipe.rpush(LATENCY_KEY, *samples)
    pipe.execute()
