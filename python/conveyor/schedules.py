"""Periodic jobs: schedules registered in code, enqueued by the workers.

Every worker process checks its application's schedules a few times a
second; each occurrence that comes due is enqueued exactly once, however many
workers run, by one Redis script that claims the occurrence and queues the
job in the same step (`periodic-3.lua`). Like cron, occurrences that fall
while no worker runs are skipped, not made up later: a worker only enqueues
occurrences that come due after it started.

A schedule is `every` N seconds (occurrences at whole multiples of N since the
Unix epoch, so all workers agree) or a five-field `cron` expression in UTC:
minute, hour, day of month, month, day of week (0 or 7 = Sunday); each field
`*`, a number, a range `a-b`, a step `*/n` or `a-b/n`, or a comma list of those.
When both day fields are restricted, a day matching either runs (as in cron).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from conveyor.errors import InvalidJobError

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12))
_DOW = ("day of week", 0, 7)
#: Occurrences looked at per check at most: a worker that stalled for hours
#: enqueues the latest ones, not a flood.
_MAX_CATCH_UP = 60


def _parse_field(text: str, name: str, lo: int, hi: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if body == "*":
                start, end = lo, hi
            elif "-" in body:
                a, b = body.split("-", 1)
                start, end = int(a), int(b)
            else:
                start = end = int(body)
                if step_text:
                    end = hi
        except ValueError:
            raise InvalidJobError(f"cron {name} field {text!r} is not valid") from None
        if step < 1 or not lo <= start <= end <= hi:
            raise InvalidJobError(f"cron {name} field {text!r} must stay within {lo}-{hi}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    """A parsed five-field cron expression (UTC)."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, expression: str) -> Cron:
        """Parses `expression`; raises InvalidJobError with the reason."""
        fields = expression.split()
        if len(fields) != 5:
            raise InvalidJobError(
                f"cron expression {expression!r} needs 5 fields: "
                "minute hour day-of-month month day-of-week"
            )
        minutes, hours, days, months = (
            _parse_field(text, *spec) for text, spec in zip(fields[:4], _FIELDS, strict=True)
        )
        weekdays = frozenset(d % 7 for d in _parse_field(fields[4], *_DOW))
        return cls(minutes, hours, days, months, weekdays, fields[2] == "*", fields[4] == "*")

    def matches(self, epoch_minute: int) -> bool:
        """Whether the minute starting at `epoch_minute * 60` (UTC) is an occurrence."""
        t = time.gmtime(epoch_minute * 60)
        if t.tm_min not in self.minutes or t.tm_hour not in self.hours:
            return False
        if t.tm_mon not in self.months:
            return False
        day_ok = t.tm_mday in self.days
        weekday_ok = (t.tm_wday + 1) % 7 in self.weekdays  # tm_wday: Monday is 0
        if self.any_day or self.any_weekday:
            return day_ok and weekday_ok
        return day_ok or weekday_ok


@dataclass(frozen=True)
class Schedule:
    """A periodic job: `job_type` with fixed arguments on a timetable."""

    name: str
    job_type: str
    queue: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    every_s: float | None = None
    cron: Cron | None = None

    def occurrences(self, after: float, until: float) -> list[int]:
        """Occurrence times (ms since the epoch) in `(after, until]`, at most
        the latest `_MAX_CATCH_UP` of them."""
        if self.every_s is not None:
            first = math.floor(after / self.every_s) + 1
            last = math.floor(until / self.every_s)
            first = max(first, last - _MAX_CATCH_UP + 1)
            return [round(k * self.every_s * 1000) for k in range(first, last + 1)]
        assert self.cron is not None
        first_minute = math.floor(after / 60) + 1
        last_minute = math.floor(until / 60)
        first_minute = max(first_minute, last_minute - 366 * 24 * 60)
        found = [m * 60_000 for m in range(first_minute, last_minute + 1) if self.cron.matches(m)]
        return found[-_MAX_CATCH_UP:]
