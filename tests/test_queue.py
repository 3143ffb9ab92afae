"""The job state machine in Redis, driven through the Rust scripts against a
real redis-server: admit, fetch, settle, release, heartbeat, reap, replay,
delayed and unique jobs, and dequeues that keep working when Redis is full."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

import conveyor
from conveyor import _core
from conveyor.devservers import DevServers, RedisServer
from tests.helpers.full_redis import fill
from tests.helpers.ports import fixed_port

pytestmark = pytest.mark.servers

Q = "default"


def job(i: int, job_type: str = "q.test", **fields: object) -> bytes:
    payload = json.dumps({"args": [i], "kwargs": {}}).encode()
    return conveyor.Envelope(job_type, payload, **fields).encode()  # type: ignore[arg-type]


def args_of(batch: _core.LeasedBatch) -> list[int]:
    """Each job's first argument, from its payload; the call read at fetch agrees."""
    firsts = []
    for i, (_, call, _) in enumerate(batch.jobs):
        first = json.loads(batch.payload(i))["args"][0]
        assert call is not None
        assert call[0][0] == first
        firsts.append(first)
    return firsts


@pytest.fixture
def store(servers: DevServers) -> _core.RedisStore:
    return _core.RedisStore(servers.redis.url)


def queues(servers: DevServers, namespace: str, lease_s: float = 30.0) -> _core.WorkQueues:
    return _core.WorkQueues(servers.redis.url, namespace, [(Q, 1)], lease_s=lease_s)


def test_fetch_settle_and_release_move_jobs_between_states(
    servers: DevServers, store: _core.RedisStore, namespace: str
) -> None:
    assert store.admit(namespace, Q, [job(i) for i in range(10)]) == (10, 0, 0)
    wq = queues(servers, namespace)
    batch = wq.fetch(5)
    assert batch is not None
    assert args_of(batch) == [0, 1, 2, 3, 4]
    assert store.depth(namespace, Q) == {"queued": 5, "scheduled": 0, "leases": 1, "dead": 0}
    now = time.time()
    # Job 0 done, 1 retried in an hour, 2 dead, 3 done, 4 never started.
    failures = {1: ('{"type":"E"}', 3600.0), 2: ('{"type":"F"}', None)}
    assert wq.settle(batch, [now] * 4, failures) == (2, 1, 1, 0)
    assert store.depth(namespace, Q) == {"queued": 6, "scheduled": 1, "leases": 0, "dead": 1}
    # The unstarted job went back to the head, not counted as an attempt.
    again = wq.fetch(1)
    assert again is not None
    assert args_of(again) == [4]
    assert again.jobs[0][2] == 0
    (raw, _, error), *_ = store.dead_letters(namespace, Q, 10)
    dead = conveyor.Envelope.decode(raw)
    assert dead.attempt == 1
    assert error == '{"type":"F"}'
    assert [code for code, _ in dead.stages] == [
        conveyor.Stage.STARTED,
        conveyor.Stage.FAILED,
        conveyor.Stage.DEAD_LETTERED,
    ]
    assert store.counts(namespace, Q) == {"admitted": 10, "done": 2, "retried": 1, "dead": 1}
    # Settling the same lease twice changes nothing: those slots are stale.
    assert wq.settle(batch, [now] * 4, {}) == (0, 0, 0, 4)


def test_a_retry_comes_back_when_due_with_its_attempt_counted(
    servers: DevServers, store: _core.RedisStore, namespace: str
) -> None:
    store.admit(namespace, Q, [job(1)])
    wq = queues(servers, namespace)
    batch = wq.fetch(10)
    assert batch is not None
    wq.settle(batch, [time.time()], {0: ("{}", 0.3)})
    assert wq.fetch(10) is None, "not due yet"
    time.sleep(0.4)
    back = wq.fetch(10)
    assert back is not None
    assert back.jobs[0][2] == 1
    assert args_of(back) == [1]


