"""End to end, one command: every way into Conveyor, the same pipeline in pure
Python, and the peers on the same Redis, side by side in one run on this
machine; writes bench/results/pipeline.md, .json and .png.

Run: `make bench-pipeline` (or `.venv/bin/python bench/pipeline_bench.py`).

Rows: Conveyor through the Python client, through the HTTP gate, and direct
to Redis (no Kafka); the same pipeline in pure Python with the standard
clients (confluent-kafka producer, bench/py_relay.py, bench/peers/pure_worker.py);
Dramatiq, Celery and RQ for the Redis-only part; and the raw limits measured in
the same run (redis-benchmark pipelined LPUSH, confluent-kafka produce-only and
consume-only). Every component runs as its own process(es), all colocated on
this machine; workers are 2 processes for every system.

Columns: jobs/s sustained end to end with no-op handlers (N jobs sent as fast
as the front door takes them, rate between 10% and 90% finished);
enqueue-to-start latency p50/p99 of a no-op job (= enqueue to finish) at 1,000
and 10,000 jobs/s offered for 5 s (skipped where the row cannot sustain the
rate); CPU seconds per 100,000 jobs and peak RSS for each component.
Every load loop is bounded in jobs and in seconds; all traffic is loopback.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import http.client
import importlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import redis

import conveyor
from bench_topics import delete_new_topics_at_exit
from conveyor import _core
from conveyor.devservers import DevServers

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

import pure_envelope  # noqa: E402 - bench/ is put on the path just above
from relay_bench import consume_rate, redis_lpush_rate  # noqa: E402
from worker_bench import quiesce, stop  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


class Producer(Protocol):
    """A front door: sends no-op jobs carrying their send times."""

    def send(self, sent: list[float]) -> None: ...
    def close(self) -> None: ...


@dataclass
class Pipeline:
    """One row: its components (name -> commands) and how jobs get in."""

    name: str
    components: dict[str, list[list[str]]]
    producer: Callable[[Env], Producer]
    jobs: int


@dataclass
class Env:
    """Where this row's servers and keys are."""

    kafka: str
    redis_url: str
    run: str
    gate_port: int
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def settings(self) -> conveyor.Settings:
        return conveyor.Settings(
            kafka_bootstrap=self.kafka, redis_url=self.redis_url, namespace=self.run
        )

    def process_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CONVEYOR_KAFKA_BOOTSTRAP": self.kafka,
            "CONVEYOR_REDIS_URL": self.redis_url,
            "CONVEYOR_NAMESPACE": self.run,
            "BENCH_REDIS_URL": self.redis_url,
            "BENCH_RUN": self.run,
            # bench/ first; a PYTHONPATH given (another checkout's
            # python/, to compare two trees) after it.
            "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
            **self.extra,
        }


class ClientProducer:
    def __init__(self, env: Env) -> None:
        self.app = conveyor.Conveyor(env.settings)
        self.app.ensure_topics()

    def send(self, sent: list[float]) -> None:
        self.app.enqueue_many("bench.noop", [[t] for t in sent])

    def close(self) -> None:
        self.app.flush(60)


class GateProducer:
    def __init__(self, env: Env) -> None:
        conveyor.Conveyor(env.settings).ensure_topics()
        self.conn = http.client.HTTPConnection("127.0.0.1", env.gate_port, timeout=30)

    def send(self, sent: list[float]) -> None:
        for i in range(0, len(sent), 1000):
            body = json.dumps(
                {"jobs": [{"type": "bench.noop", "args": [t]} for t in sent[i : i + 1000]]}
            )
            self.conn.request("POST", "/v1/jobs/batch", body, {"Content-Type": "application/json"})
            answer = self.conn.getresponse()
            answer.read()
            if answer.status != 200:
                raise RuntimeError(f"gate answered {answer.status}")

    def close(self) -> None:
        self.conn.close()


class DirectProducer:
    def __init__(self, env: Env) -> None:
        self.store = _core.RedisStore(env.redis_url)
        self.run = env.run

    def send(self, sent: list[float]) -> None:
        envelopes = [
            conveyor.Envelope("bench.noop", _core.encode_call([t], {})).encode() for t in sent
        ]
        for i in range(0, len(envelopes), 5000):
            self.store.admit(self.run, "default", envelopes[i : i + 5000])

    def close(self) -> None:
        pass


