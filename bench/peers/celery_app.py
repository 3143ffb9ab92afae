"""Celery on the same Redis: `celery -A peers.celery_app worker -c 2`."""

from __future__ import annotations

import os

from celery import Celery

from peers import record

app = Celery("bench", broker=os.environ["BENCH_REDIS_URL"])
app.conf.update(
    task_default_queue=f"celery-{record.RUN}",
    worker_hijack_root_logger=False,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop(sent: float) -> None:
    """A no-op job."""
    record.job(sent)


def enqueue(sent: list[float]) -> None:
    """One message per entry, as a Celery producer sends them."""
    for s in sent:
        noop.delay(s)
