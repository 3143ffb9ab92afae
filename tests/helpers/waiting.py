"""Waiting, bounded, for something the real servers will do."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    check: Callable[[], bool],
    timeout_s: float = 20.0,
    what: str | Callable[[], str] = "a condition",
) -> None:
    """Polls `check` until it holds; fails the test after `timeout_s`.
    A callable `what` is asked at the failure, to describe the state then."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"timed out waiting for {said}")
        time.sleep(0.02)
