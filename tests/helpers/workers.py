"""Putting jobs straight into a queue's Redis, and worker processes of
`tests.helpers.worker_app` to run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import conveyor
from conveyor import _core

ROOT = Path(__file__).resolve().parents[2]


def admit(
    app: conveyor.Conveyor, job_type: str, calls: list[list[Any]], queue: str = "default"
) -> None:
    """Admits one job of `job_type` per argument list, as the relay would."""
    envelopes = [
        conveyor.Envelope(job_type, json.dumps({"args": c, "kwargs": {}}).encode()).encode()
        for c in calls
    ]
    store = _core.RedisStore(app.settings.redis_url)
    for i in range(0, len(envelopes), 5000):
        store.admit(app.settings.namespace, queue, envelopes[i : i + 5000])


def spawn_worker(env: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    """`conveyor worker tests.helpers.worker_app:app` with `env` added to
    the environment and `extra` arguments; stderr is piped."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "conveyor",
            "worker",
            "tests.helpers.worker_app:app",
            "--no-setup",
            *extra,
        ],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