class ConfluentProducer:
    """What a team without the Rust core writes: confluent-kafka and the
    envelope in pure Python (bench/pure_envelope.py)."""

    def __init__(self, env: Env) -> None:
        from confluent_kafka import Producer as KafkaProducer

        conveyor.Conveyor(env.settings).ensure_topics()
        self.topic = env.settings.topic_for("default")
        self.producer = KafkaProducer(
            {"bootstrap.servers": env.kafka, "acks": "1", "linger.ms": 2, "compression.type": "lz4"}
        )

    def send(self, sent: list[float]) -> None:
        now = time.time_ns() // 1000
        for t in sent:
            env = pure_envelope.PyEnvelope(
                id=uuid.uuid4().bytes,
                job_type="bench.noop",
                payload=json.dumps({"args": [t], "kwargs": {}}, separators=(",", ":")).encode(),
                enqueued_at_us=now,
            )
            while True:
                try:
                    self.producer.produce(self.topic, env.encode())
                    break
                except BufferError:
                    self.producer.poll(0.001)
            self.producer.poll(0)

    def close(self) -> None:
        self.producer.flush(60)


class PeerProducer:
    def __init__(self, module: str, env: Env) -> None:
        # The peers' modules read their Redis and key prefix when imported:
        # point them at this row's, and import them afresh.
        os.environ.update({"BENCH_REDIS_URL": env.redis_url, "BENCH_RUN": env.run})
        import peers.record

        importlib.reload(peers.record)
        self.enqueue = importlib.reload(importlib.import_module(f"peers.{module}")).enqueue

    def send(self, sent: list[float]) -> None:
        self.enqueue(sent)

    def close(self) -> None:
        pass


ARQ_VENV = HERE / ".venv-arq"


def arq_python() -> str:
    """arq's own virtualenv (arq pins redis-py < 6; ours is 8), made on first use."""
    python = ARQ_VENV / "bin" / "python"
    wanted = (HERE.parent / "requirements-arq.txt").read_text()
    marker = ARQ_VENV / "installed.txt"
    if not (python.exists() and marker.exists() and marker.read_text() == wanted):
        print("    making arq's virtualenv (first time only) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(ARQ_VENV)], check=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "-r",
                str(HERE.parent / "requirements-arq.txt"),
            ],
            check=True,
            timeout=600,
        )
        marker.write_text(wanted)
    return str(python)


class ArqProducer:
    """arq's own client, in arq's virtualenv, fed send times over a pipe."""

    def __init__(self, env: Env) -> None:
        self.proc = subprocess.Popen(
            [arq_python(), "-m", "peers.arq_producer"],
            cwd=HERE,
            env=env.process_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        atexit.register(self.proc.kill)

    def send(self, sent: list[float]) -> None:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(sent) + "\n")
        self.proc.stdin.flush()
        if self.proc.stdout.readline().strip() != "ok":
            raise RuntimeError("the arq producer stopped")

    def close(self) -> None:
        pass  # every send already waited for its jobs to be in Redis


