"""Failures cannot fill Redis: error records are capped, dead letters have a
retention (count and age) and a purge, and a storm of failures on a Redis at
`maxmemory` keeps it within a bounded margin of its limit."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import redis

import conveyor
from conveyor import _core
from conveyor.devservers import DevServers, RedisServer
from tests.helpers.cli import conveyor as run_cli
from tests.helpers.full_redis import fill
from tests.helpers.ports import fixed_port
from tests.helpers.waiting import wait_until
from tests.helpers.workers import admit

pytestmark = pytest.mark.servers

Q = "default"


def envelope(i: int, padding: int = 0) -> bytes:
    payload = json.dumps({"args": [i, "x" * padding], "kwargs": {}}).encode()
    return conveyor.Envelope("f.job", payload).encode()


def kill_all(wq: _core.WorkQueues, count: int) -> int:
    """Fetches `count` jobs and dead-letters every one; returns how many."""
    dead = 0
    while dead < count and (batch := wq.fetch(count - dead)) is not None:
        n = len(batch)
        wq.settle(batch, [time.time()] * n, {i: ('{"type": "E"}', None) for i in range(n)})
        dead += n
    return dead


def test_dead_letters_are_kept_within_their_count(servers: DevServers, namespace: str) -> None:
    store = _core.RedisStore(servers.redis.url)
    store.admit(namespace, Q, [envelope(i) for i in range(12)])
    wq = _core.WorkQueues(servers.redis.url, namespace, [(Q, 1)], dead_max=5)
    assert kill_all(wq, 12) == 12
    assert store.depth(namespace, Q)["dead"] == 5
    kept = [
        json.loads(conveyor.Envelope.decode(raw).payload)["args"][0]
        for raw, _, _ in store.dead_letters(namespace, Q, 100)
    ]
    assert kept == [7, 8, 9, 10, 11], "the oldest go first"
    client = redis.Redis.from_url(servers.redis.url)
    assert client.hlen(f"cv:{namespace}:{{{Q}}}:errors") == 5, "their error records go too"
    assert store.counts(namespace, Q)["dead_trimmed"] == 7


def test_dead_letters_are_kept_within_their_age(servers: DevServers, namespace: str) -> None:
    store = _core.RedisStore(servers.redis.url)
    store.admit(namespace, Q, [envelope(i) for i in range(4)])
    wq = _core.WorkQueues(servers.redis.url, namespace, [(Q, 1)], dead_max_age_s=0.5)
    assert kill_all(wq, 3) == 3
    time.sleep(0.6)
    assert kill_all(wq, 1) == 1
    assert store.depth(namespace, Q)["dead"] == 1, "the three older than 0.5 s are forgotten"


def test_dead_purge_forgets_dead_jobs_and_their_errors(servers: DevServers, namespace: str) -> None:
    store = _core.RedisStore(servers.redis.url)
    store.admit(namespace, Q, [envelope(i) for i in range(1500)])
    wq = _core.WorkQueues(servers.redis.url, namespace, [(Q, 1)])
    assert kill_all(wq, 1500) == 1500
    env = {"CONVEYOR_REDIS_URL": servers.redis.url, "CONVEYOR_NAMESPACE": namespace}
    kept = run_cli("dead", "purge", Q, "--older-than", "3600", env=env)
    assert kept.returncode == 0, kept.stderr
    assert "0 dead jobs purged" in kept.stdout
    assert store.depth(namespace, Q)["dead"] == 1500
    purged = run_cli("dead", "purge", Q, env=env)
    assert purged.returncode == 0, purged.stderr
    assert "1500 dead jobs purged" in purged.stdout
    assert store.depth(namespace, Q)["dead"] == 0
    client = redis.Redis.from_url(servers.redis.url)
    assert client.hlen(f"cv:{namespace}:{{{Q}}}:errors") == 0
    bad = run_cli("dead", "purge", Q, "--older-than", "-1", env=env)
    assert bad.returncode != 0
    assert "older-than" in bad.stderr


def test_an_error_record_is_capped_whatever_the_handler_raised(
    app: conveyor.Conveyor, running: list[conveyor.Worker]
) -> None:
    @app.job("f.huge_error", max_attempts=1)
    def huge_error() -> None:
        raise ValueError('€"\n' * 300_000)  # escapes make JSON longer than its text

    admit(app, "f.huge_error", [[]])
    worker = conveyor.Worker(app, threads=1)
    running.append(worker)
    worker.start()
    store = _core.RedisStore(app.settings.redis_url)
    wait_until(lambda: store.depth(app.settings.namespace, Q)["dead"] == 1, what="the dead job")
    ((_, _, error),) = store.dead_letters(app.settings.namespace, Q, 10)
    assert error is not None
    assert len(error.encode()) <= 4096
    record = json.loads(error)
    assert record["type"] == "ValueError"
    assert record["truncated_from"] > 4096


def test_a_failure_storm_on_a_full_redis_stays_near_its_limit(tmp_path: Path) -> None:
    limit = 16 * 1024 * 1024
    full = RedisServer(port=fixed_port(26681), home=tmp_path / "redis", maxmemory=limit)
    full.up()
    try:
        store = _core.RedisStore(full.url)
        admitted = fill(
            store,
            Q,
            lambda first, size: [envelope(first + i, padding=1000) for i in range(size)],
            sizes=(200, 10, 1),
        )
        app = conveyor.Conveyor(conveyor.Settings(redis_url=full.url))

        @app.job("f.job", max_attempts=3, backoff_s=0.01, backoff_max_s=0.02)
        def fail(i: int, padding: str) -> None:
            raise RuntimeError("€" * 2000)  # about 12 KB of JSON per record, uncapped

        client = redis.Redis.from_url(full.url)
        peak = [0]
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(0.05):
                peak[0] = max(peak[0], int(client.info("memory")["used_memory"]))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        worker = conveyor.Worker(app, threads=4)
        worker.start()
        try:
            wait_until(
                lambda: store.depth("", Q)["dead"] == admitted,
                timeout_s=120,
                what="every job dead after its three attempts",
            )
            with pytest.raises(conveyor.RedisError, match="OOM"):
                store.admit("", Q, [envelope(0)])  # admission stays refused meanwhile
        finally:
            worker.stop(grace_s=5)
            stop.set()
            watcher.join()
        print(f"\n{admitted} jobs, peak used_memory {peak[0] / limit:.3f} of maxmemory")
        # What remains is per failed job: its sorted-set entry (scheduled,
        # then dead) and a dead letter's 256-byte error record; 1 KiB jobs
        # peaked at 1.45 times the limit (20.8 times before error records
        # were capped and skipped under pressure).
        assert peak[0] <= limit * 1.6
    finally:
        full.down()
