"""The application the chaos run's workers serve (`conveyor worker
bench.chaos_app:app`). Settings come from the environment. Each run of a job
is a line in the worker process's own ledger file, outside Redis, which the
chaos run breaks on purpose: a line per run, so a job that ran twice shows."""

from __future__ import annotations

import os
from pathlib import Path

import conveyor

app = conveyor.Conveyor()
_ledger = (Path(os.environ["CHAOS_LEDGER"]) / f"ran-{os.getpid()}.log").open("a", buffering=1)


@app.job("chaos.job", max_attempts=1000)
def job(seq: int) -> None:
    """Records that job `seq` ran."""
    _ledger.write(f"{seq}\n")
