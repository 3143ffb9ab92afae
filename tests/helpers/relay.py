"""Starting a relay of an app's default queue, and waiting for a condition."""

from __future__ import annotations

import time
from collections.abc import Callable

import conveyor
from conveyor import _core


def start_relay(app: conveyor.Conveyor, group: str = "relay") -> _core.Relay:
    s = app.settings
    return _core.Relay(
        s.kafka_bootstrap,
        s.redis_url,
        [(s.topic_for("default"), "default")],
        namespace=s.namespace,
        group_id=f"{group}-{s.namespace}",
    )


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
