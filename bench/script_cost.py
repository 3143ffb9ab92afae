"""Redis's own time in the worker's scripts per job: jobs admitted, then
fetched in batches and settled done (history on, as a worker keeps it), while
Redis's `INFO commandstats` counts the microseconds it spent in `EVALSHA`.
Redis is one thread shared by every worker, so this is the part of a job's
cost that more worker processes cannot spread.

    python bench/script_cost.py [--jobs 20000] [--batch 100] [--rounds 3]

To compare two builds, run it from each (another checkout's `python/` first on
PYTHONPATH), alternated. Loopback only; bounded in jobs and rounds.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid

import redis

import conveyor
from conveyor import _core
from conveyor.devservers import DevServers


def script_usec(client: redis.Redis) -> int:
    """Microseconds Redis has spent in scripts called by their digest."""
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("usec", 0))


def one_round(url: str, jobs: int, batch: int) -> float:
    """Us of Redis's time in fetch and settle scripts per job, for one queue."""
    namespace = f"sc{uuid.uuid4().hex[:6]}"
    store = _core.RedisStore(url)
    sent = [
        conveyor.Envelope("bench.noop", json.dumps({"args": [i], "kwargs": {}}).encode()).encode()
        for i in range(jobs)
    ]
    for at in range(0, jobs, 1000):
        store.admit(namespace, "q", sent[at : at + 1000])
    queues = _core.WorkQueues(url, namespace, [("q", 1)], lease_s=30.0)
    client = redis.Redis.from_url(url)
    before, done = script_usec(client), 0
    try:
        while (leased := queues.fetch(batch)) is not None:
            done += queues.settle(leased, [time.time()] * len(leased), {})[0]
        return (script_usec(client) - before) / max(done, 1)
    finally:
        store.purge(namespace, "q")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    jobs = max(1000, min(args.jobs, 1_000_000))
    batch = max(1, min(args.batch, 1000))
    servers = DevServers.default()
    servers.up()
    got = [one_round(servers.redis.url, jobs, batch) for _ in range(max(1, min(args.rounds, 20)))]
    print(
        f"Redis's time in fetch and settle scripts, us a job ({jobs:,} jobs, batches of {batch}):",
        " ".join(f"{g:.2f}" for g in got),
    )


if __name__ == "__main__":
    main()
