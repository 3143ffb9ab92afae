"""Starting a gate that learns job types from an app's registry."""

from __future__ import annotations

from typing import Any

import conveyor
from conveyor import _core


def start_gate(app: conveyor.Conveyor, **options: Any) -> _core.Gate:
    """A gate on a free loopback port for `app`'s Kafka, namespace and
    registry (read every 0.2 s); `options` are more `_core.Gate` arguments."""
    s = app.settings
    return _core.Gate(
        "127.0.0.1:0",
        s.kafka_bootstrap,
        namespace=s.namespace,
        registry_url=s.redis_url,
        registry_refresh_s=0.2,
        **options,
    )