def pipelines(env: Env, jobs: int, peer_jobs: int) -> list[Pipeline]:
    py = sys.executable
    cv = [py, "-m", "conveyor"]
    workers = [
        [
            *cv,
            "worker",
            "peers.conveyor_app:app",
            "--no-setup",
            "--processes",
            "2",
            "--threads",
            "4",
            "--report-every",
            "0",
        ]
    ]
    relay = [[*cv, "relay", "default", "--report-every", "3600"]]
    topic = env.settings.topic_for("default")
    py_relay = [
        [
            py,
            str(HERE / "py_relay.py"),
            env.kafka,
            env.redis_url,
            topic,
            env.run,
            "default",
            f"pyrelay-{env.run}",
        ]
    ]
    return [
        Pipeline(
            "Conveyor: Python client > Kafka > relay > workers",
            {"relay": relay, "workers": workers},
            ClientProducer,
            jobs,
        ),
        Pipeline(
            "Conveyor: HTTP gate > Kafka > relay > workers",
            {
                "gate": [
                    [
                        *cv,
                        "gate",
                        "--bind",
                        f"127.0.0.1:{env.gate_port}",
                        "--route",
                        "bench.noop=default",
                        "--no-registry",
                    ]
                ],
                "relay": relay,
                "workers": workers,
            },
            GateProducer,
            jobs,
        ),
        Pipeline("Conveyor: direct to Redis > workers", {"workers": workers}, DirectProducer, jobs),
        Pipeline(
            "pure Python: confluent-kafka > Python relay > Python worker",
            {"relay": py_relay, "workers": [[py, "-m", "peers.pure_worker"]] * 2},
            ConfluentProducer,
            jobs,
        ),
        Pipeline(
            "Dramatiq 2.2 (Redis only)",
            {
                "workers": [
                    [
                        py,
                        "-m",
                        "dramatiq",
                        "peers.dramatiq_app",
                        "-p",
                        "2",
                        "-t",
                        "8",
                        "--skip-logging",
                    ]
                ]
            },
            lambda env: PeerProducer("dramatiq_app", env),
            peer_jobs,
        ),
        Pipeline(
            "Celery 5.7 (Redis only)",
            {
                "workers": [
                    [
                        py,
                        "-m",
                        "celery",
                        "-A",
                        "peers.celery_app",
                        "worker",
                        "-c",
                        "2",
                        "--without-gossip",
                        "--without-mingle",
                        "--without-heartbeat",
                    ]
                ]
            },
            lambda env: PeerProducer("celery_app", env),
            peer_jobs,
        ),
        Pipeline(
            "RQ 3.0 (Redis only)",
            {
                "workers": [
                    [
                        py,
                        "-m",
                        "rq.cli",
                        "worker",
                        "-u",
                        env.redis_url,
                        "-w",
                        "rq.worker.SimpleWorker",
                        "-q",
                        f"rq-{env.run}",
                    ]
                ]
                * 2
            },
            lambda env: PeerProducer("rq_app", env),
            peer_jobs,
        ),
        Pipeline(
            "arq 0.28 (Redis only)",
            {"workers": [[arq_python(), "-m", "arq", "peers.arq_app.WorkerSettings"]] * 2},
            ArqProducer,
            peer_jobs,
        ),
    ]


def tree(pid: int) -> list[int]:
    """`pid` and its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError):  # the process just ended
                todo += [int(c) for c in task.read_text().split()]
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total / TICK


def peak_rss_mb(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


@dataclass
class Running:
    """A pipeline's processes while it runs."""

    procs: dict[str, list[subprocess.Popen[bytes]]]
    #: Each process's stderr goes to a file, never to an unread pipe: a chatty
    #: worker (arq logs every job) would block once a pipe's buffer is full.
    logs: dict[int, Path] = field(default_factory=dict)

    def pids(self, name: str) -> list[int]:
        return [p for proc in self.procs[name] for p in tree(proc.pid)]

    def check(self) -> None:
        for name, procs in self.procs.items():
            for proc in procs:
                if proc.poll() is not None:
                    log = self.logs.get(proc.pid)
                    err = log.read_text(errors="replace") if log else ""
                    raise RuntimeError(f"{name} exited: {err[-1500:]}")

    def stop(self) -> None:
        stop([proc for procs in self.procs.values() for proc in procs])


def counted(client: redis.Redis, run: str) -> int:
    return int(client.get(f"bench:{run}:done") or 0)


def wait_counted(
    client: redis.Redis, run: str, target: int, timeout: float, running: Running
) -> bool:
    deadline = time.monotonic() + timeout
    while counted(client, run) < target:
        if time.monotonic() > deadline:
            return False
        running.check()
        time.sleep(0.02)
    return True


