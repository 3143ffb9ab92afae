"""Conveyor: `python -m conveyor worker peers.conveyor_app:app`."""

from __future__ import annotations

import os

import conveyor
from conveyor import _core
from peers import record

app = conveyor.Conveyor()


# bench/cost_bench.py measures what keeping each result costs.
@app.job(
    "bench.noop", max_attempts=1, store_result=os.environ.get("CONVEYOR_BENCH_RESULTS") == "on"
)
def noop(sent: float) -> None:
    """A no-op job."""
    record.job(sent)


_store: list[_core.RedisStore] = []


def enqueue(sent: list[float]) -> None:
    """The direct path: envelopes admitted into Redis with the relay's script."""
    if not _store:
        _store.append(_core.RedisStore(app.settings.redis_url))
    envelopes = [conveyor.Envelope("bench.noop", _core.encode_call([t], {})).encode() for t in sent]
    _store[0].admit(app.settings.namespace, "default", envelopes)
