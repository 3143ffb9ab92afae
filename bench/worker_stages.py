"""A worker's CPU per no-op job, and its wall time per stage: one thread
fetching, running and settling batches of up to 100 jobs (`--batch`; as a
worker thread does with its default `max_batch`, without the keeper), in
this process, from jobs admitted into Redis first. With `--ab`, alternates
runs with the fast payload reader (`_core.decode_call`) on and off, to price
it side by side.

Each round runs two handlers: `bench`, the no-op every system's pipeline
bench runs (it counts its jobs into Redis, 100 at a time: about 1.2 us a
job, the same for every system), and `bare`, one that does nothing, which
leaves the worker's own cost per job: fetch, call, settle. A worker settles
each batch with the fetch of the next, in one round trip (the `settle`
stage); `--settle both` also runs `apart`, two round trips, beside it.

    python bench/worker_stages.py [--jobs 200000] [--rounds 3] [--ab] [--handler both|bench|bare]
        [--batch 100] [--settle together|apart|both]

Loopback only; bounded in jobs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent


def one_run(jobs: int, batch_size: int = 100) -> str:
    """Runs in a child process (see main): returns its report line."""
    sys.path.insert(0, str(HERE))
    import threading

    import conveyor
    from conveyor import _core
    from conveyor.runner import BatchRun
    from peers import conveyor_app

    if os.environ.get("BENCH_READER") == "off":
        _core.decode_call = lambda payload: None
    job_type = "bench.bare" if os.environ.get("BENCH_HANDLER") == "bare" else "bench.noop"
    for at in range(0, jobs, 5000):
        conveyor_app.enqueue([0.0] * min(5000, jobs - at), job_type)
    worker = conveyor.Worker(conveyor_app.app, threads=1, max_batch=batch_size)
    queues, runner, stopping = worker._queues, worker._runner, threading.Event()
    wall = {"fetch": 0.0, "run": 0.0, "settle": 0.0}
    # This thread's CPU per stage: the fetch and settle wait on Redis, so
    # their wall time is mostly Redis's, their CPU time is the worker's.
    cpu_of = {"fetch": 0.0, "run": 0.0, "settle": 0.0}
    done = 0
    cpu = time.process_time()

    def timed(stage: str, began: tuple[float, float]) -> None:
        wall[stage] += time.perf_counter() - began[0]
        cpu_of[stage] += time.thread_time() - began[1]

    def clocks() -> tuple[float, float]:
        return time.perf_counter(), time.thread_time()

    # As a worker thread does: each settle fetches the next batch in the
    # same round trip, a fetch goes alone only when there is none; `apart`
    # settles and fetches in two (the worker before settle_and_fetch).
    together = os.environ.get("BENCH_SETTLE") != "apart"
    batch = None
    while True:
        if batch is None:
            began = clocks()
            batch = queues.fetch(batch_size)
            timed("fetch", began)
            if batch is None:
                break
        ran = BatchRun()
        began = clocks()
        runner.run_batch(batch, stopping, ran, None)
        timed("run", began)
        done += len(batch)
        began = clocks()
        batch, _ = worker._settle(batch, ran, then_fetch=batch_size if together else 0)
        timed("settle", began)
    cpu = time.process_time() - cpu
    stages = ", ".join(
        f"{k} {cpu_of[k] / done * 1e6:.2f} ({wall[k] / done * 1e6:.2f})" for k in wall
    )
    return (
        f"{cpu / done * 1e6:.2f} us CPU per job; per stage, us of CPU (wall): {stages}"
        f" ({done:,} jobs)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ab", action="store_true", help="alternate the reader on and off")
    parser.add_argument("--handler", choices=("both", "bench", "bare"), default="both")
    parser.add_argument("--settle", choices=("together", "apart", "both"), default="together")
    parser.add_argument("--batch", type=int, default=100, help="jobs per fetch, 1 to 1000")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    jobs = max(1000, min(args.jobs, 2_000_000))
    batch_size = max(1, min(args.batch, 1000))
    if args.child:
        print(one_run(jobs, batch_size))
        return
    from conveyor.devservers import DevServers

    servers = DevServers.default()
    servers.up()
    handlers = ("bench", "bare") if args.handler == "both" else (args.handler,)
    readers = ("on", "off") if args.ab else ("on",)
    settles = ("together", "apart") if args.settle == "both" else (args.settle,)
    variants = [(h, r, t) for h in handlers for r in readers for t in settles]
    for round_ in range(max(1, min(args.rounds, 20))):
        for handler, reader, settle in variants:
            run = f"ws{uuid.uuid4().hex[:6]}"
            env = {
                **os.environ,
                "CONVEYOR_REDIS_URL": servers.redis.url,
                "CONVEYOR_NAMESPACE": run,
                "BENCH_REDIS_URL": servers.redis.url,
                "BENCH_RUN": run,
                "BENCH_READER": reader,
                "BENCH_HANDLER": handler,
                "BENCH_SETTLE": settle,
            }
            argv = [sys.executable, __file__, "--child", "--jobs", str(jobs)]
            argv += ["--batch", str(batch_size)]
            line = subprocess.run(
                argv, env=env, check=True, capture_output=True, text=True, timeout=600
            ).stdout.strip()
            name = f"{handler} handler, reader {reader}, settle {settle}"
            print(f"round {round_ + 1}, {name}: {line}", flush=True)


if __name__ == "__main__":
    main()
