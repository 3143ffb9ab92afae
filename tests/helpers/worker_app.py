"""An application for worker tests run as `conveyor worker tests.helpers.worker_app:app`.

Settings come from the environment (CONVEYOR_REDIS_URL, CONVEYOR_NAMESPACE),
as for any deployed worker. Handlers record each execution in Redis, so a
test can count how often every job ran, across processes that get killed.
"""

from __future__ import annotations

import logging
import os
import time

import redis

import conveyor

app = conveyor.Conveyor()
_client = redis.Redis.from_url(app.settings.redis_url)
RUNS_KEY = f"test:{app.settings.namespace}:runs"


@app.job("test.record", max_attempts=25)
def record(i: int) -> None:
    """Counts one execution of job `i`."""
    _client.hincrby(RUNS_KEY, str(i), 1)


@app.job("test.sleep", max_attempts=25)
def sleep(i: int, seconds: float) -> None:
    """Runs for `seconds`, then counts one execution of job `i`."""
    time.sleep(seconds)
    _client.hincrby(RUNS_KEY, str(i), 1)


@app.job("test.pid")
def pid() -> None:
    """Records which process ran it."""
    _client.rpush(f"{RUNS_KEY}:pids", os.getpid())


@app.job("test.hold_gil", max_attempts=5)
def hold_gil(i: int, n: int) -> None:
    """Holds the GIL in one C call (`sum` over a range) for as long as `n`
    takes, then counts one execution of job `i`."""
    sum(range(n))
    _client.hincrby(RUNS_KEY, str(i), 1)


@app.job("test.block_once", max_attempts=5, timeout_s=0.5)
def block_once(i: int) -> None:
    """On its first attempt, blocks in a call the timeout cannot interrupt;
    later attempts count one execution of job `i`."""
    job = conveyor.current_job()
    if job is not None and job.attempt == 1:
        time.sleep(60)  # the timeout's exception waits for the call to return
    _client.hincrby(RUNS_KEY, str(i), 1)


@app.job("test.log")
def log_line(i: int) -> None:
    """Logs one line through `logging`, then counts one execution of job `i`."""
    logging.getLogger("worker_app").info("handling %s", i)
    _client.hincrby(RUNS_KEY, str(i), 1)
