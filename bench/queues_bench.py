"""One worker pool serving many queues: what each fetch costs when the jobs
are spread over 1,000 queues, against the same jobs in one queue.

For each queue count asked for, one worker process (`--threads` threads)
serves all the queues. Measured: with every queue empty, the CPU the worker
and Redis use while it waits for work (share of one core); then N no-op jobs,
admitted straight into Redis spread evenly over the queues (the direct path:
no Kafka, so the worker alone is measured), drained: jobs/s (10% to 90%
done) and the worker's CPU seconds per 100,000 jobs.

    python bench/queues_bench.py [--queues 1,1000] [--jobs 200000]
        [--threads 4] [--idle-seconds 10]

Writes bench/results/queues.md and queues.json. All loopback; every wait is
bounded.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis

import conveyor
from conveyor import _core
from conveyor.devservers import DevServers
from pipeline_bench import Progress, cpu_seconds, cpu_share, write_results

HERE = Path(__file__).resolve().parent


def redis_pid(servers: DevServers) -> list[int]:
    info = redis.Redis.from_url(servers.redis.url).info("server")
    return [int(info["process_id"])]


def measure(
    servers: DevServers, queues: int, jobs: int, threads: int, idle_s: float
) -> dict[str, Any]:
    names = [f"q{i}" for i in range(queues)]
    run = f"qb{uuid.uuid4().hex[:6]}"
    client = redis.Redis.from_url(servers.redis.url)
    done_key = f"bench:{run}:done"
    env = {
        **os.environ,
        "CONVEYOR_REDIS_URL": servers.redis.url,
        "CONVEYOR_NAMESPACE": run,
        "BENCH_REDIS_URL": servers.redis.url,
        "BENCH_RUN": run,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
    }
    argv = [sys.executable, "-m", "conveyor", "worker", "peers.conveyor_app:app", "--no-setup"]
    argv += ["--threads", str(threads), "--report-every", "0"]
    for name in names:
        argv += ["--queue", name]
    print(f"  {queues:,} queue(s), 1 worker process x {threads} threads", flush=True)
    worker = subprocess.Popen(argv, cwd=HERE, env=env, stdout=subprocess.DEVNULL)
    try:
        time.sleep(3.0)  # started, and waiting for work
        if worker.poll() is not None:
            raise SystemExit("the worker exited at start")
        idle = cpu_share({"worker": [worker.pid], "redis": redis_pid(servers)}, idle_s)
        print(f"    idle: worker {idle['worker']:.1%}, Redis {idle['redis']:.1%}", flush=True)
        store = _core.RedisStore(servers.redis.url)
        envelope = conveyor.Envelope("bench.noop", _core.encode_call([0.0], {})).encode()
        per_queue, extra = divmod(jobs, queues)
        cpu_before = cpu_seconds([worker.pid])
        progress = Progress(jobs)
        for i, name in enumerate(names):
            n = per_queue + (1 if i < extra else 0)
            for start in range(0, n, 5000):
                store.admit(run, name, [envelope] * min(5000, n - start))
        deadline = time.monotonic() + 60 + jobs / 1000
        while time.monotonic() < deadline:
            done = progress.see(int(client.get(done_key) or 0))
            if done >= jobs - 100 or worker.poll() is not None:
                break
            time.sleep(0.01)
        cpu = cpu_seconds([worker.pid]) - cpu_before
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
    rate = progress.rate()
    per_100k = cpu * 100_000 / jobs
    print(f"    {rate:,.0f} jobs/s, worker {per_100k:.2f} CPU s per 100k jobs", flush=True)
    return {
        "queues": queues,
        "threads": threads,
        "idle_cpu": idle,
        "jobs_per_s": rate,
        "worker_cpu_s_per_100k": per_100k,
    }


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"One worker process serving many queues, {meta['when']}, {meta['cores']} cores, "
        f"{meta['jobs']:,} no-op jobs spread evenly over the queues, idle for "
        f"{meta['idle_s']:.0f} s (`{meta['command']}`).",
        "",
        "| queues | idle CPU: worker / Redis | jobs/s | worker CPU s per 100k jobs |",
        "|---:|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['queues']:,} | {r['idle_cpu']['worker']:.1%} / {r['idle_cpu']['redis']:.1%} "
            f"| {r['jobs_per_s']:,.0f} | {r['worker_cpu_s_per_100k']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queues", default="1,1000", help="comma-separated queue counts")
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    args = parser.parse_args()
    counts = [max(1, min(int(n), 5000)) for n in args.queues.split(",")]
    jobs = max(1000, min(args.jobs, 2_000_000))
    idle_s = max(2.0, min(args.idle_seconds, 120.0))
    servers = DevServers.default()
    servers.up()
    rows = [measure(servers, n, jobs, args.threads, idle_s) for n in counts]
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cores": os.cpu_count(),
        "jobs": jobs,
        "idle_s": idle_s,
        "command": "python bench/queues_bench.py " + " ".join(sys.argv[1:]),
    }
    write_results("queues", render(rows, meta), {**meta, "rows": rows})


if __name__ == "__main__":
    main()
