"""When to try a failed job again: exponential backoff with jitter.

Attempt n (1-based) that failed is retried after about
`backoff_s * 2 ** (n - 1)`, capped at `backoff_max_s`, times a random factor in
[0.5, 1.0]: the cap keeps long outages from pushing retries out for days, and
the jitter keeps jobs that failed together (a dependency was down) from
coming back together.
"""

from __future__ import annotations

import random

#: Lowest share of the nominal delay that jitter may leave.
JITTER_FLOOR = 0.5


def nominal_delay(attempt: int, backoff_s: float, backoff_max_s: float) -> float:
    """The delay before retrying after failed attempt `attempt` (1-based), before jitter."""
    if attempt < 1:
        raise ValueError(f"attempts count from 1, got {attempt}")
    # 2 ** 64 already exceeds any sane cap; bounding the exponent avoids huge floats.
    return float(min(backoff_max_s, backoff_s * 2.0 ** min(attempt - 1, 64)))


def retry_delay(
    attempt: int,
    backoff_s: float,
    backoff_max_s: float,
    rng: random.Random | None = None,
) -> float:
    """The jittered delay before the next attempt after failed attempt `attempt`."""
    nominal = nominal_delay(attempt, backoff_s, backoff_max_s)
    factor = (rng or random).uniform(JITTER_FLOOR, 1.0)
    return nominal * factor
