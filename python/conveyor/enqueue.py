"""What an enqueue returns: the job ids at once, the broker's word on request."""

from __future__ import annotations

from conveyor._core import DeliveryHandle

#: Jobs handed to Kafka: `.id`/`.ids` at once, `.wait()` for the broker's
#: acknowledgement (raises `DeliveryError` for jobs it did not take), `.done()`.
Enqueued = DeliveryHandle

__all__ = ["Enqueued"]
