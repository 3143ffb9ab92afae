"""Filling a `maxmemory` Redis until it refuses to admit more."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

import conveyor
from conveyor import _core


def fill(
    store: _core.RedisStore,
    queue: str,
    batch: Callable[[int, int], list[bytes]],
    sizes: Sequence[int],
) -> int:
    """Admits `batch(first_index, size)` into `queue` until Redis refuses
    (OOM), for each size in turn: big batches first, then small ones to fill
    the last gap (a big command's own buffer counts against `maxmemory`
    while it is read). Returns how many jobs went in."""
    admitted = 0

    def until_refused(size: int) -> None:
        nonlocal admitted
        for _ in range(100_000):  # bounded: a test Redis fills long before this
            admitted += store.admit("", queue, batch(admitted, size))[0]

    for size in sizes:
        with pytest.raises(conveyor.RedisError, match="OOM"):
            until_refused(size)
    return admitted
