"""Where a job's time goes on the Kafka path, at a fixed offered rate: from
enqueue (the envelope's enqueue time, set by the client) to the broker's
append (the record's LogAppendTime, which the relay stamps into the envelope:
millisecond resolution, truncated) and from there to the relay reading it
(the relay's `relayed` stamp, taken as it reads the record, before its Redis
write). No worker runs: the jobs stay queued and are read back from Redis.
What follows, the Redis write and a worker's pick-up, is the direct path's
own latency (`bench/latency_sweep.py`).

    python bench/stage_latency.py [--rate 1000] [--seconds 3]

Prints p50/p90/p99 of each stage. Loopback only; bounded in jobs and time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import conveyor  # noqa: E402
import pipeline_bench as pb  # noqa: E402 - bench/ is put on the path just above
from bench_topics import delete_new_topics_at_exit  # noqa: E402
from conveyor import _core  # noqa: E402
from conveyor.devservers import DevServers  # noqa: E402

KAFKA, RELAYED = 1, 2  # stage codes (docs/envelope.md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=1000, help="offered jobs/s")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    rate = max(10, min(args.rate, 50_000))
    total = int(rate * max(1.0, min(args.seconds, 30.0)))
    servers = DevServers.default()
    servers.up()
    delete_new_topics_at_exit(servers.kafka.bootstrap)
    run = f"st{uuid.uuid4().hex[:6]}"
    env = pb.Env(servers.kafka.bootstrap, servers.redis.url, run, 0)
    relay_cmd = pb.pipelines(env, 0, 0)[0].components["relay"][0]
    producer = pb.ClientProducer(env)
    relay = subprocess.Popen(
        relay_cmd,
        cwd=HERE,
        env=env.process_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = _core.RedisStore(servers.redis.url)
    try:
        producer.send([0.0])
        producer.close()
        deadline = time.monotonic() + 60
        while store.ready_len(run, "default") < 1:
            if time.monotonic() > deadline or relay.poll() is not None:
                raise SystemExit("the relay relayed nothing within 60 s")
            time.sleep(0.05)
        per_tick = max(1, rate // 100)
        began, sent = time.monotonic(), 0
        while sent < total:
            pause = began + (sent // per_tick) * 0.01 - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            producer.send([time.time()] * per_tick)
            sent += per_tick
        producer.close()
        deadline = time.monotonic() + 30
        while store.ready_len(run, "default") < sent + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        queued = store.peek_ready(run, "default", store.ready_len(run, "default"))
    finally:
        relay.terminate()
        relay.wait(timeout=60)
    report(queued, rate, total)


def report(queued: list[bytes], rate: int, total: int) -> None:
    """Prints each stage's percentiles over the envelopes read back."""
    stages: dict[str, list[float]] = {"enqueue > Kafka append": [], "Kafka append > relay read": []}
    for envelope in map(conveyor.Envelope.decode, queued):
        at = dict(envelope.stages)
        if KAFKA in at and RELAYED in at:
            stages["enqueue > Kafka append"].append(at[KAFKA] - envelope.enqueued_at_us)
            stages["Kafka append > relay read"].append(at[RELAYED] - at[KAFKA])
    print(f"{rate:,} jobs/s offered for {total / rate:.0f} s through the Python client, one relay:")
    for name, micros in stages.items():
        xs = sorted(micros)
        if not xs:
            raise SystemExit("no job carried both stamps")
        p = [xs[int(len(xs) * q)] / 1000 for q in (0.5, 0.9, 0.99)]
        print(
            f"  {name}: p50 {p[0]:.2f} ms, p90 {p[1]:.2f} ms, p99 {p[2]:.2f} ms ({len(xs):,} jobs)"
        )
    print("  (the append time is whole milliseconds, truncated: the first stage reads up to 1 ms")
    print("   short and the second up to 1 ms long; their sum is exact)")


if __name__ == "__main__":
    main()
