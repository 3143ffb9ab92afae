"""Throughput and latency over time, for the dashboard: every few seconds
it reads each queue's counters and depths, the canaries' latency and the
relays' lag, and keeps the last `keep` samples in memory (half an hour by
default). Rates are the counters' differences between samples, so the
series start when the dashboard does."""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Callable
from typing import Any

from conveyor import overview
from conveyor.errors import ConveyorError
from conveyor.settings import Settings


class Series:
    """Samples `queues()` every `every_s` seconds in a background thread."""

    def __init__(
        self,
        settings: Settings,
        queues: Callable[[], list[str]],
        every_s: float,
        keep: int = 900,
    ) -> None:
        self._settings = settings
        self._queues = queues
        self._every_s = every_s
        self._samples: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="conveyor-series", daemon=True)
        #: The last sampling error (Redis away), shown on the page.
        self.error: str | None = None

    def start(self) -> None:
        """Samples until `stop`."""
        self._thread.start()

    def stop(self) -> None:
        """Stops sampling."""
        self._stopping.set()
        self._thread.join(timeout=self._every_s + 5)

    def sample(self) -> None:
        """Takes one sample now."""
        view = overview.gather(self._settings, self._queues())
        point: dict[str, Any] = {"at": view.at, "queues": {}, "lag": view.lag_by_topic}
        for q in view.queues:
            point["queues"][q.name] = {**q.ended, "queued": q.depth["queued"]}
        for c in view.canaries:
            point["queues"].setdefault(c.queue, {})["canary_s"] = c.slowest_s
        with self._lock:
            self._samples.append(point)

    def snapshot(self) -> dict[str, Any]:
        """Per queue, `[at, done/s, dead/s, queued, canary latency s]` per
        sample after the first; the lag per topic of each sample."""
        with self._lock:
            samples = list(self._samples)
        rates: dict[str, list[list[float | None]]] = {}
        for before, after in itertools.pairwise(samples):
            span = after["at"] - before["at"]
            for name, now in after["queues"].items():
                then = before["queues"].get(name, now)
                rates.setdefault(name, []).append(
                    [
                        after["at"],
                        (now.get("done", 0) - then.get("done", 0)) / span,
                        (now.get("dead", 0) - then.get("dead", 0)) / span,
                        now.get("queued", 0),
                        now.get("canary_s"),
                    ]
                )
        lag = [[s["at"], s["lag"]] for s in samples]
        return {"every_s": self._every_s, "rates": rates, "lag": lag, "error": self.error}

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.sample()
                self.error = None
            except ConveyorError as e:
                self.error = f"{type(e).__name__}: {e}"
            self._stopping.wait(self._every_s)
