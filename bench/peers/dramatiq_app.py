"""Dramatiq on the same Redis: `dramatiq peers.dramatiq_app -p 2`."""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from peers import record

broker = RedisBroker(  # type: ignore[no-untyped-call]
    url=os.environ["BENCH_REDIS_URL"], namespace=f"dramatiq-{record.RUN}"
)
dramatiq.set_broker(broker)


@dramatiq.actor(max_retries=0)
def noop(sent: float) -> None:
    """A no-op job."""
    record.job(sent)


def enqueue(sent: list[float]) -> None:
    """One message per entry, as a Dramatiq producer sends them."""
    for s in sent:
        noop.send(s)
