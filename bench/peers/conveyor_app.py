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
    waited = record.job(sent)
    if waited > record.SLOW_S:
        record.slow(stages_ms(sent, waited))


@app.job("bench.bare", max_attempts=1)
def bare(sent: float) -> None:
    """A job that does nothing at all, not even the counting: what
    `bench/worker_stages.py --handler bare` prices the worker's own cost with."""


def stages_ms(sent: float, waited: float) -> dict[str, float]:
    """Where the running job waited, from its envelope's stamps: the client
    to the broker's append, the broker to the relay's read, the relay to the
    start (`waited` is the whole, from `sent`, the producer's clock)."""
    job = conveyor.current_job()
    envelope = job.envelope() if job else None
    if envelope is None:
        return {"waited_ms": waited * 1000}
    stamps = dict(envelope.stages)
    started_us = (sent + waited) * 1e6
    kafka, relayed = stamps.get(conveyor.Stage.KAFKA), stamps.get(conveyor.Stage.RELAYED)
    out = {"waited_ms": waited * 1000}
    if kafka is not None and relayed is not None:
        out |= {
            "client_to_kafka_ms": (kafka - sent * 1e6) / 1000,
            "kafka_to_relay_ms": (relayed - kafka) / 1000,
            "relay_to_start_ms": (started_us - relayed) / 1000,
        }
    return out


_store: list[_core.RedisStore] = []


def enqueue(sent: list[float], job_type: str = "bench.noop") -> None:
    """The direct path: envelopes admitted into Redis with the relay's script."""
    if not _store:
        _store.append(_core.RedisStore(app.settings.redis_url))
    envelopes = [conveyor.Envelope(job_type, _core.encode_call([t], {})).encode() for t in sent]
    _store[0].admit(app.settings.namespace, "default", envelopes)
