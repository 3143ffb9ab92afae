"""Names for the stage codes recorded in an envelope (see docs/envelope.md)."""

from __future__ import annotations

from enum import IntEnum


class Stage(IntEnum):
    """A point in a job's life; the values are the wire codes.

    Mirrors `conveyor_core::envelope::Stage`; a test holds the two together.
    Envelopes may carry codes newer than these: readers keep them as plain ints.
    """

    KAFKA = 1
    RELAYED = 2
    STARTED = 3
    FINISHED = 4
    FAILED = 5
    DEAD_LETTERED = 6
    #: Sent to Kafka while also written straight into Redis (a double write):
    #: a relay in shadow mode drops only such copies.
    DOUBLE_WRITTEN = 7
    #: Where the relay read the job (Kafka partition and offset, not a time):
    #: a finishing worker counts it out of its partition's open jobs.
    SOURCE = 8
    #: Moved back from the dead letters for a fresh set of attempts.
    REPLAYED = 9
