"""The demo (`make demo`, or `python -m examples.demo`): the README's main job,
the whole pipeline on this machine.

Brings up local Kafka and Redis, then the gate, a relay and two worker
processes (each its own `conveyor` command, as in production), and pushes a
realistic workload through both front doors: a steady mix of four job types
(quick pushes, slower unfurls of which some fail and are retried, bigger
billing jobs of which a few fail for good, delayed reminders), then a burst
larger than the relay lets the queue hold, so its protection visibly engages
and the backlog waits in Kafka. A live line shows every stage while it runs;
the report at the end is computed from the timestamps each job carries in its
envelope, and proves every job accounted for: finished once, or dead with its
reason. It stops everything it started.

With `--redis-only` it starts Redis alone and runs the same workload with
`CONVEYOR_REDIS_ONLY=on`: every job straight into Redis, no Kafka, no gate,
no relay (and so nothing holds a burst back: it all waits in Redis).
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor import _core
from conveyor.devservers import DevServers
from conveyor.errors import ConveyorError
from conveyor.settings import dev_home

#: The checkout this example lives in.
ROOT = Path(__file__).resolve().parents[2]

NAMESPACE = "demo"
QUEUES = ("default", "billing")
#: The relay holds a queue back at this many waiting jobs (resuming at half).
DEPTH_HIGH = 2000


@dataclass
class Sent:
    """What the demo enqueued, to account for every job at the end."""

    ids: dict[str, str] = field(default_factory=dict)  # id -> job type
    via_gate: int = 0
    via_client: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ids: list[str], job_type: str, *, gate: bool) -> None:
        with self.lock:
            for job_id in ids:
                self.ids[job_id] = job_type
            if gate:
                self.via_gate += len(ids)
            else:
                self.via_client += len(ids)


@dataclass
class _Pipeline:
    """The running pipeline's handles: where to send jobs and where to look."""

    app: Any
    store: _core.RedisStore
    client: Any
    trace_key: str
    #: "" in Redis-only mode: no gate runs.
    gate_url: str
    sent: Sent = field(default_factory=Sent)

    def send(
        self, job_type: str, start: int, n: int, *, gate: bool, delay: float | None = None
    ) -> None:
        """`n` jobs of `job_type` through the gate or the Python client."""
        calls = _calls(job_type, start, n)
        if gate:
            body = {"jobs": [{"type": job_type, "kwargs": c} for c in calls]}
            answer = _post(f"{self.gate_url}/v1/jobs/batch", body)
            self.sent.add([j["id"] for j in answer["jobs"]], job_type, gate=True)
        else:
            handle = self.app.enqueue_many(job_type, calls, delay=delay)
            handle.wait(30)
            self.sent.add(handle.ids, job_type, gate=False)


def _step(text: str) -> None:
    print(f"==> {text}", flush=True)


