"""The chaos run (`make chaos`): a steady stream of jobs through the Python
client and the HTTP gate (half each), a relay process and a worker process,
on a 3-broker KRaft cluster and a Redis started here on loopback, while one
fault after another happens.

For each fault: jobs acknowledged to the client while it lasted, how many of
those ran, were lost, ran twice; enqueue errors the client saw; and the time
from the fault until every job acknowledged 2 s earlier or more had run (the
stream healthy again). Every wait is bounded; the table goes to stdout and
bench/results/chaos.md.

    python bench/chaos.py [--rate 1000] [--steady 6] [--only redis_wiped,relay_killed]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import conveyor  # noqa: E402
from conveyor.devservers import DevServers  # noqa: E402

KAFKA_PORT, REDIS_PORT = 29400, 26720
GATE = "127.0.0.1:29480"


@dataclass
class Stream:
    """Jobs enqueued at a steady rate, every other chunk through the gate
    (when there is one); which were acknowledged, and when."""

    app: conveyor.Conveyor
    rate: int
    gate: str | None = None
    next_seq: int = 0
    enqueued_at: dict[int, float] = field(default_factory=dict)
    acked: set[int] = field(default_factory=set)
    errors: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        chunk = max(1, self.rate // 20)
        waiters: list[threading.Thread] = []
        while not self.stop.is_set():
            began = time.monotonic()
            seqs = list(range(self.next_seq, self.next_seq + chunk))
            self.next_seq += chunk
            now = time.monotonic()
            for s in seqs:
                self.enqueued_at[s] = now
            if self.gate and len(waiters) % 2:
                t = threading.Thread(target=self._post, args=(seqs,), daemon=True)
                t.start()
                waiters.append(t)
                time.sleep(max(0.0, 0.05 - (time.monotonic() - began)))
                continue
            try:
                handle = self.app.enqueue_many("chaos.job", [(s,) for s in seqs])
            except conveyor.ConveyorError:
                self.errors.extend(seqs)
                continue
            t = threading.Thread(target=self._wait, args=(handle, seqs), daemon=True)
            t.start()
            waiters.append(t)
            time.sleep(max(0.0, 0.05 - (time.monotonic() - began)))
        for t in waiters:
            t.join(timeout=150)

    def _post(self, seqs: list[int]) -> None:
        """One batch through the gate: acknowledged when it answers 200."""
        body = json.dumps({"jobs": [{"type": "chaos.job", "args": [s]} for s in seqs]})
        host, port = str(self.gate).rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            conn.request("POST", "/v1/jobs/batch", body, {"Content-Type": "application/json"})
            ok = conn.getresponse().status == 200
        except OSError:
            ok = False
        finally:
            conn.close()
        if ok:
            self.acked.update(seqs)
        else:
            self.errors.extend(seqs)

    def _wait(self, handle: conveyor.Enqueued, seqs: list[int]) -> None:
        try:
            handle.wait(140)
            self.acked.update(seqs)
        except conveyor.ConveyorError:
            self.errors.extend(seqs)


class Ledger:
    """What the workers ran: one line per run, read incrementally."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.runs: Counter[int] = Counter()
        self._read: dict[Path, int] = {}

    def refresh(self) -> Counter[int]:
        for path in self.folder.glob("ran-*.log"):
            with path.open("rb") as f:
                f.seek(self._read.get(path, 0))
                data = f.read()
            whole = data.rfind(b"\n") + 1
            self._read[path] = self._read.get(path, 0) + whole
            self.runs.update(int(line) for line in data[:whole].split())
        return self.runs


@dataclass
class Chaos:
    servers: DevServers
    env: dict[str, str]
    ledger: Ledger
    stream: Stream
    relay: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None
    gate: subprocess.Popen[bytes] | None = None

    def start_gate(self) -> None:
        cmd = [sys.executable, "-m", "conveyor", "gate", "--bind", GATE, "--no-registry"]
        cmd += ["--route", "chaos.job=default"]
        self.gate = subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL)

    def start_relay(self) -> None:
        cmd = [sys.executable, "-m", "conveyor", "relay", "--report-every", "3600"]
        self.relay = subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL)

    def start_worker(self) -> None:
        cmd = [sys.executable, "-m", "conveyor", "worker", "bench.chaos_app:app", "--threads", "4"]
        cmd += ["--report-every", "3600"]
        self.worker = subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL)

    def kill(self, proc: subprocess.Popen[bytes] | None) -> None:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)


