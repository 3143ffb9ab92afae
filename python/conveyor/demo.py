"""`conveyor demo`: the README's main job.

Brings up the local Kafka and Redis, sends jobs through the Python client and
the HTTP gate into Kafka, lets the relay move them into Redis, checks they
arrived with their bytes unchanged, runs them with a worker, then shows one
job's trip stage by stage and proves every job ran exactly as sent. Stops the
servers it started.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from conveyor import _core
from conveyor._core import Envelope
from conveyor.app import Conveyor
from conveyor.devservers import DevServers
from conveyor.envelope import Stage
from conveyor.payload import encode_call
from conveyor.settings import Settings
from conveyor.worker import Worker, current_job

NAMESPACE = "demo"
QUEUE = "default"
JOB_TYPES: dict[str, Callable[[int], dict[str, object]]] = {
    "notify.push": lambda i: {"user": i % 97, "text": f"You have {i % 5} new messages"},
    "unfurl.url": lambda i: {"url": f"https://example.test/post/{i}", "channel": "C42"},
    "billing.charge": lambda i: {"invoice": f"inv-{i}", "amount_cents": 100 + i, "note": "café ☃"},
}


def _step(n: int, text: str) -> None:
    print(f"[{n}/6] {text}", flush=True)


def _ms(us: float) -> str:
    return f"{us / 1000:.1f} ms"


def run(jobs: int = 1000, keep_servers: bool = False) -> int:
    """Run the demo; returns the process exit code (0 when every job is accounted for)."""
    servers = DevServers.default()
    _step(1, "bringing up local Kafka and Redis (first run fetches Kafka's jars) ...")
    started_at = time.monotonic()
    kafka_started, redis_started = servers.up()
    print(
        f"      kafka {servers.kafka.bootstrap}  redis {servers.redis.url}  "
        f"ready in {time.monotonic() - started_at:.1f}s"
    )
    try:
        return _run(servers, jobs)
    finally:
        if not keep_servers:
            if kafka_started:
                servers.kafka.down()
            if redis_started:
                servers.redis.down()
            if kafka_started or redis_started:
                print("stopped the servers this demo started")


def _run(servers: DevServers, jobs: int) -> int:
    app = Conveyor(
        Settings(
            kafka_bootstrap=servers.kafka.bootstrap,
            redis_url=servers.redis.url,
            namespace=NAMESPACE,
        )
    )
    ran: dict[str, tuple[str, dict[str, Any], float]] = {}
    lock = threading.Lock()

    def record(**kwargs: Any) -> None:
        info = current_job()
        assert info is not None
        with lock:
            ran[info.id] = (info.job_type, kwargs, time.time())

    for name in JOB_TYPES:
        app.job(name)(record)
    created = app.ensure_topics()
    app.publish_registry()
    topic = app.settings.topic_for(QUEUE)
    _step(
        2,
        f"topic {topic}: 3 partitions ({'created' if created else 'already there'}); "
        f"{len(JOB_TYPES)} job types registered and published for the gate",
    )

    store = _core.RedisStore(servers.redis.url)
    store.purge(NAMESPACE, QUEUE)
    # Relay from now on: earlier runs' jobs stay in Kafka, not in this report.
    for partition, end in _core.kafka_end_offsets(servers.kafka.bootstrap, topic):
        store.relay_batch(NAMESPACE, QUEUE, f"{topic}:{partition}", end, [])
    relay = _core.Relay(
        servers.kafka.bootstrap,
        servers.redis.url,
        [(topic, QUEUE)],
        namespace=NAMESPACE,
        group_id=f"conveyor-relay.{NAMESPACE}",
    )
    try:
        where, expected = _enqueue(app, servers, jobs, topic)
        _drain(store, relay, jobs)
    finally:
        relay.stop()
    back = _core.decode_many(store.peek_ready(NAMESPACE, QUEUE, jobs + 1))
    intact = sum(1 for e in back if expected.get(e.id) == e.payload)
    missing = set(expected) - {e.id for e in back}
    ok = intact == jobs and not missing and len(back) == jobs
    _step(
        5,
        f"read back from Redis and decoded: {intact}/{jobs} jobs present with payload bytes "
        f"unchanged{'' if ok else f'; MISSING {len(missing)}, extra {len(back) - intact}'}",
    )

    ok = _work(app, store, jobs, expected, ran) and ok
    _report(back, where, ran)
    print("\nevery job accounted for" if ok else "\nSOME JOBS WERE NOT ACCOUNTED FOR")
    return 0 if ok else 1


def _work(
    app: Conveyor,
    store: _core.RedisStore,
    jobs: int,
    expected: dict[str, bytes],
    ran: dict[str, tuple[str, dict[str, Any], float]],
) -> bool:
    """Step 6: a worker runs every job; each handler must get exactly what was sent."""
    worker = Worker(app, [QUEUE], threads=4)
    t0 = time.perf_counter()
    worker.start()
    deadline = time.monotonic() + 60
    while len(ran) < jobs and time.monotonic() < deadline:
        time.sleep(0.05)
    took = time.perf_counter() - t0
    worker.stop(grace_s=10)
    as_sent = sum(
        1
        for job_id, (_, kwargs, _) in ran.items()
        if job_id in expected and json.loads(expected[job_id])["kwargs"] == kwargs
    )
    depth = store.depth(NAMESPACE, QUEUE)
    stats = worker.stats()
    ok = as_sent == jobs and depth == {"queued": 0, "scheduled": 0, "leases": 0, "dead": 0}
    _step(
        6,
        f"a worker (4 threads) ran {len(ran)}/{jobs} jobs in {took * 1000:.0f} ms, {as_sent} with "
        f"exactly the arguments sent; {stats['done']} done, {stats['retried']} retried, "
        f"{stats['dead']} dead; left in Redis: {depth}",
    )
    return ok


def _enqueue(
    app: Conveyor, servers: DevServers, jobs: int, topic: str
) -> tuple[dict[str, tuple[int, int]], dict[str, bytes]]:
    """Step 3: most jobs through the Python client, a tenth through the gate.
    Returns where each landed and the payload each must have at the end."""
    via_gate = max(1, jobs // 10)
    via_client = jobs - via_gate
    names = list(JOB_TYPES)
    by_type: dict[str, list[dict[str, object]]] = defaultdict(list)
    for i in range(via_client):
        by_type[names[i % len(names)]].append(JOB_TYPES[names[i % len(names)]](i))
    # A new producer first looks the topic up and connects to its leaders;
    # time that first send apart from the batch, so neither hides the other.
    first_call = by_type["notify.push"].pop(0)
    t0 = time.perf_counter()
    first = app.enqueue("notify.push", (), first_call)
    first_where = first.wait(15)
    first_ms = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    handles = [app.enqueue_many(name, calls) for name, calls in by_type.items()]
    delivered = [d for h in handles for d in h.wait(30)]
    took = time.perf_counter() - t0
    ids = [first.id, *(i for h in handles for i in h.ids)]
    delivered = first_where + delivered
    # What each job's payload must be when it comes back out of Redis.
    expected = {first.id: encode_call((), first_call, 1 << 20)} | {
        job_id: encode_call((), kwargs, 1 << 20)
        for h, calls in zip(handles, by_type.values(), strict=True)
        for job_id, kwargs in zip(h.ids, calls, strict=True)
    }

    gate = _core.Gate(
        "127.0.0.1:0", servers.kafka.bootstrap, namespace=NAMESPACE, registry_url=servers.redis.url
    )
    try:
        batch = [
            {"type": "unfurl.url", "kwargs": JOB_TYPES["unfurl.url"](i)} for i in range(via_gate)
        ]
        t1 = time.perf_counter()
        answer = _post(f"http://{gate.address}/v1/jobs/batch", {"jobs": batch})
        gate_ms = (time.perf_counter() - t1) * 1000
    finally:
        gate.stop()
    delivered += [(j["partition"], j["offset"]) for j in answer["jobs"]]
    ids += [j["id"] for j in answer["jobs"]]
    for job, sent in zip(answer["jobs"], batch, strict=True):
        # The gate keeps the caller's JSON bytes: json.dumps' spacing survives.
        expected[job["id"]] = b'{"args":[],"kwargs":' + json.dumps(sent["kwargs"]).encode() + b"}"
    per_partition = Counter(p for p, _ in delivered)
    _step(
        3,
        f"enqueued {jobs} jobs, each acknowledged by Kafka: {via_client} with the Python "
        f"client ({via_client - 1} by enqueue_many in {took * 1000:.0f} ms, "
        f"{(via_client - 1) / took:,.0f} jobs/s; "
        f"a new producer's first send took {first_ms:.0f} ms), {via_gate} through the "
        f"HTTP gate in one batch request ({gate_ms:.0f} ms); per partition: "
        + ", ".join(f"p{p}={n}" for p, n in sorted(per_partition.items())),
    )

    return dict(zip(ids, delivered, strict=True)), expected


def _drain(store: _core.RedisStore, relay: _core.Relay, jobs: int) -> None:
    """Step 4: the relay (running since step 2) moves every job into Redis."""
    t0 = time.perf_counter()
    deadline = time.monotonic() + 60
    held = store.ready_len(NAMESPACE, QUEUE)
    while held < jobs and time.monotonic() < deadline:
        time.sleep(0.2)
        held = store.ready_len(NAMESPACE, QUEUE)
        print(f"      relayed so far: {held}/{jobs}", flush=True)
    stats = relay.stats()
    _step(
        4,
        f"the relay (Rust, one Kafka consumer group member) wrote {stats['relayed']} jobs "
        f"into Redis list cv:{NAMESPACE}:{{{QUEUE}}}:ready in {stats['batches']} pipelined "
        f"batches, {stats['skipped']} skipped as already there, {stats['dead_lettered']} "
        f"dead-lettered (waited {(time.perf_counter() - t0) * 1000:.0f} ms after enqueue)",
    )


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


def _report(
    back: list[Envelope],
    where: dict[str, tuple[int, int]],
    ran: dict[str, tuple[str, dict[str, Any], float]],
) -> None:
    """One job's trip stage by stage, then a table per job type."""
    sample = back[0]
    stamps = dict(sample.stages)
    part, off = where[sample.id]
    print("\none job, stage by stage:")
    print(f"  id        {sample.id}")
    print(f"  type      {sample.job_type}")
    print(f"  payload   {sample.payload.decode()}")
    print(
        f"  enqueued  {time.strftime('%H:%M:%S', time.localtime(sample.enqueued_at_us / 1e6))}"
        f".{sample.enqueued_at_us % 1_000_000:06d}"
    )
    print(
        f"  kafka     +{_ms(stamps[Stage.KAFKA] - sample.enqueued_at_us)}  "
        f"(partition {part}, offset {off})"
    )
    print(f"  relayed   +{_ms(stamps[Stage.RELAYED] - sample.enqueued_at_us)}")
    if sample.id in ran:
        print(f"  ran       +{_ms(ran[sample.id][2] * 1e6 - sample.enqueued_at_us)}")

    rows: dict[str, list[Envelope]] = defaultdict(list)
    for env in back:
        rows[env.job_type].append(env)
    print(
        f"\n{'job type':<16} {'jobs':>6} {'bytes':>8} {'p50 to kafka':>13} "
        f"{'p50 to redis':>13} {'p50 to run':>11}"
    )
    for name, envs in sorted(rows.items()):
        to_kafka = statistics.median(dict(e.stages)[Stage.KAFKA] - e.enqueued_at_us for e in envs)
        to_redis = statistics.median(dict(e.stages)[Stage.RELAYED] - e.enqueued_at_us for e in envs)
        runs = [ran[e.id][2] * 1e6 - e.enqueued_at_us for e in envs if e.id in ran]
        to_run = _ms(statistics.median(runs)) if runs else "-"
        size = sum(len(e.payload) for e in envs)
        print(
            f"{name:<16} {len(envs):>6} {size:>8} {_ms(to_kafka):>13} {_ms(to_redis):>13} "
            f"{to_run:>11}"
        )
    print(
        "\nKafka stamps records in milliseconds, so gaps under 1 ms show as 0.0 ms. The worker"
        "\nstarts only after step 5 has read every job back, so 'to run' includes that pause."
    )