def run(jobs: int = 20_000, keep_servers: bool = False, redis_only: bool = False) -> int:
    """Run the demo; returns the exit code (0 when every job is accounted for)."""
    servers = DevServers.default()
    began = time.monotonic()
    if redis_only:
        _step("bringing up local Redis (Redis-only mode: no Kafka) ...")
        kafka_started, redis_started = False, servers.redis.up()
        print(f"    redis {servers.redis.url}, ready in {time.monotonic() - began:.1f}s")
    else:
        _step("bringing up local Kafka and Redis (the first run fetches Kafka's jars) ...")
        kafka_started, redis_started = servers.up()
        print(
            f"    kafka {servers.kafka.bootstrap}, redis {servers.redis.url}, "
            f"ready in {time.monotonic() - began:.1f}s"
        )
    try:
        return _run(servers, max(100, jobs), redis_only)
    finally:
        if not keep_servers:
            if kafka_started:
                servers.kafka.down()
            if redis_started:
                servers.redis.down()
            if kafka_started or redis_started:
                print("stopped the servers this demo started")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _run(servers: DevServers, jobs: int, redis_only: bool) -> int:
    env = {
        "CONVEYOR_KAFKA_BOOTSTRAP": servers.kafka.bootstrap,
        "CONVEYOR_REDIS_URL": servers.redis.url,
        "CONVEYOR_NAMESPACE": NAMESPACE,
        "CONVEYOR_REDIS_ONLY": "on" if redis_only else "off",
    }
    os.environ.update(env)
    from examples.demo import app as demo_app  # its app reads the settings from the environment

    app = demo_app.app
    store = _core.RedisStore(servers.redis.url)
    created = [] if redis_only else app.ensure_topics()
    for queue in QUEUES:
        store.purge(NAMESPACE, queue)
        if redis_only:
            continue
        # Relay from here on: earlier runs' jobs stay in Kafka, not in this report.
        topic = app.settings.topic_for(queue)
        for partition, end in _core.kafka_end_offsets(servers.kafka.bootstrap, topic):
            store.relay_batch(NAMESPACE, queue, topic, partition, end, [])
    import redis as redis_py

    client = redis_py.Redis.from_url(servers.redis.url)
    client.delete(demo_app.TRACE_KEY)
    app.publish_registry()
    topics = (
        "no topics (Redis only)"
        if redis_only
        else (f"topics {'created' if created else 'already there'}")
    )
    _step(
        f"{len(app.registry)} job types on queues {', '.join(QUEUES)}; {topics}; "
        "registry published for the gate"
    )

    procs: list[subprocess.Popen[bytes]] = []
    try:
        gate_url = _start_processes(procs, env, redis_only)
        pipe = _Pipeline(app, store, client, demo_app.TRACE_KEY, gate_url)
        return _drive(pipe, jobs)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        print(
            "stopped the workers" if redis_only else "stopped the gate, the relay and the workers"
        )


