"""Run a worker in several processes (`conveyor worker --processes N`), for
CPU-bound handlers that one process's GIL would serialize.

The parent forks the children after importing the application, forwards
SIGTERM and SIGINT to them, and restarts a child that dies unexpectedly
(its jobs come back through the reaper when their leases expire).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable

#: A child that dies sooner than this after starting is restarted only after a pause.
_RESTART_PAUSE_S = 1.0


def run_processes(count: int, child: Callable[[int], int]) -> int:
    """Run `child(i)` in `count` forked processes (i from 0) until a signal
    stops them; a restarted child keeps the index of the one it replaces.

    Returns 0 when every child exited cleanly after a stop, else 1.
    """
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    children: dict[int, tuple[float, int]] = {}

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 1
            try:
                code = child(index)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children[pid] = (time.monotonic(), index)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for index in range(count):
        spawn(index)
    failed = False
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        started, index = children.pop(pid, (time.monotonic(), 0))
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            failed |= code != 0
            continue
        print(f"conveyor: worker process {pid} exited ({code}); starting another", flush=True)
        if time.monotonic() - started < _RESTART_PAUSE_S:
            time.sleep(_RESTART_PAUSE_S)
        if not stopping:
            spawn(index)
    return 1 if failed else 0