def start(pipe: Pipeline, env: Env) -> Running:
    """Starts the row's components and waits for a first job to come through."""
    environ = env.process_env()
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    running = Running({})
    for name, cmds in pipe.components.items():
        running.procs[name] = []
        for i, cmd in enumerate(cmds):
            log = logs / f"{env.run}-{name}-{i}.log"
            with log.open("wb") as err:
                proc = subprocess.Popen(
                    cmd, cwd=HERE, env=environ, stdout=subprocess.DEVNULL, stderr=err
                )
            running.procs[name].append(proc)
            running.logs[proc.pid] = log
    if "gate" in pipe.components:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                probe = http.client.HTTPConnection("127.0.0.1", env.gate_port, timeout=1)
                probe.request("GET", "/healthz")
                break
            except OSError:
                time.sleep(0.1)
    return running


class Progress:
    """A count moving toward `total`: its rate between 10% and 90% of the
    way (start-up and tail left out), from the counts seen on the way."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.marks: dict[float, tuple[float, int]] = {}

    def see(self, count: int) -> int:
        """Notes `count` now; returns it."""
        # One clock reading: a count past both marks at once sets both to
        # the same time, so that `rate` says NaN (too fast to measure at
        # this size), never 0 jobs/s, as it did with two readings.
        now = time.monotonic()
        for share in (0.1, 0.9):
            if share not in self.marks and count >= self.total * share:
                self.marks[share] = (now, count)
        return count

    def rate(self) -> float:
        """Per second from 10% to 90%; NaN if not both were seen apart."""
        m = self.marks
        if 0.1 in m and 0.9 in m and m[0.9][0] > m[0.1][0]:
            return (m[0.9][1] - m[0.1][1]) / (m[0.9][0] - m[0.1][0])
        return float("nan")


def cpu_share(pids: dict[str, list[int]], seconds: float) -> dict[str, float]:
    """Share of one core each group of processes uses over the next `seconds`."""
    before = {name: cpu_seconds(p) for name, p in pids.items()}
    time.sleep(seconds)
    return {name: (cpu_seconds(p) - before[name]) / seconds for name, p in pids.items()}


def throughput(
    pipe: Pipeline, producer: Producer, env: Env, client: redis.Redis, running: Running
) -> dict[str, Any]:
    """N jobs as fast as the front door takes them; rate from 10% to 90% finished."""
    base = counted(client, env.run)
    cpu_before = {name: cpu_seconds(running.pids(name)) for name in pipe.components}
    producer_cpu = time.thread_time()
    n = pipe.jobs
    progress = Progress(n)

    def mark() -> int:
        return progress.see(counted(client, env.run) - base)

    sent = 0
    chunk = max(50, n // 100)  # small enough to see a slow front door's progress
    while sent < n:
        k = min(chunk, n - sent)
        producer.send([0.0] * k)
        sent += k
        mark()
    producer.close()
    producer_cpu = time.thread_time() - producer_cpu
    deadline = time.monotonic() + 60 + n / 500
    while mark() < n - 200 and time.monotonic() < deadline:
        running.check()
        time.sleep(0.01)
    rate = progress.rate()
    per_100k = 100_000 / n
    cpu = {
        name: (cpu_seconds(running.pids(name)) - cpu_before[name]) * per_100k
        for name in pipe.components
    }
    cpu["producer"] = producer_cpu * per_100k
    return {"jobs_per_s": rate, "cpu_s_per_100k": cpu}


def latency(
    producer: Producer,
    env: Env,
    client: redis.Redis,
    running: Running,
    *,
    offered: int,
    seconds: float,
) -> dict[str, Any]:
    """Jobs at `offered` per second for `seconds`; enqueue-to-start percentiles,
    and where stalled jobs waited (`point_line`)."""
    quiesce(client)
    client.delete(f"bench:{env.run}:latency", f"bench:{env.run}:slow")
    watch_redis_latency(client)
    base = counted(client, env.run)
    cpu_before = {name: cpu_seconds(running.pids(name)) for name in running.procs}
    reads_before = redis_reads(client)
    total = int(offered * seconds)
    per_tick = max(1, offered // 100)
    start_at = time.monotonic()
    sent = 0
    while sent < total:
        pause = start_at + (sent // per_tick) * 0.01 - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        k = min(per_tick, total - sent)
        producer.send([time.time()] * k)
        sent += k
    producer.close()
    achieved = sent / (time.monotonic() - start_at)
    wait_counted(client, env.run, base + total - 200, 60, running)
    time.sleep(0.5)
    # Each component's CPU per job at this rate, its idle moments included:
    # below saturation a job costs more than at it (fewer jobs a round trip).
    cpu_us = {
        name: (cpu_seconds(running.pids(name)) - before) / total * 1e6
        for name, before in cpu_before.items()
    }
    reads = (redis_reads(client) - reads_before) / total
    samples = sorted(float(x) for x in client.lrange(f"bench:{env.run}:latency", 0, -1))
    stalls = {
        "slowest": max(
            (json.loads(x) for x in client.lrange(f"bench:{env.run}:slow", 0, -1)),
            key=lambda s: s["waited_ms"],
            default=None,
        ),
        "redis_latency": redis_latency(client),
    }
    point = {"achieved_per_s": achieved, "cpu_us_per_job": cpu_us, "redis_reads_per_job": reads}
    if not samples:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), **point}
    return {
        "p50_ms": samples[len(samples) // 2] * 1000,
        "p99_ms": samples[int(len(samples) * 0.99)] * 1000,
        **point,
        **stalls,
    }


#: A point's p99 above this (ms) is a stall that the bench explains.
STALL_MS = 50.0


def redis_reads(client: redis.Redis) -> int:
    """Network reads Redis has processed: about one per round trip made of
    it (a pipeline of several commands may come in one)."""
    return int(client.info("stats")["total_reads_processed"])


def watch_redis_latency(client: redis.Redis) -> None:
    """Has Redis record its own stalls of 20 ms or more (a slow fsync, a
    fork, a slow command), from now: a latency point's outliers are then
    told apart from Redis's."""
    client.config_set("latency-monitor-threshold", 20)
    client.latency_reset()