def test_a_retry_is_due_by_redis_clock_not_the_workers(
    servers: DevServers, store: _core.RedisStore, namespace: str
) -> None:
    # A worker whose clock is an hour behind reports its job ended an hour
    # ago; the retry must still wait its backoff (it once came due at once).
    store.admit(namespace, Q, [job(1)])
    wq = queues(servers, namespace)
    batch = wq.fetch(1)
    assert batch is not None
    wq.settle(batch, [time.time() - 3600], {0: ("{}", 0.5)})
    assert wq.fetch(1) is None, "not due before its backoff"
    time.sleep(0.6)
    assert wq.fetch(1) is not None


def test_the_reaper_returns_expired_leases_and_heartbeats_keep_them(
    servers: DevServers, store: _core.RedisStore, namespace: str
) -> None:
    store.admit(namespace, Q, [job(i) for i in range(6)])
    dying = queues(servers, namespace, lease_s=0.3)
    alive = queues(servers, namespace, lease_s=0.3)
    lost = dying.fetch(3)
    kept = alive.fetch(3)
    assert lost is not None
    assert kept is not None
    # The dying worker got as far as its second job and said so in a heartbeat.
    lost.begin(0)
    lost.begin(1)
    assert dying.heartbeat() == []
    for _ in range(6):
        time.sleep(0.1)
        assert alive.heartbeat() == []
    assert alive.reap() == 3, "only the lease nobody extended expired"
    back = alive.fetch(10)
    assert back is not None
    assert args_of(back) == [0, 1, 2]
    assert [attempt for _, _, attempt in back.jobs] == [1, 1, 0], (
        "an expired lease is an attempt for each job that had started, and only for those"
    )
    assert store.counts(namespace, Q)["reaped"] == 3
    # The dead worker's late settle is refused slot by slot, and its
    # heartbeat reports the lease lost.
    assert dying.heartbeat() == [lost.token]
    assert dying.stats()["lost_leases"] == 1
    assert dying.settle(lost, [time.time()] * 3, {}) == (0, 0, 0, 3)
    assert alive.settle(kept, [time.time()] * 3, {}) == (3, 0, 0, 0)


def test_a_reaped_lease_charges_its_first_job_even_before_any_heartbeat(
    servers: DevServers, store: _core.RedisStore, namespace: str
) -> None:
    # A job that kills its worker at once must still use up its attempts.
    store.admit(namespace, Q, [job(i) for i in range(2)])
    dying = queues(servers, namespace, lease_s=0.2)
    assert dying.fetch(2) is not None
    time.sleep(0.3)
    alive = queues(servers, namespace)
    assert alive.reap() == 2
    back = alive.fetch(10)
    assert back is not None
    assert [attempt for _, _, attempt in back.jobs] == [1, 0]
    client = redis.Redis.from_url(servers.redis.url)
    assert not client.hlen(f"cv:{namespace}:{{{Q}}}:progress"), "the reaper cleans up"


def test_delayed_jobs_wait_in_scheduled_until_due(
    servers: DevServers, store: _core.RedisStore, namespace: str
) -> None:
    soon = int((time.time() + 0.5) * 1e6)
    late = int((time.time() + 3600) * 1e6)
    assert store.admit(namespace, Q, [job(1, run_at_us=soon), job(2, run_at_us=late), job(3)]) == (
        1,
        2,
        0,
    )
    wq = queues(servers, namespace)
    first = wq.fetch(10)
    assert first is not None
    assert args_of(first) == [3]
    deadline = time.monotonic() + 5
    due = None
    while due is None and time.monotonic() < deadline:
        due = wq.fetch(10)
        time.sleep(0.05)
    assert due is not None
    assert args_of(due) == [1]
    assert time.time() * 1e6 >= soon
    assert store.depth(namespace, Q)["scheduled"] == 1


def test_unique_jobs_are_dropped_while_one_holds_the_key(
    servers: DevServers, store: _core.RedisStore, namespace: str
) -> None:
    assert store.admit(namespace, Q, [job(1, dedup_key="k"), job(2, dedup_key="k")]) == (1, 0, 1)
    wq = queues(servers, namespace)
    running = wq.fetch(10)
    assert running is not None
    assert args_of(running) == [1]
    assert store.admit(namespace, Q, [job(3, dedup_key="k")]) == (0, 0, 1), "still running"
    wq.settle(running, [time.time()], {})
    assert store.admit(namespace, Q, [job(4, dedup_key="k")]) == (1, 0, 0), "released when done"
    dead = wq.fetch(10)
    assert dead is not None
    wq.settle(dead, [time.time()], {0: ("{}", None)})
    assert store.admit(namespace, Q, [job(5, dedup_key="k")]) == (1, 0, 0), "released when dead"
    assert store.counts(namespace, Q)["duplicates"] == 2


