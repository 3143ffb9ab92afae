"""The cost of trust features that are on by default, each on and off, end to
end through the Python client (Kafka, relay, 2 worker processes) and on the
direct path: acknowledgement by every in-sync replica with idempotence
(`acks=all`, against the leader's alone), keeping ended jobs findable by id
(job history, docs/lookup.md) and counting jobs at every hop (tallies,
docs/telemetry.md#counts-per-hop); and the price of keeping each job's
result, which is off until a job type asks for it. Worker metrics and health
are always on and in every row; traces and canaries are off by default.

Rows run interleaved, round after round, each round in a rotated order, so
drift on a noisy machine spreads over every setting; the table gives the
median of each and its ratio to the same path with both features off.
Writes bench/results/cost.md and cost.json.

    python bench/cost_bench.py [--rounds 5] [--jobs 200000]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis

import conveyor
from bench_topics import delete_new_topics_at_exit
from conveyor.devservers import DevServers
from pipeline_bench import Env, measure, pipelines, socket_port, write_results

#: setting -> environment of the relay and workers (the client follows it too).
SETTINGS: dict[str, dict[str, str]] = {
    "defaults (acks=all, history 300 s, tallies on)": {},
    "leader acks": {"CONVEYOR_ACKS": "leader"},
    "history off": {"CONVEYOR_JOB_HISTORY_S": "0"},
    "tallies off": {"CONVEYOR_TALLIES": "off"},
    "all three off": {
        "CONVEYOR_ACKS": "leader",
        "CONVEYOR_JOB_HISTORY_S": "0",
        "CONVEYOR_TALLIES": "off",
    },
    # Not a default: what a job type pays for `store_result=True`.
    "defaults and results kept": {"CONVEYOR_BENCH_RESULTS": "on"},
}
BASE = "all three off"
PATHS = ("Python client", "direct to Redis")


@dataclass
class SetEnv(Env):
    """An `Env` whose in-process client follows the row's settings too."""

    @property
    def settings(self) -> conveyor.Settings:
        off = self.extra
        return dataclasses.replace(
            super().settings,
            acks=off.get("CONVEYOR_ACKS", "all"),
            job_history_s=float(off.get("CONVEYOR_JOB_HISTORY_S", 300.0)),
            tallies=off.get("CONVEYOR_TALLIES") != "off",
        )


def one(
    servers: DevServers, client: redis.Redis, path: str, extra: dict[str, str], jobs: int
) -> dict[str, Any]:
    """One row: `path` with the settings in `extra`, throughput and CPU only."""
    run = f"cb{uuid.uuid4().hex[:6]}"
    with socket_port() as port:
        env = SetEnv(servers.kafka.bootstrap, servers.redis.url, run, port, dict(extra))
    pipe = next(p for p in pipelines(env, jobs, 0) if path.lower() in p.name.lower())
    return measure(pipe, env, client, [], 0.0)


def render(medians: dict[str, dict[str, dict[str, Any]]], meta: dict[str, Any]) -> str:
    lines = [
        f"The cost of default features, {meta['when']}, {meta['cores']} cores, medians of "
        f"{meta['rounds']} interleaved rounds of {meta['jobs']:,} jobs (`{meta['command']}`).",
        "",
        f"| path | setting | jobs/s end to end | vs {BASE} | CPU s per 100k jobs |",
        "|---|---|---:|---:|---|",
    ]
    for path, rows in medians.items():
        base = rows[BASE]["jobs_per_s"]
        for name, row in rows.items():
            cpu = ", ".join(f"{k} {v:.2f}" for k, v in row["cpu_s_per_100k"].items())
            lines.append(
                f"| {path} | {name} | {row['jobs_per_s']:,.0f} "
                f"| {row['jobs_per_s'] / base:.2f} | {cpu} |"
            )
    return "\n".join(lines) + "\n"


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    parts = rows[0]["cpu_s_per_100k"].keys()
    return {
        "jobs_per_s": statistics.median(r["jobs_per_s"] for r in rows),
        "all_jobs_per_s": [r["jobs_per_s"] for r in rows],
        "cpu_s_per_100k": {
            k: statistics.median(r["cpu_s_per_100k"][k] for r in rows) for k in parts
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=200_000, help="jobs per row and round")
    parser.add_argument("--only", help="run only the path whose name contains this")
    args = parser.parse_args()
    rounds = max(1, min(args.rounds, 20))
    jobs = max(10_000, min(args.jobs, 2_000_000))
    servers = DevServers.default()
    servers.up()
    delete_new_topics_at_exit(servers.kafka.bootstrap)
    client = redis.Redis.from_url(servers.redis.url)
    paths = [p for p in PATHS if not args.only or args.only.lower() in p.lower()]
    names = list(SETTINGS)
    got: dict[str, dict[str, list[dict[str, Any]]]] = {p: {n: [] for n in names} for p in paths}
    for r in range(rounds):
        print(f"round {r + 1} of {rounds}", flush=True)
        for path in paths:
            for name in names[r % len(names) :] + names[: r % len(names)]:
                print(f"  {path}, {name}", flush=True)
                row = one(servers, client, path, SETTINGS[name], jobs)
                got[path][name].append(row)
    medians = {p: {n: median_row(got[p][n]) for n in names} for p in paths}
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cores": os.cpu_count(),
        "rounds": rounds,
        "jobs": jobs,
        "command": f"python bench/cost_bench.py --rounds {rounds} --jobs {jobs}",
    }
    write_results("cost", render(medians, meta), {**meta, "medians": medians})


if __name__ == "__main__":
    main()
