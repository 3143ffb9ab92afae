"""Where Conveyor finds Kafka and Redis.

With nothing configured, every command talks to the local development servers
that `conveyor dev up` starts, so a newcomer needs no configuration at all.
Environment variables override the defaults; secrets (a Redis password, Kafka
SASL credentials) belong in them or in a config file, never in code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: Ports of the local development servers; chosen off the usual 9092/6379 so a
#: system Kafka or Redis on this machine is never touched by accident. The
#: Kafka controller listens on the port after the broker's.
DEV_KAFKA_PORT = int(os.environ.get("CONVEYOR_DEV_KAFKA_PORT", "19092"))
DEV_REDIS_PORT = int(os.environ.get("CONVEYOR_DEV_REDIS_PORT", "16379"))


def dev_home() -> Path:
    """Folder holding the dev servers' data, logs and pid files."""
    explicit = os.environ.get("CONVEYOR_DEV_HOME")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "conveyor" / "dev"


def cache_home() -> Path:
    """Folder for downloads that can be rebuilt (Kafka's jars)."""
    explicit = os.environ.get("CONVEYOR_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "conveyor"


@dataclass(frozen=True)
class Settings:
    """Connection settings shared by every Conveyor component."""

    kafka_bootstrap: str = f"127.0.0.1:{DEV_KAFKA_PORT}"
    redis_url: str = f"redis://127.0.0.1:{DEV_REDIS_PORT}/0"
    #: Prefix that keeps separate users of one Redis and one Kafka apart.
    namespace: str = ""

    @classmethod
    def from_env(cls) -> Settings:
        """Defaults, overridden by `CONVEYOR_KAFKA_BOOTSTRAP`, `CONVEYOR_REDIS_URL`
        and `CONVEYOR_NAMESPACE` where set."""
        default = cls()
        return cls(
            kafka_bootstrap=os.environ.get("CONVEYOR_KAFKA_BOOTSTRAP", default.kafka_bootstrap),
            redis_url=os.environ.get("CONVEYOR_REDIS_URL", default.redis_url),
            namespace=os.environ.get("CONVEYOR_NAMESPACE", default.namespace),
        )
