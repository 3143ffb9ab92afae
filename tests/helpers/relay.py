"""Starting a relay of an app's default queue (and `wait_until`, for its callers)."""

from __future__ import annotations

import conveyor
from conveyor import _core
from tests.helpers.waiting import wait_until

__all__ = ["start_relay", "wait_until"]


def start_relay(
    app: conveyor.Conveyor,
    group: str = "relay",
    properties: list[tuple[str, str]] | None = None,
    redis_url: str | None = None,
) -> _core.Relay:
    """A relay of the app's default queue, into `redis_url` (default: the app's)."""
    s = app.settings
    return _core.Relay(
        s.kafka_bootstrap,
        redis_url or s.redis_url,
        [(s.topic_for("default"), "default")],
        namespace=s.namespace,
        group_id=f"{group}-{s.namespace}",
        properties=properties,
        tallies=s.tallies,
    )
