"""The faster scenarios of the chaos run (`make chaos`, bench/chaos.py) in
the test suite: a steady stream of jobs through the client, a relay process
and a worker process on a 3-broker cluster, through faults that leave an
in-sync replica of every record; no acknowledged job may be lost."""

from __future__ import annotations

import pytest

import chaos

pytestmark = pytest.mark.servers


@pytest.mark.timeout(600)
def test_no_acknowledged_job_is_lost_through_the_faster_faults() -> None:
    rows = chaos.run(
        ["broker_killed", "redis_older_files", "redis_wiped", "relay_worker_killed"],
        rate=500,
        steady=3.0,
    )
    for row in rows:
        assert row.acknowledged > 0, row
        assert row.lost == 0, row
        assert row.healthy_after_s is not None, row
    # Redis' losses are made good from Kafka: every such job runs again,
    # and only a bounded number run twice: a block of finished jobs per
    # partition, and what finished since the watermark was last committed
    # (read and committed once a second: up to about 3 s of the stream).
    wiped = next(r for r in rows if r.fault == "redis_wiped")
    assert wiped.ran_twice <= 3 * 1024 + 3 * 500, wiped