def redis_files(servers: DevServers) -> Path:
    return servers.redis.home / "data"


def restart_redis(c: Chaos, files_from: Path | None = None, kill: bool = False) -> None:
    """Stops Redis (SIGKILL when `kill`); puts older files back, or none when
    `files_from` is an empty marker path; starts it."""
    if kill:
        pid = c.servers.redis.pid()
        if pid:
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
    else:
        c.servers.redis.down()
    if files_from is not None:
        shutil.rmtree(redis_files(c.servers))
        if files_from.exists():
            shutil.copytree(files_from, redis_files(c.servers))
        else:
            redis_files(c.servers).mkdir()
    c.servers.redis.up()


def snapshot_redis(c: Chaos, into: Path) -> None:
    c.servers.redis.down()
    shutil.rmtree(into, ignore_errors=True)
    shutil.copytree(redis_files(c.servers), into)
    c.servers.redis.up()


def nodes(c: Chaos, ids: list[int], how: str) -> None:
    for i in ids:
        (c.servers.kafka.kill_node if how == "kill" else c.servers.kafka.stop_node)(i)
    time.sleep(5)
    c.servers.kafka.up(timeout_s=120)


def kill_processes(c: Chaos, _: Path) -> None:
    for _round in range(3):
        c.kill(c.relay)
        c.start_relay()
        time.sleep(2)
        c.kill(c.worker)
        c.start_worker()
        time.sleep(2)


def nothing(c: Chaos, _: Path) -> None:
    """No preparation."""


Fault = Callable[[Chaos, Path], None]

#: name -> (what it does, preparation before the steady stream, the fault)
FAULTS: dict[str, tuple[str, Fault, Fault]] = {
    "broker_killed": (
        "one broker SIGKILLed, back after 5 s",
        nothing,
        lambda c, p: nodes(c, [2], "kill"),
    ),
    "broker_stopped": (
        "one broker stopped gracefully, back after 5 s",
        nothing,
        lambda c, p: nodes(c, [3], "stop"),
    ),
    "two_brokers_killed": (
        "two brokers SIGKILLed, back after 5 s",
        nothing,
        lambda c, p: nodes(c, [1, 2], "kill"),
    ),
    "all_brokers_killed": (
        "all three SIGKILLed and restarted",
        nothing,
        lambda c, p: nodes(c, [1, 2, 3], "kill"),
    ),
    "cluster_restarted": (
        "every broker stopped gracefully and restarted",
        nothing,
        lambda c, p: nodes(c, [1, 2, 3], "stop"),
    ),
    "redis_killed": (
        "Redis SIGKILLed and restarted (AOF, fsync each second)",
        nothing,
        lambda c, p: restart_redis(c, None, kill=True),
    ),
    "redis_older_files": (
        "Redis restarted from its files of the phase's start",
        snapshot_redis,
        restart_redis,
    ),
    "redis_wiped": (
        "Redis restarted with no files at all",
        nothing,
        lambda c, p: restart_redis(c, p / "none"),
    ),
    "relay_worker_killed": (
        "relay and worker SIGKILLed 3 times each, restarted",
        nothing,
        kill_processes,
    ),
}


@dataclass
class Phase:
    name: str
    first: int
    last: int = 0
    fault_at: float = 0.0
    healthy_after: float | None = None


