"""Fixed loopback ports of tests that start servers of their own.

Two test runs may share this machine (CI runs the oldest supported Python's
pass beside the newest's): `CONVEYOR_TEST_PORT_SHIFT` moves every fixed port
of a run by the same amount, so the runs never reach each other's servers.
Ports stay below 32768, out of the kernel's ephemeral range.
"""

from __future__ import annotations

import os

SHIFT = int(os.environ.get("CONVEYOR_TEST_PORT_SHIFT", "0"))


def fixed_port(port: int) -> int:
    """`port`, moved by this run's shift."""
    moved = port + SHIFT
    if not 1024 <= moved < 32768:
        raise ValueError(f"port {port} shifted by {SHIFT} leaves 1024-32767")
    return moved
