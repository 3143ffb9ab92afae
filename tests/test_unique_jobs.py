"""Unique jobs: a dedup key is held per job type, from admission until the
job is done or dead, and a replayed dead job takes its key again."""

from __future__ import annotations

import json
import time

import pytest

import conveyor
from conveyor import _core
from conveyor.devservers import DevServers

pytestmark = pytest.mark.servers

Q = "default"


def unique(job_type: str, key: str, i: int = 0) -> bytes:
    payload = json.dumps({"args": [i], "kwargs": {}}).encode()
    return conveyor.Envelope(job_type, payload, dedup_key=key).encode()


def test_two_job_types_sharing_a_dedup_key_do_not_drop_each_other(
    servers: DevServers, namespace: str
) -> None:
    store = _core.RedisStore(servers.redis.url)
    # The key was once held per queue: the second type's job was dropped.
    assert store.admit(namespace, Q, [unique("u.email", "user-7")]) == (1, 0, 0)
    assert store.admit(namespace, Q, [unique("u.sms", "user-7")]) == (1, 0, 0)
    assert store.admit(namespace, Q, [unique("u.email", "user-7", 1)]) == (0, 0, 1)


def test_the_client_helper_scopes_dedup_keys_the_same_way(app: conveyor.Conveyor) -> None:
    from conveyor.testing import capture

    email = app.job("u.email")(lambda: None)
    sms = app.job("u.sms")(lambda: None)
    with capture(app) as captured:
        email.enqueue_with((), dedup_key="user-7")
        sms.enqueue_with((), dedup_key="user-7")
        email.enqueue_with((), dedup_key="user-7")
    assert [j.job_type for j in captured.jobs] == ["u.email", "u.sms"]
    assert captured.duplicates == 1


def test_a_replayed_dead_unique_job_takes_its_key_again(
    servers: DevServers, namespace: str
) -> None:
    store = _core.RedisStore(servers.redis.url)
    wq = _core.WorkQueues(servers.redis.url, namespace, [(Q, 1)])
    store.admit(namespace, Q, [unique("u.email", "k")])
    batch = wq.fetch(1)
    assert batch is not None
    wq.settle(batch, [time.time()], {0: ('{"type": "E"}', None)})  # dead: the key is free
    assert store.replay_dead(namespace, Q, 10) == (1, 0)
    # The replayed job holds the key again: a new one with it is a duplicate
    # (it was admitted, and both ran).
    assert store.admit(namespace, Q, [unique("u.email", "k", 1)]) == (0, 0, 1)


def test_a_dead_unique_job_stays_dead_while_another_holds_its_key(
    servers: DevServers, namespace: str
) -> None:
    store = _core.RedisStore(servers.redis.url)
    wq = _core.WorkQueues(servers.redis.url, namespace, [(Q, 1)])
    store.admit(namespace, Q, [unique("u.email", "k", 0)])
    first = wq.fetch(1)
    assert first is not None
    wq.settle(first, [time.time()], {0: ('{"type": "E"}', None)})
    assert store.admit(namespace, Q, [unique("u.email", "k", 1)]) == (1, 0, 0)
    assert store.replay_dead(namespace, Q, 10) == (0, 1), "replaying would run a duplicate"
    assert store.depth(namespace, Q)["dead"] == 1
    second = wq.fetch(1)
    assert second is not None
    wq.settle(second, [time.time()], {})  # done: the key is free again
    assert store.replay_dead(namespace, Q, 10) == (1, 0)
