"""What Conveyor costs when nothing happens: CPU of each component left idle
(a process holding a client that enqueued once, a relay of one queue, the
gate, a worker process), in % of one core, with the threads that spend it.
Every web process that can enqueue holds a client, so its idle cost is paid
many times over on a fleet.

    python bench/idle_cpu.py [--seconds 20]

Each component starts, serves one job, then is left alone for `--seconds`
after a 5 s settle; its threads' CPU is read from /proc. Writes
bench/results/idle.md and .json. Loopback only; bounded in time.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import pipeline_bench as pb  # noqa: E402 - bench/ is put on the path just above
from bench_topics import delete_new_topics_at_exit  # noqa: E402
from conveyor.devservers import DevServers  # noqa: E402

#: A process that enqueues one job, waits for its ack, then only holds the client.
CLIENT = (
    "import time, conveyor\n"
    "app = conveyor.Conveyor()\n"
    "app.enqueue_many('bench.noop', [[0.0]]).wait(60)\n"
    "print('ready', flush=True)\n"
    "time.sleep(3600)\n"
)


def threads(pid: int) -> dict[tuple[int, str], int]:
    """CPU ticks of each thread of `pid` and of its children: (tid, name) -> ticks."""
    out: dict[tuple[int, str], int] = {}
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue  # the thread ended
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            out[(int(task.name), name)] = int(fields[11]) + int(fields[12])
    return out


def measure(procs: dict[str, subprocess.Popen[bytes]], seconds: float) -> list[dict[str, Any]]:
    """Each component's CPU over `seconds` after a 5 s settle, with its
    busiest threads."""
    print(f"settling 5 s, then {seconds:.0f} s idle ...", flush=True)
    time.sleep(5.0)
    before = {name: threads(p.pid) for name, p in procs.items()}
    time.sleep(seconds)
    after = {name: threads(p.pid) for name, p in procs.items()}
    rows = []
    for name, proc in procs.items():
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited during the measurement")
        spent = busiest_threads(before[name], after[name], seconds, top=None)
        rows.append(
            {
                "component": name,
                "cpu_pct": sum(pct for _, pct in spent),
                "top_threads": [(n, pct) for n, pct in spent[:3] if pct > 0],
            }
        )
    return rows


def busiest_threads(
    before: dict[tuple[int, str], int],
    after: dict[tuple[int, str], int],
    seconds: float,
    top: int | None = 5,
) -> list[tuple[str, float]]:
    """Each thread's CPU between two `threads` readings `seconds` apart, in %
    of one core, busiest first (the first `top`)."""
    hz = os.sysconf("SC_CLK_TCK")
    spent = [(k[1], (v - before.get(k, 0)) / hz / seconds * 100) for k, v in after.items()]
    return sorted(spent, key=lambda kv: -kv[1])[:top]


def render(rows: list[dict[str, Any]], seconds: float) -> str:
    """The table of bench/results/idle.md."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"Idle CPU, {when}, % of one core over {seconds:.0f} s "
        "(`python bench/idle_cpu.py`); the threads that spend most.",
        "",
        "| component | idle CPU | busiest threads |",
        "|---|---:|---|",
    ]
    for r in rows:
        busiest = ", ".join(f"{n} {pct:.2f}%" for n, pct in r["top_threads"]) or "none"
        lines.append(f"| {r['component']} | {r['cpu_pct']:.2f}% | {busiest} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    seconds = max(5.0, min(args.seconds, 300.0))
    servers = DevServers.default()
    servers.up()
    delete_new_topics_at_exit(servers.kafka.bootstrap)
    run = f"idle{uuid.uuid4().hex[:6]}"
    with pb.socket_port() as port:
        env = pb.Env(servers.kafka.bootstrap, servers.redis.url, run, port)
    pb.ClientProducer(env)  # creates the queue's topic
    py, cv = sys.executable, [sys.executable, "-m", "conveyor"]
    components = {
        "client (enqueued once)": [py, "-c", CLIENT],
        "relay (1 queue)": [*cv, "relay", "default", "--report-every", "3600"],
        "gate": [*cv, "gate", "--bind", f"127.0.0.1:{port}", "--route", "bench.noop=default"],
        "worker (1 process, 4 threads)": [
            *cv,
            "worker",
            "peers.conveyor_app:app",
            "--no-setup",
            "--processes",
            "1",
            "--threads",
            "4",
            "--report-every",
            "0",
        ],
    }
    procs = {
        name: subprocess.Popen(
            cmd,
            cwd=HERE,
            env=env.process_env(),
            # Only the client speaks (its "ready"); nothing else may fill a pipe.
            stdout=subprocess.PIPE if cmd[1] == "-c" else subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, cmd in components.items()
    }
    try:
        client = procs["client (enqueued once)"]
        if client.stdout is None or client.stdout.readline().strip() != b"ready":
            raise SystemExit("the client process did not enqueue its job")
        # One request through the gate, so that its producer is connected too.
        deadline = time.monotonic() + 60
        while True:
            try:
                gate = pb.GateProducer(env)
                gate.send([0.0])
                gate.close()
                break
            except (OSError, RuntimeError) as e:
                if time.monotonic() > deadline:
                    raise SystemExit(f"the gate did not take a job within 60 s: {e}") from None
                time.sleep(0.2)
        rows = measure(procs, seconds)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    pb.write_results("idle", render(rows, seconds), {"rows": rows})


if __name__ == "__main__":
    main()
