"""Running the `conveyor` command as a user would, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys


def conveyor(
    *argv: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python -m conveyor ARGV...` with `env` added to this environment."""
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *argv],
        env={**os.environ, **(env or {})},
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
