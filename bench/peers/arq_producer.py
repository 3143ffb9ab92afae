"""Enqueues arq jobs for the pipeline benchmark, from arq's own virtualenv.

Reads lines of JSON lists of send times from stdin; enqueues one job per
entry; answers each line with "ok" once its jobs are in Redis.
"""

from __future__ import annotations

import asyncio
import json
import sys

from arq import create_pool

from peers.arq_app import QUEUE, WorkerSettings


async def main() -> None:
    pool = await create_pool(WorkerSettings.redis_settings)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        for sent in json.loads(line):
            await pool.enqueue_job("noop", sent, _queue_name=QUEUE)
        sys.stdout.write("ok\n")
        sys.stdout.flush()
    await pool.aclose()


if __name__ == "__main__":
    asyncio.run(main())
