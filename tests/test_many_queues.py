"""A worker serving many queues: a fetch tries a few queues with the fetch
script and looks over the rest in one round trip, so an idle worker of many
queues costs Redis little, and a job in any of them, ready or coming due, is
still found."""

from __future__ import annotations

import json
import time

import pytest
import redis

import conveyor
from conveyor import _core
from conveyor.devservers import DevServers
from tests.helpers.waiting import wait_until
from tests.helpers.workers import admit

pytestmark = pytest.mark.servers

QUEUES = [f"m{i}" for i in range(40)]


@pytest.fixture
def app(servers: DevServers, namespace: str) -> conveyor.Conveyor:
    return conveyor.Conveyor(
        conveyor.Settings(
            kafka_bootstrap=servers.kafka.bootstrap,
            redis_url=servers.redis.url,
            namespace=namespace,
        )
    )


def scripts_run(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))


def test_an_idle_worker_of_many_queues_does_not_run_the_fetch_script_on_each(
    app: conveyor.Conveyor, running: list[conveyor.Worker], servers: DevServers
) -> None:
    worker = conveyor.Worker(app, [(q, 1) for q in QUEUES], threads=1)
    running.append(worker)
    worker.start()
    client = redis.Redis.from_url(servers.redis.url)
    time.sleep(0.5)
    before = scripts_run(client)
    time.sleep(2.0)
    ran = scripts_run(client) - before
    # A pass over empty queues ends in a wait of up to 0.25 s for a wake:
    # about 8 passes. One script per queue per pass made it 320 and more; a
    # few per pass (and the keeper's beats) stay far below one per queue.
    assert ran < len(QUEUES) * 2, f"{ran} scripts in 2 s of idling over {len(QUEUES)} queues"


def test_a_job_in_any_of_many_queues_runs_ready_or_coming_due(
    app: conveyor.Conveyor, running: list[conveyor.Worker]
) -> None:
    seen: list[str] = []

    @app.job("mq.where")
    def where(queue: str) -> None:
        seen.append(queue)

    worker = conveyor.Worker(app, [(q, 1) for q in QUEUES], threads=2)
    running.append(worker)
    worker.start()
    time.sleep(0.3)  # idle, waiting
    # A ready job in each of a few queues, one at a time while it idles.
    for queue in (QUEUES[-1], QUEUES[17], QUEUES[0]):
        admit(app, "mq.where", [[queue]], queue=queue)
        wait_until(lambda: seen[-1:] == [queue], timeout_s=5, what=f"the job in {queue}")  # noqa: B023 - waited for at once
    # A job scheduled 0.5 s ahead comes due without a wake: the look over
    # the queues must count it as work once Redis' clock passes its time.
    store = _core.RedisStore(app.settings.redis_url)
    due = int((time.time() + 0.5) * 1_000_000)
    payload = json.dumps({"args": ["later"], "kwargs": {}}).encode()
    envelope = conveyor.Envelope("mq.where", payload, run_at_us=due).encode()
    store.admit(app.settings.namespace, QUEUES[29], [envelope])
    wait_until(lambda: "later" in seen, timeout_s=5, what="the scheduled job")
    assert seen == [QUEUES[-1], QUEUES[17], QUEUES[0], "later"]
