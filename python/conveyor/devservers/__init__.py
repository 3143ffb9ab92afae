"""Local development servers: Kafka and Redis on loopback, started by Conveyor itself.

`conveyor dev up` uses `DevServers.default()`; the test suite uses the same
class with its own ports and folder, so tests run against exactly what users run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from conveyor import settings
from conveyor.devservers.kafka import KAFKA_VERSION, KafkaCluster, KafkaNode
from conveyor.devservers.redis import RedisCluster, RedisServer, RedisTls

__all__ = [
    "KAFKA_VERSION",
    "DevServers",
    "KafkaCluster",
    "KafkaNode",
    "RedisCluster",
    "RedisServer",
    "RedisTls",
]


@dataclass
class DevServers:
    """A Kafka cluster and a Redis server that start and stop together."""

    kafka: KafkaCluster
    redis: RedisServer

    @classmethod
    def at(
        cls,
        home: Path,
        *,
        kafka_port: int,
        redis_port: int,
        kafka_nodes: int = 1,
        cache: Path | None = None,
    ) -> DevServers:
        """Servers with their files under `home`. Node i (from 0) of Kafka
        listens on `kafka_port + 2i` with its controller on the next port."""
        # Servers run in their own folders: a relative home would move with them.
        home = Path(home).resolve()
        nodes = [
            KafkaNode(
                node_id=i + 1,
                port=kafka_port + 2 * i,
                controller_port=kafka_port + 2 * i + 1,
                home=home / "kafka" / f"node-{i + 1}",
            )
            for i in range(kafka_nodes)
        ]
        return cls(
            kafka=KafkaCluster(nodes, cache or settings.cache_home()),
            redis=RedisServer(port=redis_port, home=home / "redis"),
        )

    @classmethod
    def default(cls) -> DevServers:
        """The servers `conveyor dev up` manages, where `Settings()` points by default."""
        return cls.at(
            settings.dev_home(),
            kafka_port=settings.DEV_KAFKA_PORT,
            redis_port=settings.DEV_REDIS_PORT,
        )

    def up(self) -> tuple[bool, bool]:
        """Start what is not running; returns (kafka started, redis started)."""
        redis_started = self.redis.up()
        kafka_started = self.kafka.up()
        return kafka_started, redis_started

    def down(self) -> None:
        """Stop both."""
        self.kafka.down()
        self.redis.down()