def redis_latency(client: redis.Redis) -> dict[str, int]:
    """Redis's stalls since `watch_redis_latency`: the longest of each kind, ms."""
    return {
        (event.decode() if isinstance(event, bytes) else str(event)): int(worst)
        for event, _, _, worst in client.latency_latest()
    }


def point_line(offered: int, got: dict[str, Any]) -> str:
    """A latency point as printed; one whose p99 passes `STALL_MS` says
    where its slowest job waited and whether Redis itself stalled."""
    cpu = ", ".join(f"{k} {v:.1f}" for k, v in got.get("cpu_us_per_job", {}).items())
    line = (
        f"{offered:,}/s offered ({got['achieved_per_s']:,.0f} achieved): "
        f"p50 {got['p50_ms']:.1f} ms, p99 {got['p99_ms']:.1f} ms"
        + (f"; CPU us a job: {cpu}" if cpu else "")
        + (
            f"; Redis reads a job {got['redis_reads_per_job']:.1f}"
            if "redis_reads_per_job" in got
            else ""
        )
    )
    return line + (f" [{stall_note(got)}]" if got["p99_ms"] > STALL_MS else "")


def stall_note(got: dict[str, Any]) -> str:
    """Where the slowest job of a point waited, and Redis's own stalls."""
    parts = []
    if got.get("slowest"):
        parts.append(", ".join(f"{k} {v:,.1f}" for k, v in got["slowest"].items()))
    if got.get("redis_latency"):
        parts.append(f"Redis stalls (ms): {got['redis_latency']}")
    return "; ".join(parts) if parts else "no job waited over 100 ms"


def measure(
    pipe: Pipeline, env: Env, client: redis.Redis, rates: list[int], seconds: float
) -> dict[str, Any]:
    """One row: throughput, latency at each rate it sustains, CPU, peak RSS."""
    print(f"  {pipe.name}", flush=True)
    running = start(pipe, env)
    row: dict[str, Any] = {"pipeline": pipe.name}
    try:
        producer = pipe.producer(env)
        producer.send([0.0] * 200)
        producer.close()
        if not wait_counted(client, env.run, 100, 90, running):
            raise RuntimeError("no job came through within 90 s")
        time.sleep(1.0)
        row |= throughput(pipe, producer, env, client, running)
        rate = row["jobs_per_s"]
        print(f"    {rate:,.0f} jobs/s end to end", flush=True)
        for offered in rates:
            if not rate > offered * 1.2:
                row[f"at_{offered}"] = None
                print(f"    {offered:,}/s offered: skipped (sustains {rate:,.0f}/s)", flush=True)
                continue
            got = latency(producer, env, client, running, offered=offered, seconds=seconds)
            row[f"at_{offered}"] = got
            print(f"    {point_line(offered, got)}", flush=True)
        row["peak_rss_mb"] = {name: peak_rss_mb(running.pids(name)) for name in pipe.components}
    finally:
        running.stop()
    return row


