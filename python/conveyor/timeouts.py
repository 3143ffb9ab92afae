"""Per-attempt timeouts: a watchdog thread for sync handlers, `wait_for` for
async ones; both end the attempt with `JobTimeout`."""

from __future__ import annotations

import asyncio
import ctypes
import threading
import time
from collections.abc import Coroutine
from typing import Any

from conveyor.errors import JobTimeout


class Timeouts:
    """Raises JobTimeout in threads whose sync handler ran past its deadline.

    CPython can only deliver the exception between bytecodes: a handler
    blocked inside one long C call (a socket read without a timeout) sees it
    when that call returns. Handlers should still use timeouts of their own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deadlines: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float) -> None:
        """Starts the calling thread's clock: `seconds` until JobTimeout."""
        with self._lock:
            self._deadlines[threading.get_ident()] = time.monotonic() + seconds
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="conveyor-timeouts", daemon=True
                )
                self._thread.start()

    def disarm(self) -> None:
        """Stops the calling thread's clock."""
        with self._lock:
            self._deadlines.pop(threading.get_ident(), None)

    def stop(self) -> None:
        """Ends the watchdog thread."""
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            now = time.monotonic()
            with self._lock:
                late = [t for t, d in self._deadlines.items() if d <= now]
                for ident in late:
                    del self._deadlines[ident]
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(
                        ctypes.c_ulong(ident), ctypes.py_object(JobTimeout)
                    )


async def with_timeout(coro: Coroutine[Any, Any, Any], seconds: float) -> Any:
    """Awaits `coro`, ending it with JobTimeout after `seconds`."""
    try:
        return await asyncio.wait_for(coro, seconds)
    # Before Python 3.11, asyncio's TimeoutError is not the built-in one.
    except (TimeoutError, asyncio.TimeoutError):
        raise JobTimeout(f"attempt ran longer than its timeout of {seconds}s") from None
