"""Two builds of the extension side by side: the Conveyor rows of the
end-to-end benchmark (throughput and CPU, no latency runs) with extension A,
then B, then B, then A, round after round, medians per build. For changes to
the binding itself (such as building for the stable ABI), where both builds
must run on one machine in one session.

    python bench/extension_ab.py A.so B.so [--rounds 3] [--jobs 200000]

Each file is an `_core` extension; it is put in place as
`python/conveyor/_core.<suffix>` for its runs (the suffix from its name) and
removed afterwards, so whichever is in place is the one imported. The
extension installed there before is put back at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import redis

from bench_topics import delete_new_topics_at_exit
from conveyor.devservers import DevServers
from pipeline_bench import Env, measure, pipelines, socket_port

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "conveyor"
ROWS = ("Python client", "HTTP gate", "direct to Redis")


def run_row(row: str, jobs: int) -> float:
    """One row's jobs/s, measured in a process of its own, so that every
    part of the row (the producer in that process too) loads the build in
    place."""
    done = subprocess.run(
        [sys.executable, __file__, "--row", row, "--jobs", str(jobs)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    answer = next(line for line in done.stdout.splitlines() if line.startswith("{"))
    return float(json.loads(answer)["jobs_per_s"])


def child(row: str, jobs: int) -> None:
    servers = DevServers.default()
    servers.up()
    delete_new_topics_at_exit(servers.kafka.bootstrap)
    client = redis.Redis.from_url(servers.redis.url)
    with socket_port() as port:
        env = Env(servers.kafka.bootstrap, servers.redis.url, f"ab{uuid.uuid4().hex[:6]}", port)
    pipe = next(p for p in pipelines(env, jobs, 0) if row.lower() in p.name.lower())
    got: dict[str, Any] = measure(pipe, env, client, [], 0.0)
    print(json.dumps({"jobs_per_s": got["jobs_per_s"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("a", type=Path, nargs="?")
    parser.add_argument("b", type=Path, nargs="?")
    parser.add_argument("--row", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=200_000)
    args = parser.parse_args()
    if args.row:
        child(args.row, args.jobs)
        return
    if args.a is None or args.b is None:
        parser.error("name two extension files, A and B")
    DevServers.default().up()
    builds = {"A": args.a, "B": args.b}
    got: dict[str, dict[str, list[float]]] = {b: {r: [] for r in ROWS} for b in builds}
    aside = Path(tempfile.mkdtemp(prefix="conveyor-ab-"))
    installed = list(PACKAGE.glob("_core.*.so"))
    for so in installed:
        shutil.move(so, aside / so.name)
    try:
        rounds(builds, got, args)
    finally:
        for so in installed:
            shutil.move(aside / so.name, so)
    print(f"\n| row | A {args.a.name} | B {args.b.name} | B / A |\n|---|---:|---:|---:|")
    for row in ROWS:
        a, b = (statistics.median(got[k][row]) for k in ("A", "B"))
        print(f"| {row} | {a:,.0f} | {b:,.0f} | {b / a:.2f} |")
    for build in builds:
        for row in ROWS:
            print(build, row, [round(x) for x in got[build][row]])


def rounds(
    builds: dict[str, Path],
    got: dict[str, dict[str, list[float]]],
    args: argparse.Namespace,
) -> None:
    """A, B, B, A per round, each build in place for its runs."""
    for r in range(max(1, min(args.rounds, 10))):
        for build in ("A", "B", "B", "A"):
            so = builds[build]
            target = PACKAGE / f"_core.{so.name.split('.', 1)[1]}"
            shutil.copy(so, target)
            try:
                for row in ROWS:
                    print(f"round {r + 1}, {build} ({so.name}), {row}", flush=True)
                    got[build][row].append(run_row(row, args.jobs))
            finally:
                target.unlink()


if __name__ == "__main__":
    main()