def produce_rate(bootstrap: str, topic: str, jobs: int) -> float:
    from confluent_kafka import Producer as KafkaProducer

    producer = KafkaProducer(
        {"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 5, "compression.type": "lz4"}
    )
    value = b"x" * 100
    began = time.perf_counter()
    for _ in range(jobs):
        while True:
            try:
                producer.produce(topic, value)
                break
            except BufferError:
                producer.poll(0.001)
    producer.flush(60)
    return jobs / (time.perf_counter() - began)


def kafka_tool_rates(bootstrap: str, topic: str, records: int) -> tuple[float, float]:
    """Kafka's own ProducerPerformance and ConsumerPerformance (from the
    `kafka-tools` jars): records/s produced (100 B, acks=1, lz4) and consumed."""
    from conveyor.devservers.kafka import ensure_tool_jars, require_java
    from conveyor.settings import cache_home

    java = require_java()
    classpath = f"{ensure_tool_jars(cache_home())}/*"
    produced = subprocess.run(
        [
            java,
            "-cp",
            classpath,
            "org.apache.kafka.tools.ProducerPerformance",
            "--topic",
            topic,
            "--num-records",
            str(records),
            "--record-size",
            "100",
            "--throughput",
            "-1",
            "--producer-props",
            f"bootstrap.servers={bootstrap}",
            "acks=1",
            "linger.ms=5",
            "compression.type=lz4",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    sent = re.search(r"records sent, ([\d.]+) records/sec", produced)
    consumed = subprocess.run(
        [
            java,
            "-cp",
            classpath,
            "org.apache.kafka.tools.ConsumerPerformance",
            "--bootstrap-server",
            bootstrap,
            "--topic",
            topic,
            "--messages",
            str(records),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    # The last line: start, end, MB, MB/s, messages, messages/s, ...
    fields = [f.strip() for f in consumed.strip().splitlines()[-1].split(",")]
    if sent is None or len(fields) < 6:
        raise RuntimeError(f"unexpected Kafka tool output:\n{produced[-500:]}\n{consumed[-500:]}")
    return float(sent.group(1)), float(fields[5])


def render(rows: list[dict[str, Any]], limits: dict[str, float], meta: dict[str, Any]) -> str:
    def lat(r: dict[str, Any], key: str) -> str:
        v = r.get(key)
        return f"{v['p50_ms']:.1f} / {v['p99_ms']:.1f}" if v else "can't sustain"

    def parts(d: dict[str, float], fmt: str) -> str:
        return ", ".join(f"{k} {format(v, fmt)}" for k, v in d.items())

    lines = [
        f"End to end, {meta['when']}, {meta['cores']} cores, every component colocated "
        f"(`{meta['command']}`).",
        "",
        "| pipeline | jobs/s end to end | p50 / p99 ms at 1,000/s | p50 / p99 ms at 10,000/s "
        "| CPU s per 100k jobs | peak RSS MB |",
        "|---|---:|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['pipeline']} | {r['jobs_per_s']:,.0f} | {lat(r, 'at_1000')} "
            f"| {lat(r, 'at_10000')} | {parts(r['cpu_s_per_100k'], '.2f')} "
            f"| {parts(r['peak_rss_mb'], '.0f')} |"
        )
    lines += ["", "| raw limit, same run | per second |", "|---|---:|"]
    lines += [f"| {k} | {v:,.0f} |" for k, v in limits.items()]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    names = [r["pipeline"].replace(": ", ":\n", 1) for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 6))
    left.barh(names, [r["jobs_per_s"] for r in rows], color="#3b6ea8")
    left.set_xscale("log")
    left.set_xlabel("jobs/s end to end (log scale)")
    left.invert_yaxis()
    for i, key in enumerate(("at_1000", "at_10000")):
        values = [(r[key] or {}).get("p99_ms", 0) for r in rows]
        right.barh(
            [y + i * 0.4 for y in range(len(rows))],
            values,
            height=0.4,
            label=f"p99 at {key[3:]} jobs/s offered",
        )
    right.set_yticks([y + 0.2 for y in range(len(rows))], names)
    right.set_xscale("log")
    # A short log range labels its minor ticks too, on top of each other.
    right.xaxis.set_minor_formatter(NullFormatter())
    right.set_xlabel("p99 enqueue to finish, ms (log); none: rate not sustained")
    right.invert_yaxis()
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--jobs", type=int, default=200_000, help="jobs per Conveyor/pure-Python row"
    )
    parser.add_argument("--peer-jobs", type=int, default=20_000, help="jobs per peer row")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each latency run")
    parser.add_argument("--only", help="run only rows whose name contains this")
    args = parser.parse_args()
    servers = DevServers.default()
    servers.up()
    delete_new_topics_at_exit(servers.kafka.bootstrap)
    client = redis.Redis.from_url(servers.redis.url)
    rows = []
    template = Env(servers.kafka.bootstrap, servers.redis.url, "", 0)
    for pipe in pipelines(template, 0, 0):
        if args.only and args.only.lower() not in pipe.name.lower():
            continue
        run = f"pb{uuid.uuid4().hex[:6]}"
        with socket_port() as port:
            env = Env(servers.kafka.bootstrap, servers.redis.url, run, port)
        jobs = min(args.jobs, 2_000_000)
        current = next(
            p for p in pipelines(env, jobs, min(args.peer_jobs, 200_000)) if p.name == pipe.name
        )
        rows.append(measure(current, env, client, [1000, 10_000], args.seconds))
    print("  raw limits ...", flush=True)
    topic = f"raw-{uuid.uuid4().hex[:6]}"
    _core.kafka_create_topic(servers.kafka.bootstrap, topic, 3, 1)
    tool_topic = f"raw-tools-{uuid.uuid4().hex[:6]}"
    _core.kafka_create_topic(servers.kafka.bootstrap, tool_topic, 3, 1)
    tool_produce, tool_consume = kafka_tool_rates(servers.kafka.bootstrap, tool_topic, 1_000_000)
    limits = {
        "redis-benchmark LPUSH, pipeline 100, 100 B": redis_lpush_rate(servers.redis.port),
        "Kafka's ProducerPerformance (100 B random, acks=1, lz4)": tool_produce,
        "Kafka's ConsumerPerformance": tool_consume,
        "Kafka produce only (confluent-kafka, 100 B, lz4)": produce_rate(
            servers.kafka.bootstrap, topic, 1_000_000
        ),
        "Kafka consume only (confluent-kafka)": consume_rate(
            servers.kafka.bootstrap, topic, 1_000_000
        ),
    }
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cores": os.cpu_count(),
        "command": "make bench-pipeline",
    }
    RESULTS.mkdir(exist_ok=True)
    table = render(rows, limits, meta)
    # Some rows must not replace the full table the README quotes.
    stem = "pipeline-only" if args.only else "pipeline"
    (RESULTS / f"{stem}.md").write_text(table)
    (RESULTS / f"{stem}.json").write_text(
        json.dumps({**meta, "rows": rows, "limits": limits}, indent=2)
    )
    plot(rows, RESULTS / f"{stem}.png")
    print("\n" + table)
    print(f"written: {RESULTS / stem}.md, .json, .png")


def write_results(stem: str, table: str, data: dict[str, Any]) -> None:
    """bench/results/STEM.md (the table) and STEM.json (the figures); the
    table is printed too."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.md").write_text(table)
    (RESULTS / f"{stem}.json").write_text(json.dumps(data, indent=2))
    print("\n" + table)
    print(f"written: {RESULTS / stem}.md, .json")


class socket_port:
    """A free loopback port (bound, read, released)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        port: int = self.sock.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


if __name__ == "__main__":
    main()