def healthy_time(c: Chaos, phase: Phase, limit_s: float) -> float | None:
    """Seconds from the fault until every acknowledged job enqueued 2 s
    before or earlier has run; None past `limit_s`."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        runs = c.ledger.refresh()
        cutoff = time.monotonic() - 2
        due = [
            s
            for s in range(phase.first, c.stream.next_seq)
            if s in c.stream.acked and c.stream.enqueued_at[s] <= cutoff
        ]
        if due and all(runs[s] > 0 for s in due) and cutoff > phase.fault_at:
            return time.monotonic() - 2 - phase.fault_at
        time.sleep(0.5)
    return None


def start(home: Path) -> tuple[DevServers, conveyor.Conveyor, dict[str, str]]:
    """The servers, the client app and the processes' environment."""
    servers = DevServers.at(home, kafka_port=KAFKA_PORT, redis_port=REDIS_PORT, kafka_nodes=3)
    print(f"starting a 3-broker Kafka and Redis under {home} ...", flush=True)
    servers.up()
    (home / "ledger").mkdir()
    env = dict(os.environ)
    env.update(
        CONVEYOR_KAFKA_BOOTSTRAP=servers.kafka.bootstrap,
        CONVEYOR_REDIS_URL=servers.redis.url,
        CONVEYOR_NAMESPACE="chaos",
        CHAOS_LEDGER=str(home / "ledger"),
        PYTHONPATH=str(ROOT),
    )
    app = conveyor.Conveyor(
        conveyor.Settings(
            kafka_bootstrap=servers.kafka.bootstrap,
            redis_url=servers.redis.url,
            namespace="chaos",
        )
    )
    app.ensure_topics()
    return servers, app, env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000, help="jobs/s through the client")
    parser.add_argument(
        "--steady", type=float, default=6.0, help="seconds of stream before and after each fault"
    )
    parser.add_argument("--only", default="", help="comma-separated faults (default: all)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "chaos.md"))
    args = parser.parse_args()
    chosen = [f for f in args.only.split(",") if f] or list(FAULTS)
    unknown = set(chosen) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
    rows = run(chosen, args.rate, args.steady)
    report(rows, Path(args.out), args.rate)


@dataclass
class Row:
    """One fault's figures."""

    fault: str
    acknowledged: int
    ran: int
    lost: int
    ran_twice: int
    enqueue_errors: int
    healthy_after_s: float | None


def wait_for_gate() -> None:
    host, port = GATE.rsplit(":", 1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection(host, int(port), timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the gate at {GATE} did not start")


def run(chosen: list[str], rate: int, steady: float) -> list[Row]:
    """Runs the stream through each chosen fault in turn; the figures."""
    home = Path(tempfile.mkdtemp(prefix="conveyor-chaos-"))
    servers, app, env = start(home)
    stream = Stream(app, rate, gate=GATE)
    c = Chaos(servers, env, Ledger(home / "ledger"), stream)
    c.start_relay()
    c.start_worker()
    c.start_gate()
    wait_for_gate()
    feeder = threading.Thread(target=stream.run, daemon=True)
    feeder.start()
    phases: list[Phase] = []
    try:
        for name in chosen:
            what, prepare, fault = FAULTS[name]
            scratch = home / f"scratch-{name}"
            prepare(c, scratch)
            phase = Phase(name, stream.next_seq)
            print(f"[{len(phases) + 1}/{len(chosen)}] {name}: {what}", flush=True)
            time.sleep(steady)
            phase.fault_at = time.monotonic()
            fault(c, scratch)
            time.sleep(steady)
            phase.healthy_after = healthy_time(c, phase, 90)
            phase.last = stream.next_seq
            phases.append(phase)
            after = phase.healthy_after
            print(f"    healthy again {after and round(after, 1)} s after the fault", flush=True)
    finally:
        stream.stop.set()
        feeder.join(timeout=160)
        # Bounded drain: whatever was acknowledged has this long to run.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and any(c.ledger.refresh()[s] == 0 for s in stream.acked):
            time.sleep(1)
        c.kill(c.relay)
        c.kill(c.worker)
        c.kill(c.gate)
        app.close()
        servers.down()
    runs = c.ledger.refresh()
    errors = set(stream.errors)
    rows = []
    for p in phases:
        seqs = range(p.first, p.last)
        acked = [s for s in seqs if s in stream.acked]
        ran = sum(1 for s in acked if runs[s] > 0)
        rows.append(
            Row(
                fault=p.name,
                acknowledged=len(acked),
                ran=ran,
                lost=len(acked) - ran,
                ran_twice=sum(1 for s in seqs if runs[s] > 1),
                enqueue_errors=sum(1 for s in seqs if s in errors),
                healthy_after_s=p.healthy_after,
            )
        )
    shutil.rmtree(home, ignore_errors=True)
    return rows


def report(rows: list[Row], out: Path, rate: int) -> None:
    """The table, on stdout and in `out`."""
    lines = [
        f"Chaos run ({time.strftime('%Y-%m-%d')}, `make chaos`, {rate} jobs/s, half through "
        "the Python client, half through the gate; "
        "3 brokers, replication 3, min.insync.replicas 2, acks=all; one relay, one worker)",
        "",
        "| fault | acknowledged | ran | lost | ran twice | enqueue errors | healthy again after |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        after = r.healthy_after_s
        healthy = "not within 90 s" if after is None else f"{after:.1f} s"
        lines.append(
            f"| {r.fault}: {FAULTS[r.fault][0]} | {r.acknowledged} | {r.ran} | {r.lost} "
            f"| {r.ran_twice} | {r.enqueue_errors} | {healthy} |"
        )
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
