"""Conveyor as a backend of Django's tasks framework (`django.tasks`, Django 6):
code written with `@task` runs on Conveyor unchanged.

```python
# settings.py
TASKS = {
    "default": {
        "BACKEND": "conveyor.contrib.django.ConveyorBackend",
        "QUEUES": ["default", "emails"],
        "OPTIONS": {
            # Conveyor settings (conveyor.Settings fields); the rest, and
            # secrets, come from CONVEYOR_* environment variables.
            "SETTINGS": {"namespace": "shop"},
            # Options of every task's job type (conveyor.JobOptions fields).
            "JOB_OPTIONS": {"max_attempts": 3, "timeout_s": 60},
        },
    }
}
```

Workers: `DJANGO_SETTINGS_MODULE=mysite.settings conveyor worker
conveyor.contrib.django:app`. The app sets Django up and registers every
task of the `tasks` module of each installed app (and of the modules in
`OPTIONS["MODULES"]`) under its module path, e.g. `shop.tasks.send_receipt`.

`task.enqueue(...)` inside a transaction sends the job when the transaction
commits, and never if it rolls back (`OPTIONS["ENQUEUE_ON_COMMIT"]`, default
True): a worker never sees a row its job was enqueued for before the row
exists. The `TaskResult` it returns has the job's id at once. `run_after` is a
delayed job; async tasks run on the worker's event loop; `get_result` reads
the job's state (`conveyor.lookup`) and its kept return value; a failed
attempt is retried by Conveyor's rules, and a job given up on is `FAILED`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import logging
import os
from collections.abc import Callable
from typing import Any

from django.conf import settings as django_settings
from django.db import transaction
from django.tasks import task_backends
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
from django.tasks.exceptions import TaskResultDoesNotExist
from django.tasks.signals import task_enqueued
from django.utils import timezone
from django.utils.module_loading import import_string

from conveyor import _core
from conveyor.app import Conveyor
from conveyor.errors import ConveyorError, ConveyorTimeout, JobFailed
from conveyor.job_context import current_job
from conveyor.jobs import JobType
from conveyor.settings import Settings

log = logging.getLogger("conveyor.django")

#: Conveyor's job states as Django's task statuses.
_STATUS = {
    "queued": TaskResultStatus.READY,
    "scheduled": TaskResultStatus.READY,
    "retrying": TaskResultStatus.READY,
    "running": TaskResultStatus.RUNNING,
    "done": TaskResultStatus.SUCCESSFUL,
    "dead": TaskResultStatus.FAILED,
    "cancelled": TaskResultStatus.FAILED,
}


class ConveyorBackend(BaseTaskBackend):  # type: ignore[misc]  # Django is untyped
    """A `TASKS` backend sending each task as a Conveyor job (see the module)."""

    supports_defer = True
    supports_async_task = True
    supports_get_result = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        options = self.options
        self.on_commit = bool(options.get("ENQUEUE_ON_COMMIT", True))
        self.job_options = dict(options.get("JOB_OPTIONS", {}))
        self.modules = list(options.get("MODULES", []))
        settings = dataclasses.replace(Settings.from_env(), **options.get("SETTINGS", {}))
        queues = tuple(sorted(set(settings.queues) | self.queues))
        self.app = Conveyor(dataclasses.replace(settings, queues=queues))

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        """Checks and encodes the call now; sends it now, or when the
        current transaction commits."""
        self.validate_task(task)
        job_type = self.job_type(task)
        job_id = _core.new_job_id()
        args, kwargs = list(args), dict(kwargs)
        job_type.check_args(args, kwargs)
        # Refused now, with the caller's stack, rather than after the commit.
        _core.encode_call(args, kwargs, self.app.settings.max_payload_bytes)

        def send() -> None:
            job_type.enqueue_with(args, kwargs, run_at=task.run_after, job_id=job_id)

        if self.on_commit:
            transaction.on_commit(send)
        else:
            send()
        result = TaskResult(
            task=task,
            id=job_id,
            status=TaskResultStatus.READY,
            enqueued_at=timezone.now(),
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=args,
            kwargs=kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult:
        """The job's state, and its return value once done; raises
        `TaskResultDoesNotExist` for a job not found (still in Kafka, or
        ended longer ago than `Settings.job_history_s`)."""
        try:
            info = self.app.lookup(result_id)
        except ConveyorError as err:
            raise TaskResultDoesNotExist(result_id) from err
        if info is None:
            raise TaskResultDoesNotExist(result_id)
        task = _task_of(info.job_type)
        status = _STATUS.get(info.state, TaskResultStatus.READY)
        times = dict(info.timeline)
        result = TaskResult(
            task=task,
            id=result_id,
            status=status,
            enqueued_at=_when(times.get("enqueued")),
            started_at=_when(times.get("started")),
            last_attempted_at=_when(times.get("started")),
            finished_at=_when(times.get(info.state)),
            args=[],
            kwargs={},
            backend=self.alias,
            errors=[_error(info.error)] if info.error and status == TaskResultStatus.FAILED else [],
            worker_ids=["conveyor"] * info.attempts,
        )
        if status == TaskResultStatus.SUCCESSFUL:
            try:
                value = self.app.result(result_id, timeout_s=0)
            except (ConveyorTimeout, JobFailed):
                value = None  # not kept (Redis was nearly full when it ended)
            object.__setattr__(result, "_return_value", value)
        return result

    def job_type(self, task: Task) -> JobType[Any, Any]:
        """The Conveyor job type of `task`, registered on first use."""
        name = task.module_path
        known = self.app.registry.get(name)
        if known is not None:
            return known
        options = {"store_result": True, **self.job_options}
        return self.app.job(name, queue=task.queue_name, **options)(_handler(task))

    def discover(self) -> int:
        """Registers the tasks of each installed app's `tasks` module and of
        `OPTIONS["MODULES"]`; returns how many this backend runs."""
        from django.apps import apps

        names = [f"{c.name}.tasks" for c in apps.get_app_configs()] + self.modules
        for name in names:
            try:
                module = importlib.import_module(name)
            except ModuleNotFoundError as err:
                if err.name == name and name not in self.modules:
                    continue  # an app without a tasks module
                raise
            for value in vars(module).values():
                if isinstance(value, Task) and value.backend == self.alias:
                    self.job_type(value)
        return len(self.app.registry)


def _handler(task: Task) -> Callable[..., Any]:
    """The handler a worker runs for `task`: its function, given a
    `TaskContext` first if it takes one. It shows the function's signature
    and annotations without that context, so that enqueues are checked and
    arguments read (`conveyor.arguments`) as for any handler."""
    func = task.func
    if inspect.iscoroutinefunction(func):

        async def run_async(*args: Any, **kwargs: Any) -> Any:
            if task.takes_context:
                args = (_context(task), *args)
            return await func(*args, **kwargs)

        handler: Callable[..., Any] = run_async
    else:

        def run(*args: Any, **kwargs: Any) -> Any:
            if task.takes_context:
                args = (_context(task), *args)
            return func(*args, **kwargs)

        handler = run
    functools.update_wrapper(handler, func)
    signature = inspect.signature(func)
    if task.takes_context:
        first, *rest = signature.parameters
        signature = signature.replace(parameters=[signature.parameters[n] for n in rest])
        handler.__annotations__ = {k: v for k, v in func.__annotations__.items() if k != first}
    handler.__signature__ = signature  # type: ignore[attr-defined]
    return handler


def _context(task: Task) -> TaskContext:
    job = current_job()
    attempt = job.attempt if job is not None else 1
    now = timezone.now()
    result = TaskResult(
        task=task,
        id=job.id if job is not None else "",
        status=TaskResultStatus.RUNNING,
        enqueued_at=None,
        started_at=now,
        last_attempted_at=now,
        finished_at=None,
        args=[],
        kwargs={},
        backend=task.backend,
        errors=[],
        worker_ids=["conveyor"] * attempt,
    )
    return TaskContext(task_result=result)


def _task_of(job_type: str) -> Task:
    found = import_string(job_type)
    if not isinstance(found, Task):
        raise TaskResultDoesNotExist(f"{job_type} is not a task")
    return found


def _when(at: float | None) -> Any:
    import datetime as dt

    return None if at is None else dt.datetime.fromtimestamp(at, tz=dt.timezone.utc)


def _error(error: dict[str, object]) -> TaskError:
    return TaskError(
        exception_class_path=str(error.get("type", "Exception")),
        traceback=str(error.get("traceback", error.get("message", ""))),
    )


def __getattr__(name: str) -> Any:
    # `conveyor worker conveyor.contrib.django:app`: Django set up, every
    # task registered, the backend's Conveyor app.
    if name != "app":
        raise AttributeError(name)
    import django

    django.setup()
    backend = task_backends[os.environ.get("CONVEYOR_DJANGO_BACKEND", "default")]
    if not isinstance(backend, ConveyorBackend):
        raise ConveyorError(
            f"TASKS[{backend.alias!r}] is {type(backend).__name__}, not ConveyorBackend"
        )
    count = backend.discover()
    log.info("django: %d tasks of %s registered", count, django_settings.SETTINGS_MODULE)
    return backend.app
