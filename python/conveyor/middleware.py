"""Middleware: hooks around each job, for logging, metrics and tracing."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from conveyor.job_context import JobInfo

log = logging.getLogger("conveyor.worker")


class Middleware:
    """Hooks around each job; subclass and override what you need.

    Hooks run in the worker thread, around every job: keep them cheap. An
    exception from a hook is logged and otherwise ignored.
    """

    def before(self, job: JobInfo) -> None:
        """An attempt is about to start."""

    def after(self, job: JobInfo, error: BaseException | None) -> None:
        """An attempt ended, successfully when `error` is None."""

    def on_retry(self, job: JobInfo, error: BaseException, delay_s: float) -> None:
        """A failed attempt will be retried after `delay_s`."""

    def on_dead(self, job: JobInfo, error: BaseException) -> None:
        """The job was given up on and dead-lettered."""


def call_hooks(middleware: Sequence[Middleware], name: str, *args: Any) -> None:
    """Calls hook `name` of each middleware in order; a failing hook is
    logged, never allowed to fail the job or the worker."""
    for m in middleware:
        try:
            getattr(m, name)(*args)
        except Exception:
            log.exception("middleware %r.%s failed", m, name)
