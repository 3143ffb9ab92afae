"""arq on the same Redis, run from its own virtualenv (arq pins redis-py < 6):
`arq peers.arq_app.WorkerSettings`."""

from __future__ import annotations

import os
from typing import Any

from arq.connections import RedisSettings

from peers import record

QUEUE = f"arq:{record.RUN}"


async def noop(ctx: dict[str, Any], sent: float) -> None:
    """A no-op job."""
    record.job(sent)


class WorkerSettings:
    """What `arq` reads to run a worker."""

    functions = [noop]  # noqa: RUF012 - arq reads a plain class attribute
    redis_settings = RedisSettings.from_dsn(os.environ["BENCH_REDIS_URL"])
    queue_name = QUEUE
    max_jobs = 100
    keep_result = 0