def test_malformed_entries_are_dead_lettered_with_the_reason(
    servers: DevServers, store: _core.RedisStore, namespace: str
) -> None:
    with pytest.raises(conveyor.EnvelopeDecodeError):
        store.admit(namespace, Q, [b"not an envelope"])
    # Something wrote past Conveyor's checks: the worker must not wedge on it.
    client = redis.Redis.from_url(servers.redis.url)
    client.rpush(f"cv:{namespace}:{{{Q}}}:ready", b"CV\x01garbage-garbage-garbage-garbage")
    store.admit(namespace, Q, [job(7)])
    wq = queues(servers, namespace)
    batch = wq.fetch(10)
    assert batch is not None
    assert batch.malformed == 1
    assert args_of(batch) == [7]
    assert wq.settle(batch, [time.time()], {}) == (1, 0, 1, 0)
    (_, _, error), *_ = store.dead_letters(namespace, Q, 10)
    assert error is not None
    assert json.loads(error)["type"] == "EnvelopeDecodeError"


def test_replayed_dead_letters_get_fresh_attempts(
    servers: DevServers, store: _core.RedisStore, namespace: str
) -> None:
    store.admit(namespace, Q, [job(i) for i in range(3)])
    wq = queues(servers, namespace)
    batch = wq.fetch(10)
    assert batch is not None
    wq.settle(batch, [time.time()] * 3, {i: ("{}", None) for i in range(3)})
    before = time.time()
    assert store.replay_dead(namespace, Q, 1000) == (3, 0)
    for raw in store.peek_ready(namespace, Q, 10):
        replayed = conveyor.Envelope.decode(raw)
        assert replayed.attempt == 0
        # The attempts before stay in the stamps; the replay is the last one.
        assert [code for code, _ in replayed.stages] == [
            conveyor.Stage.STARTED,
            conveyor.Stage.FAILED,
            conveyor.Stage.DEAD_LETTERED,
            conveyor.Stage.REPLAYED,
        ]
        assert replayed.stages[-1][1] / 1e6 >= before - 1
    back = wq.fetch(10)
    assert back is not None
    assert sorted(args_of(back)) == [0, 1, 2]
    assert {attempt for _, _, attempt in back.jobs} == {0}


def test_a_full_redis_still_serves_fetch_retry_and_ack_until_empty(tmp_path: Path) -> None:
    """The failure that wedged the original system: Redis at maxmemory with
    noeviction refused even dequeues. Here admitting stops, draining does not."""
    full = RedisServer(port=fixed_port(26679), home=tmp_path / "redis", maxmemory=8 * 1024 * 1024)
    full.up()
    try:
        store = _core.RedisStore(full.url)
        chunk = [job(i) for i in range(2000)]
        admitted = fill(store, Q, lambda _, size: chunk[:size], sizes=(2000, 20, 1))
        client = redis.Redis.from_url(full.url)
        info = client.info("memory")
        assert info["used_memory"] >= info["maxmemory"] * 0.9, "Redis is at its limit"
        with pytest.raises(conveyor.RedisError, match="OOM"):
            store.admit("", Q, [job(0)])
        wq = _core.WorkQueues(full.url, "", [(Q, 1)], lease_s=30)
        drained, retried = 0, False
        while (batch := wq.fetch(1000)) is not None:
            n = len(batch)
            if not retried:
                # Some fail and are retried (moved to scheduled), some released.
                done, again, _, _ = wq.settle(batch, [time.time()] * (n - 10), {0: ("{}", 0.0)})
                assert again == 1
                retried = True
            else:
                done = wq.settle(batch, [time.time()] * n, {})[0]
            drained += done
        assert drained == admitted
        assert store.depth("", Q) == {"queued": 0, "scheduled": 0, "leases": 0, "dead": 0}
    finally:
        full.down()
