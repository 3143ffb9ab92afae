"""RQ on the same Redis: `rq worker -w rq.worker.SimpleWorker --burst`."""

from __future__ import annotations

import os

import redis
from rq import Queue

from peers import record

queue = Queue(f"rq-{record.RUN}", connection=redis.Redis.from_url(os.environ["BENCH_REDIS_URL"]))


def noop(sent: float) -> None:
    """A no-op job."""
    record.job(sent)


def enqueue(sent: list[float]) -> None:
    """Jobs in pipelined batches (`enqueue_many`), RQ's fastest way in."""
    for i in range(0, len(sent), 1000):
        queue.enqueue_many([Queue.prepare_data(noop, (s,)) for s in sent[i : i + 1000]])
