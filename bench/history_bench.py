"""The cost of keeping ended jobs findable by id (docs/lookup.md): one worker
thread's fetch + settle rate with the history off, at its default size limit
and with no limit (interleaved rounds, medians), and the Redis memory each
recorded job takes, for a small and a larger envelope.

    python bench/history_bench.py [--rounds 3] [--fetches 1500]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Sequence

import conveyor
from conveyor import _core
from conveyor.devservers import DevServers

#: history_s, history_max_bytes
SETTINGS = {
    "off": (0.0, 0),
    "default (32 MiB per queue)": (300.0, 32 << 20),
    "no size limit": (300.0, 1 << 40),
}


def settle_rate(url: str, history: tuple[float, int], fetches: int) -> float:
    """Jobs/s of fetching and settling batches of 100, 2,000 jobs queued."""
    store = _core.RedisStore(url)
    ns = f"hb{uuid.uuid4().hex[:6]}"
    batch = [
        conveyor.Envelope("bench.noop", _core.encode_call([0.0], {})).encode() for _ in range(100)
    ]
    for _ in range(20):
        store.admit(ns, "default", batch)
    queues = _core.WorkQueues(
        url, ns, [("default", 1)], history_s=history[0], history_max_bytes=history[1]
    )
    spent = 0.0
    for _ in range(fetches):
        began = time.perf_counter()
        leased = queues.fetch(100)
        assert leased is not None
        queues.settle(leased, [time.time()] * len(leased), {})
        spent += time.perf_counter() - began
        store.admit(ns, "default", batch)  # keep the depth; not timed
    store.purge(ns, "default")
    return fetches * 100 / spent


def bytes_per_job(url: str, servers: DevServers, args: Sequence[object]) -> tuple[int, float]:
    """(envelope bytes, Redis bytes per recorded job) for 10,000 jobs."""
    store = _core.RedisStore(url)
    ns = f"hm{uuid.uuid4().hex[:6]}"
    payload = _core.encode_call(list(args), {})
    jobs = [conveyor.Envelope("bench.noop", payload).encode() for _ in range(10_000)]
    for i in range(0, len(jobs), 1000):
        store.admit(ns, "default", jobs[i : i + 1000])
    queues = _core.WorkQueues(url, ns, [("default", 1)], history_s=300, history_max_bytes=1 << 40)
    done = 0
    while done < len(jobs):
        leased = queues.fetch(100)
        assert leased is not None
        queues.settle(leased, [time.time()] * len(leased), {})
        done += len(leased)
    used = 0
    bucket = int(time.time()) // 10
    for n in range(bucket - 2, bucket + 2):
        reply = servers.redis.ask(f"MEMORY USAGE cv:{ns}:{{default}}:history:{n}".encode())
        if reply.startswith(b":"):
            used += int(reply[1:].split(b"\r")[0])
    store.purge(ns, "default")
    return len(jobs[0]), used / len(jobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--fetches", type=int, default=1500, help="batches of 100 per run")
    args = parser.parse_args()
    servers = DevServers.default()
    servers.redis.up()
    url = servers.redis.url
    rates: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for round_ in range(max(1, args.rounds)):
        order = list(SETTINGS) if round_ % 2 == 0 else list(reversed(SETTINGS))
        for name in order:
            rates[name].append(settle_rate(url, SETTINGS[name], max(1, args.fetches)))
            print(f"  round {round_ + 1}: {name}: {rates[name][-1]:,.0f} jobs/s", flush=True)
    off = statistics.median(rates["off"])
    print("\n| history | fetch + settle, one thread (median) | vs off |")
    print("|---|---|---|")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"| {name} | {median:,.0f} jobs/s | {median / off:.2f}x |")
    print("\n| envelope | Redis per recorded job |")
    print("|---|---|")
    for call in ([0.0], ["x" * 100]):
        size, used = bytes_per_job(url, servers, call)
        print(f"| {size} bytes | {used:,.0f} bytes |")


if __name__ == "__main__":
    main()