def _start_processes(
    procs: list[subprocess.Popen[bytes]], env: dict[str, str], redis_only: bool
) -> str:
    cli = [sys.executable, "-m", "conveyor"]
    # The workers import the demo's app from this checkout.
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    port = _free_port()
    commands = {
        "gate": [*cli, "gate", "--bind", f"127.0.0.1:{port}"],
        "relay": [
            *cli,
            "relay",
            *QUEUES,
            "--depth-high",
            str(DEPTH_HIGH),
            "--report-every",
            "3600",
        ],
        "workers": [
            *cli,
            "worker",
            "examples.demo.app:app",
            "--processes",
            "2",
            "--threads",
            "8",
            "--no-setup",
            "--report-every",
            "0",
            "--lease",
            "10",
        ],
    }
    if redis_only:
        del commands["gate"], commands["relay"]
    # Logs go to files: an unread pipe would stall a process once it filled.
    logs = dev_home() / "demo-logs"
    logs.mkdir(parents=True, exist_ok=True)
    for name, argv in commands.items():
        with (logs / f"{name}.log").open("wb") as log:
            procs.append(
                subprocess.Popen(argv, env=full_env, stdout=subprocess.DEVNULL, stderr=log)
            )
        print(f"    started {name}: {' '.join(argv[2:])}  (log: {logs / name}.log)")
    if redis_only:
        _step("2 worker processes running; no gate and no relay (Redis only)")
        return ""
    gate_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        for name, proc in zip(commands, procs, strict=True):
            if proc.poll() is not None:
                tail = (logs / f"{name}.log").read_text(errors="replace")[-2000:]
                raise ConveyorError(f"the demo's {name} exited:\n{tail}")
        try:
            with urllib.request.urlopen(f"{gate_url}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    break
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
        if time.monotonic() > deadline:
            raise ConveyorError(f"the demo's gate was not ready at {gate_url} within 60 s")
    _step(f"gate ready at {gate_url}; relay and 2 worker processes running")
    return gate_url


def _post(url: str, body: object) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def _calls(job_type: str, start: int, n: int) -> list[dict[str, Any]]:
    if job_type == "notify.push":
        return [
            {"user": i % 997, "text": f"You have {i % 7} new messages"}
            for i in range(start, start + n)
        ]
    if job_type == "unfurl.url":
        return [
            {"url": f"https://example.test/post/{i}", "channel": "C42"}
            for i in range(start, start + n)
        ]
    if job_type == "billing.charge":
        lines = [f"line {k}: café ☃ {'x' * 40}" for k in range(20)]  # about 1.3 KB
        return [
            {"invoice": f"inv-{i}", "amount_cents": 100 + i, "lines": lines}
            for i in range(start, start + n)
        ]
    return [{"user": i % 997, "text": "stand-up in 5 minutes"} for i in range(start, start + n)]


def _drive(pipe: _Pipeline, jobs: int) -> int:
    live = _Live(pipe)
    live.start()
    began = time.monotonic()
    try:
        steady = jobs * 2 // 5
        burst = jobs - steady - jobs // 20
        reminders = jobs - steady - burst
        doors = "70% client, 30% gate" if pipe.gate_url else "all through the client"
        _step(f"steady mix: {steady:,} jobs over about 3 s, {doors}")
        mix = [("notify.push", 5), ("unfurl.url", 3), ("billing.charge", 2)]
        rng = random.Random(7)
        done = 0
        ticks = 30
        for tick in range(ticks):
            share = steady // ticks + (1 if tick < steady % ticks else 0)
            job_type = rng.choices([m for m, _ in mix], [w for _, w in mix])[0]
            pipe.send(job_type, done, share, gate=rng.random() < 0.3 and bool(pipe.gate_url))
            done += share
            time.sleep(0.1)
        _step(
            f"burst: {burst:,} pushes at once, more than the relay lets the queue hold "
            f"({DEPTH_HIGH:,}); the rest waits in Kafka"
            if pipe.gate_url
            else f"burst: {burst:,} pushes at once, straight into Redis (no Kafka to hold them)"
        )
        for start in range(0, burst, 5000):
            pipe.send(
                "notify.push",
                steady + start,
                min(5000, burst - start),
                gate=False,
            )
        _step(f"{reminders:,} reminders due in 3 s")
        pipe.send("reminders.send", 0, reminders, gate=False, delay=3.0)
        deadline = time.monotonic() + 60 + jobs / 1000
        while not live.settled(len(pipe.sent.ids)) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        live.stop()
    took = time.monotonic() - began
    return _report(pipe, took, live)


class _Live:
    """Prints one line of every stage's progress twice a second."""

    def __init__(self, pipe: _Pipeline) -> None:
        self.store, self.client, self.trace_key = pipe.store, pipe.client, pipe.trace_key
        self.sent = pipe.sent
        self.peak_lag = 0
        self.peak_queued = 0
        self.guard_seen = 0
        self._finished = 0
        self._dead = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._began = time.monotonic()
        self._printed_at = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._line(time.monotonic())
        print()

    def settled(self, total: int) -> bool:
        return total > 0 and self._finished + self._dead >= total

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self._line(time.monotonic())

    def _line(self, now: float) -> None:
        depth = Counter[str]()
        counts = Counter[str]()
        for queue in QUEUES:
            depth.update(self.store.depth(NAMESPACE, queue))
            counts.update(self.store.counts(NAMESPACE, queue))
        lag, guarded, engaged = 0, False, 0
        for _, raw in self.store.relay_statuses(NAMESPACE):
            status = json.loads(raw)
            lag += sum(p["lag"] for p in status["partitions"])
            guarded |= bool(status["depth_guarded"]) or bool(status["memory_guarded"])
            engaged += int(status.get("guard_engaged", 0))
        self.peak_lag = max(self.peak_lag, lag)
        self.peak_queued = max(self.peak_queued, depth["queued"])
        self.guard_seen = max(self.guard_seen, engaged)
        self._finished = int(self.client.llen(self.trace_key))
        self._dead = depth["dead"]
        guard = "  RELAY HOLDING BACK (queue full)" if guarded else ""
        # One line updated in place on a terminal; a line a second otherwise.
        tty = sys.stdout.isatty()
        if not tty and now - self._printed_at < 1.0 and not self._stop.is_set():
            return
        self._printed_at = now
        print(
            f"{chr(13) if tty else ''}    {now - self._began:5.1f}s"
            f"  enqueued {len(self.sent.ids):>6}  waiting in kafka {lag:>6}"
            f"  relayed {counts['admitted']:>6}  queued {depth['queued']:>5}"
            f"  scheduled {depth['scheduled']:>4}  finished {self._finished:>6}"
            f"  retried {counts['retried']:>4}  dead {self._dead:>3}{guard}   ",
            end="" if tty else "\n",
            flush=True,
        )


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


def _report(pipe: _Pipeline, took: float, live: _Live) -> int:
    store, client, trace_key, sent = pipe.store, pipe.client, pipe.trace_key, pipe.sent
    traces = [json.loads(t) for t in client.lrange(trace_key, 0, -1)]
    finished = Counter(t[0] for t in traces)
    dead: dict[str, str] = {}
    for queue in QUEUES:
        for raw, _, error in store.dead_letters(NAMESPACE, queue, 10_000):
            env = _core.Envelope.decode(raw)
            dead[env.id] = json.loads(error or "{}").get("message", "?")
    expected = set(sent.ids)
    twice = [i for i, n in finished.items() if n > 1]
    missing = expected - set(finished) - set(dead)
    unexpected = (set(finished) | set(dead)) - expected
    both = set(finished) & set(dead)
    counts: Counter[str] = Counter()
    for queue in QUEUES:
        counts.update(store.counts(NAMESPACE, queue))

    print(
        f"\nreport: {len(expected):,} jobs in {took:.1f}s ({sent.via_client:,} through the "
        f"Python client, {sent.via_gate:,} through the HTTP gate)"
    )
    if pipe.gate_url:
        print(
            f"  the relay held a queue back {live.guard_seen} time(s) (at {DEPTH_HIGH:,} "
            f"queued; most queued seen: {live.peak_queued:,}); most jobs waiting in Kafka at "
            f"once: {live.peak_lag:,}"
        )
    else:
        print(f"  most queued in Redis at once: {live.peak_queued:,} (no Kafka to hold them)")
    print(
        f"  retried attempts: {counts['retried']:,}; dead-lettered: {len(dead)} "
        f"({'; '.join(sorted(set(dead.values()))[:3])})"
    )
    by_type: dict[str, list[list[Any]]] = defaultdict(list)
    for t in traces:
        by_type[t[1]].append(t)
    ms = 1000.0
    print(
        f"\n  {'job type':<15} {'done':>6} {'retried':>7} {'dead':>4} {'enq>kafka':>9} "
        f"{'>relayed':>9} {'>started':>9} {'>finished':>9} {'end-to-end p50':>15} {'p99':>8}"
    )
    for name in sorted(set(sent.ids.values())):
        rows = by_type.get(name, [])
        dead_n = sum(1 for i in dead if sent.ids.get(i) == name)
        retried = sum(1 for t in rows if t[2] > 1)
        # A delayed job's clock starts at its run-at time, not at enqueue.
        start = [(t[4] or t[3]) for t in rows]
        stage = [
            statistics.median([(t[5] - t[3]) / ms for t in rows]) if rows else float("nan"),
            statistics.median([(t[6] - t[5]) / ms for t in rows]) if rows else float("nan"),
            # Straight into Redis (Redis only), a job's clock runs from enqueue.
            statistics.median([(t[7] - max(t[6] or t[3], t[4])) / ms for t in rows])
            if rows
            else float("nan"),
            statistics.median([(t[8] - t[7]) / ms for t in rows]) if rows else float("nan"),
        ]
        total = [(t[8] - s) / ms for t, s in zip(rows, start, strict=True)]
        if not pipe.gate_url:
            stage[:2] = [float("nan")] * 2  # no Kafka hop
        print(
            f"  {name:<15} {len(rows):>6} {retried:>7} {dead_n:>4} "
            + " ".join(f"{v:>8.1f}ms" if not math.isnan(v) else f"{'-':>10}" for v in stage)
            + f" {_pct(total, 0.5):>13.1f}ms {_pct(total, 0.99):>6.0f}ms"
        )
    print(
        "\n  stage columns are medians; reminders count from their run-at time, and a retried job's"
    )
    print("  end-to-end time includes its backoff. Kafka stamps in whole milliseconds.")
    ok = not (missing or unexpected or both or twice)
    print(
        f"\n  accounted for: {len(finished):,} finished once + {len(dead)} dead = "
        f"{len(finished) + len(dead):,} of {len(expected):,}; missing {len(missing)}, "
        f"ran twice {len(twice)}, both finished and dead {len(both)}, unknown {len(unexpected)}"
    )
    print("every job accounted for" if ok else "SOME JOBS WERE NOT ACCOUNTED FOR")
    return 0 if ok else 1
