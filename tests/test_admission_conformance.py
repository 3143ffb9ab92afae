"""Admission held to one set of cases on every path a job takes into a queue:

- the relay's Lua-free `MULTI`/`EXEC` for plain batches (`admit_plain`),
- `admit-7.lua` (the relay on a cluster; any batch that is unique, delayed or
  behind its fence; and the direct path),
- `conveyor.testing.capture`, for what it models: which jobs are kept, which
  are dropped as duplicates, which wait for a time.

The two relay paths must leave Redis byte for byte the same (every key the
namespace holds); the capture must keep and drop what the direct path does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest
import redis

import conveyor
from conveyor import _core
from conveyor.devservers import DevServers
from conveyor.testing import capture

pytestmark = pytest.mark.servers

TOPIC = "conveyor.t"


@dataclass(frozen=True)
class Job:
    offset: int
    dedup_key: str | None = None
    delay_s: float | None = None


#: Each case is a list of batches in the order a relay would write them.
CASES: dict[str, list[list[Job]]] = {
    "plain": [[Job(0), Job(1), Job(2)]],
    "two plain batches": [[Job(0), Job(1)], [Job(2), Job(3), Job(4)]],
    "redelivered after a crash": [[Job(0), Job(1), Job(2)], [Job(0), Job(1), Job(2), Job(3)]],
    "wholly behind the fence": [[Job(0), Job(1)], [Job(0), Job(1)]],
    "unique jobs, one key twice": [[Job(0, "a"), Job(1, "b"), Job(2, "a")]],
    "unique across batches": [[Job(0, "a")], [Job(1, "a"), Job(2)]],
    "delayed": [[Job(0, delay_s=3600), Job(1)]],
    "delayed and unique": [[Job(0, "k", delay_s=3600), Job(1, "k")]],
}


def envelope(job: Job) -> bytes:
    run_at = None if job.delay_s is None else int((time.time() + job.delay_s) * 1e6)
    return _core.Envelope(
        "t.x", _core.encode_call([job.offset], {}), dedup_key=job.dedup_key, run_at_us=run_at
    ).encode()


def snapshot(client: redis.Redis, namespace: str) -> dict[bytes, Any]:
    """Every key of the namespace with its value, whatever its type."""
    out: dict[bytes, Any] = {}
    for key in client.scan_iter(f"cv:{namespace}:*".encode()):
        kind = client.type(key)
        if kind == b"list":
            out[key] = client.lrange(key, 0, -1)
        elif kind == b"hash":
            out[key] = client.hgetall(key)
        elif kind == b"zset":
            out[key] = client.zrange(key, 0, -1, withscores=True)
        else:
            out[key] = (kind, client.dump(key))
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_both_relay_paths_leave_redis_the_same(
    case: str, servers: DevServers, namespace: str
) -> None:
    store = _core.RedisStore(servers.redis.url)
    client = redis.Redis.from_url(servers.redis.url)
    batches = [[(job.offset, envelope(job)) for job in batch] for batch in CASES[case]]
    results = {}
    states = {}
    for path, scripted in (("plain", False), ("script", True)):
        ns = f"{namespace}-{path}"
        results[path] = [
            store.relay_batch(ns, "q", TOPIC, 0, batch[-1][0] + 1, batch, scripted=scripted)
            for batch in batches
        ]
        states[path] = {
            key.replace(ns.encode(), b"NS"): value for key, value in snapshot(client, ns).items()
        }
    assert results["plain"] == results["script"]
    assert states["plain"] == states["script"]
    assert states["plain"], "something was written"


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_test_capture_keeps_and_drops_what_redis_does(
    case: str, servers: DevServers, namespace: str
) -> None:
    # Fences are the relay's alone: the direct path and the capture see each
    # distinct job once, in order.
    seen: set[int] = set()
    jobs = []
    for batch in CASES[case]:
        for job in batch:
            if job.offset not in seen:
                seen.add(job.offset)
                jobs.append(job)
    store = _core.RedisStore(servers.redis.url)
    queued, scheduled, duplicates = store.admit(namespace, "default", [envelope(j) for j in jobs])
    app = conveyor.Conveyor(conveyor.Settings(namespace=namespace))
    with capture(app) as captured:
        for job in jobs:
            app.enqueue("t.x", [job.offset], dedup_key=job.dedup_key, delay=job.delay_s)
    assert len(captured.jobs) == queued + scheduled
    assert captured.duplicates == duplicates
    assert sum(j.run_at_us is not None for j in captured.jobs) == scheduled
