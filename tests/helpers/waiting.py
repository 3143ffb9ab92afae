"""Waiting, bounded, for something the real servers will do."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    check: Callable[[], bool], timeout_s: float = 20.0, what: str = "a condition"
) -> None:
    """Polls `check` until it holds; fails the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
