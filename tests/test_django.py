"""Django's tasks framework on Conveyor (`conveyor.contrib.django`), with the
real Django, Kafka, relay and Redis: `@task` code unchanged, enqueued on the
transaction's commit (never on a rollback), run by `conveyor worker
conveyor.contrib.django:app`, results and failures read back by id."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.devservers import DevServers
from tests.helpers.kafka_reader import read_all
from tests.helpers.relay import start_relay
from tests.helpers.waiting import wait_until

pytestmark = [
    pytest.mark.servers,
    pytest.mark.skipif(sys.version_info < (3, 12), reason="Django 6 needs Python 3.12 or newer"),
]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(servers: DevServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The test site set up in this process (Django's settings are global:
    one namespace for the module), and the environment its worker gets."""
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.helpers.django_site.settings",
        "CONVEYOR_DJANGO_DB": str(tmp_path_factory.mktemp("django") / "db.sqlite3"),
        "CONVEYOR_KAFKA_BOOTSTRAP": servers.kafka.bootstrap,
        "CONVEYOR_REDIS_URL": servers.redis.url,
        "CONVEYOR_NAMESPACE": f"django{os.getpid()}",
    }
    with pytest.MonkeyPatch.context() as patch:
        for k, v in env.items():
            patch.setenv(k, v)
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0, run_syncdb=True)
        yield env


def test_tasks_run_on_conveyor_after_the_commit(site: dict[str, str]) -> None:
    from django.db import transaction
    from django.tasks import task_backends
    from django.tasks.base import TaskResultStatus

    from conveyor.contrib.django import ConveyorBackend
    from tests.helpers.django_site import tasks

    backend = task_backends["default"]
    assert isinstance(backend, ConveyorBackend)
    app = backend.app
    app.ensure_topics()

    class Rollback(Exception):
        pass

    with transaction.atomic():
        added = tasks.add.enqueue(2, 3)
        assert app.lookup(added.id) is None, "not sent before the commit"
        assert not _sent(app, 1), "not sent before the commit"
    try:
        with transaction.atomic():
            rolled_back = tasks.add.enqueue(40, 2)
            raise Rollback
    except Rollback:
        pass
    retried = tasks.attempts.enqueue(fail_first=True)
    shouted = tasks.shout.enqueue("hello")
    failed = tasks.always_fails.enqueue()
    # One more than sent is asked for: what arrives in 5 s is all there is.
    assert len(_sent(app, 5)) == 4, "the committed tasks only"
    with pytest.raises(Exception, match="arguments do not fit"):
        tasks.add.enqueue(1)  # refused at once, in the caller

    relay = start_relay(app)
    worker = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "worker", "conveyor.contrib.django:app"],
        cwd=ROOT,
        env={**os.environ, **site, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def finished(result: Any) -> bool:
            try:
                result.refresh()
            except Exception:  # not found yet: still in Kafka
                return False
            return bool(result.is_finished)

        wait_until(
            lambda: all(finished(r) for r in (added, retried, shouted, failed)),
            timeout_s=60,
            what="every task to finish",
        )
    finally:
        worker.terminate()
        _, err = worker.communicate(timeout=60)
        relay.stop()
    assert worker.returncode == 0, err.decode()[-2000:]
    assert (added.status, added.return_value) == (TaskResultStatus.SUCCESSFUL, 5)
    assert (retried.return_value, retried.attempts) == (2, 2), "retried, seeing its attempt"
    assert shouted.return_value == "HELLO"
    assert failed.status == TaskResultStatus.FAILED
    assert failed.errors[0].exception_class_path == "ValueError"
    assert tasks.add.get_result(added.id).return_value == 5
    assert app.lookup(rolled_back.id) is None


def test_a_priority_is_refused_when_the_task_is_made(site: dict[str, str]) -> None:
    """Conveyor orders by queue, not priority: the backend says so, and
    Django refuses such a task when it is made, before anything is sent."""
    from django.tasks.exceptions import InvalidTask

    from tests.helpers.django_site import tasks

    with pytest.raises(InvalidTask, match="priority"):
        tasks.add.using(priority=10)


def _sent(app: Any, wanted: int) -> list[Any]:
    """The records in the queue's topic, waiting at most 5 s for `wanted`."""
    return read_all(app.settings.kafka_bootstrap, app.settings.topic_for("default"), wanted, 5.0)
