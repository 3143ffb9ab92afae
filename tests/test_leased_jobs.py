"""What a handler gets from a leased batch: its arguments, read as the batch
is fetched (small payloads the fast reader takes) or as the job starts
(larger ones, and what the reader declines), and its job's identity from
`current_job()`, which the hot path builds only when asked."""

from __future__ import annotations

import json
from typing import Any

import pytest

import conveyor
from conveyor import _core
from conveyor.devservers import DevServers
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.servers

#: Past the size the worker reads at fetch (`READ_AT_FETCH_MAX_LEN`, 4 KiB).
BIG = "x" * 10_000
#: More than an i64: the fast reader declines it, Python's json reads it.
HUGE = 2**70


def envelopes(job_type: str) -> list[conveyor.Envelope]:
    """One job per way a payload is read, plus an unreadable one of each size."""
    calls: list[bytes] = [
        json.dumps({"args": ["small", 1], "kwargs": {}}).encode(),
        json.dumps({"args": ["big", BIG], "kwargs": {}}).encode(),
        json.dumps({"args": ["huge"], "kwargs": {"n": HUGE}}).encode(),
        b'{"args": ["broken"',
        b'{"args": ["broken big"' + b" " * 8000,
    ]
    return [conveyor.Envelope(job_type, payload) for payload in calls]


def test_a_batch_reads_small_payloads_at_fetch_and_leaves_the_rest(
    servers: DevServers, namespace: str
) -> None:
    sent = envelopes("lj.any")
    store = _core.RedisStore(servers.redis.url)
    store.admit(namespace, "default", [e.encode() for e in sent])
    queues = _core.WorkQueues(servers.redis.url, namespace, [("default", 1)])
    batch = queues.fetch(10)
    assert batch is not None
    assert len(batch) == len(sent)
    calls = [call for _, call, _ in batch.jobs]
    assert calls == [(["small", 1], {}), None, None, None, None]
    assert [batch.job_id(i) for i in range(len(sent))] == [e.id for e in sent]
    assert [batch.payload(i) for i in range(len(sent))] == [e.payload for e in sent]
    with pytest.raises(conveyor.InvalidJobError, match="no job 5 in a batch of 5"):
        batch.payload(5)
    queues.settle(batch, [], {})


def test_handlers_know_their_job_and_get_their_arguments_however_read(
    app: conveyor.Conveyor, running: list[conveyor.Worker]
) -> None:
    seen: dict[str, tuple[str, str, int, str, Any]] = {}

    @app.job("lj.echo", max_attempts=3)
    def echo(tag: str, value: Any = None, n: int = 0) -> None:
        info = conveyor.current_job()
        assert info is not None
        seen[tag] = (info.id, info.job_type, info.attempt, info.queue, value or n)

    sent = envelopes("lj.echo")
    store = _core.RedisStore(app.settings.redis_url)
    ns = app.settings.namespace
    store.admit(ns, "default", [e.encode() for e in sent])
    worker = conveyor.Worker(app, threads=1)
    running.append(worker)
    worker.start()
    wait_until(lambda: len(seen) == 3 and store.depth(ns, "default")["dead"] == 2)
    ids = [e.id for e in sent]
    assert seen == {
        "small": (ids[0], "lj.echo", 1, "default", 1),
        "big": (ids[1], "lj.echo", 1, "default", BIG),
        "huge": (ids[2], "lj.echo", 1, "default", HUGE),
    }
    # Unreadable payloads are dead at once, whichever way they were read.
    dead = store.dead_letters(ns, "default", 10)
    assert len(dead) == 2
    for _, _, error in dead:
        record = json.loads(error or "{}")
        assert (record["type"], record["attempt"]) == ("PermanentError", 1)
        assert "not a Conveyor call" in record["message"]
    assert conveyor.current_job() is None
