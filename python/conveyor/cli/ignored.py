"""Telling operators, once each, about control-plane values a running relay
or gate found in Redis and refused to act on (see `control_values.rs` for
the rules): a typo'd pause or a stray shadow flag is logged with its reason
when first seen, and again only if it comes back after being fixed."""

from __future__ import annotations

import logging
from collections.abc import Iterable


class IgnoredValues:
    """Remembers which refusals were already logged."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log = log
        self._what = what
        self._seen: set[str] = set()

    def report(self, reasons: Iterable[str]) -> None:
        """Log each reason not logged since it was last absent."""
        now = set(reasons)
        for reason in sorted(now - self._seen):
            self._log.warning("ignoring %s: %s", self._what, reason)
        self._seen = now
