"""A fire-and-forget enqueue that Kafka never takes is never silent: it is
logged and counted when it happens and offered to a callback; a dropped
application and an exiting process deliver what is pending first, waiting as
long as a delivery may take, and report what failed.

Each test makes deliveries fail the way production does: the queue's topic
is deleted after the producer learned it, so its jobs wait for a topic that
never comes back until their delivery timeout passes."""

from __future__ import annotations

import gc
import logging
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import conveyor
from conveyor import _core
from conveyor.deliveries import OnDeliveryFailure
from conveyor.devservers import DevServers
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.servers

ROOT = Path(__file__).resolve().parents[1]


def app_losing_its_topic(
    bootstrap: str,
    namespace: str,
    delivery_timeout_s: float = 2.0,
    on_delivery_failure: OnDeliveryFailure | None = None,
) -> tuple[conveyor.Conveyor, Any]:
    """An app whose queue's topic was deleted after its first job was
    delivered, and its job type."""
    settings = conveyor.Settings(
        kafka_bootstrap=bootstrap, namespace=namespace, delivery_timeout_s=delivery_timeout_s
    )
    app = conveyor.Conveyor(settings, on_delivery_failure=on_delivery_failure)
    job = app.job("d.job")(lambda: None)
    app.ensure_topics()
    job.enqueue().wait(timeout_s=30)
    _core.kafka_delete_topics(bootstrap, [settings.topic_for("default")])
    return app, job


def test_a_failed_fire_and_forget_enqueue_is_logged_counted_and_called_back(
    servers: DevServers, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[str, str]] = []
    lock = threading.Lock()

    def on_failure(failures: list[tuple[str, str]]) -> None:
        with lock:
            seen.extend(failures)

    app, job = app_losing_its_topic(
        servers.kafka.bootstrap, namespace, on_delivery_failure=on_failure
    )
    with caplog.at_level(logging.ERROR, logger="conveyor.enqueue"):
        job_id = job.enqueue().id  # and never waited on
        wait_until(lambda: bool(seen), timeout_s=30, what="the failure callback")
    assert seen[0][0] == job_id
    assert app.delivery_failures == 1
    assert any(job_id in r.getMessage() for r in caplog.records), "logged when it happened"
    with pytest.raises(conveyor.DeliveryError, match=job_id):
        app.close(timeout_s=5)  # and the flush still reports it


def test_a_dropped_application_delivers_what_it_holds_and_reports_the_rest(
    servers: DevServers, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    app, job = app_losing_its_topic(servers.kafka.bootstrap, namespace)
    job_id = job.enqueue().id
    with caplog.at_level(logging.ERROR, logger="conveyor.enqueue"):
        del app, job
        gc.collect()  # the finalizer flushes, waiting up to the delivery timeout
    assert any(job_id in r.getMessage() for r in caplog.records), caplog.text


def test_the_exit_flush_waits_as_long_as_a_delivery_may_take(
    servers: DevServers, namespace: str
) -> None:
    # With a delivery timeout of 12 s the exit flush must wait past 10 s (it
    # once gave up there) to learn, and say, that the job was not delivered.
    script = textwrap.dedent(
        f"""
        from tests.test_delivery_failures import app_losing_its_topic
        app, job = app_losing_its_topic(
            {servers.kafka.bootstrap!r}, {namespace!r}, delivery_timeout_s=12.0
        )
        print(job.enqueue().id, flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    job_id = done.stdout.strip()
    assert job_id, done.stderr
    assert "were not written to Kafka" in done.stderr, done.stderr
    assert job_id in done.stderr
    assert "still awaiting" not in done.stderr
