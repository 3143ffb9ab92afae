"""A worker written in plain Python with redis-py, speaking Conveyor's Redis
protocol (the same fetch and settle Lua scripts, the envelope decoded by
bench/pure_envelope.py): what a team without the Rust core would build.

Run: `python -m peers.pure_worker` (BENCH_REDIS_URL, BENCH_RUN as namespace).
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from pathlib import Path

import redis

import pure_envelope
from peers import record

SCRIPTS = (
    Path(__file__).resolve().parents[2] / "rust" / "conveyor-core" / "src" / "store" / "scripts"
)


def main() -> None:
    client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    fetch = client.register_script((SCRIPTS / "fetch-6.lua").read_text())
    settle = client.register_script((SCRIPTS / "settle-11.lua").read_text())
    base = f"cv:{record.RUN}:{{default}}"
    keys = {
        k: f"{base}:{k}"
        for k in (
            *("ready", "scheduled", "leases", "dead", "errors", "unique", "counts"),
            *("progress", "open", "cancelled"),
        )
    }
    handlers = {"bench.noop": record.job}
    worker = uuid.uuid4().hex[:8]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    seq = 0
    while not stopping:
        seq += 1
        token = f"{worker}:{seq}"
        lease = f"{base}:lease:{token}"
        _, jobs = fetch(
            keys=[
                *(keys["ready"], keys["scheduled"], keys["leases"], lease),
                *(f"{base}:wake", keys["cancelled"]),
            ],
            args=[token, 100, 30_000],
        )[:2]
        if not jobs:
            client.blpop([f"{base}:wake"], 0.25)
            continue
        # No history of ended jobs (its time to live 0), no counts per hop.
        done: list[bytes | str | int] = [token, 0, 0]
        for slot, raw in enumerate(jobs, 1):
            env = pure_envelope.decode(raw)
            call = json.loads(env.payload)
            handlers[env.job_type](*call["args"], **call["kwargs"])
            done += ["D", slot, "", ""]
        settle(
            keys=[
                lease,
                keys["leases"],
                keys["scheduled"],
                keys["dead"],
                keys["errors"],
                keys["unique"],
                keys["counts"],
                keys["progress"],
                keys["open"],
                f"{base}:history:0",
                keys["cancelled"],
            ],
            args=done,
        )


if __name__ == "__main__":
    main()
