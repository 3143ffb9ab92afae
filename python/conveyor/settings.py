"""Where Conveyor finds Kafka and Redis.

With nothing configured, every command talks to the local development servers
that `conveyor dev up` starts, so a newcomer needs no configuration at all.
Environment variables override the defaults; secrets (a Redis password, Kafka
SASL credentials) belong in them or in a config file, never in code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from conveyor import _core
from conveyor.errors import ConfigError
from conveyor.routing import Route

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
    """Connection and producer settings shared by every Conveyor component."""

    kafka_bootstrap: str = f"127.0.0.1:{DEV_KAFKA_PORT}"
    redis_url: str = f"redis://127.0.0.1:{DEV_REDIS_PORT}/0"
    #: Prefix that keeps separate users of one Redis and one Kafka apart.
    namespace: str = ""
    #: Queues that may be enqueued to besides those of registered job types.
    queues: tuple[str, ...] = ("default",)
    #: Kafka topic of queue `q` is `<topic_prefix>[<namespace>.]<q>`.
    topic_prefix: str = "conveyor."
    #: Largest payload (the encoded handler arguments) a job may carry.
    max_payload_bytes: int = 1024 * 1024
    #: "all" (every in-sync replica, with idempotence: an acknowledged job
    #: survives losing a broker, and a retry never writes it twice) or
    #: "leader" (lower latency; a leader that dies before its followers copied
    #: a job loses it) before a send counts.
    acks: str = "all"
    #: How long a job may wait for Kafka before its enqueue fails.
    delivery_timeout_s: float = 30.0
    #: Partitions and replication of topics Conveyor creates. Replication
    #: None: three copies (with `min.insync.replicas=2`), or every broker of a
    #: smaller cluster.
    topic_partitions: int = 3
    topic_replication: int | None = None
    #: Extra librdkafka properties (SASL, TLS, tuning).
    kafka_properties: tuple[tuple[str, str], ...] = ()
    #: Job type -> Route, for types not sent through Kafka only (migrations).
    routes: tuple[tuple[str, Route], ...] = ()
    #: How often producers re-read the routes set at run time with `conveyor
    #: route` (seconds); None: never (only `routes` and `set_route` apply).
    route_refresh_s: float | None = 1.0
    #: Queues kept on other Redis deployments than `redis_url`: (queue, URL).
    #: One Kafka cluster can feed several independent Redis servers this way;
    #: relays, workers and the direct path all follow it.
    queue_redis: tuple[tuple[str, str], ...] = ()
    #: Dead-lettered jobs each queue keeps, and for how long (seconds): the
    #: oldest beyond either limit are forgotten as new ones die, so failures
    #: cannot fill Redis. `conveyor dead purge` forgets them on demand.
    dead_max: int = 100_000
    dead_max_age_s: float = 30 * 24 * 3600.0
    #: How long after it ended a job stays findable by id (`app.lookup`,
    #: `conveyor job`), 0 for never, and at most how many bytes of Redis
    #: each queue's history takes (docs/lookup.md).
    job_history_s: float = 300.0
    job_history_max_bytes: int = 32 * 1024 * 1024
    #: Whether every hop counts the jobs it passed on (`conveyor status`'s
    #: jobs per hop, docs/telemetry.md#counts-per-hop). Off only to measure
    #: what counting costs (bench/cost_bench.py): a missing job then goes
    #: unnoticed.
    tallies: bool = True
    #: Start with Redis only: job types without a route go straight into
    #: Redis (the direct path) and nothing needs Kafka. Moving a type to
    #: Kafka later is the per-type migration of `conveyor.routing` (double
    #: write, shadow, percentages); docs/redis-only.md.
    redis_only: bool = False

    def redis_url_for(self, queue: str) -> str:
        """The Redis deployment that holds `queue`."""
        for name, url in self.queue_redis:
            if name == queue:
                return url
        return self.redis_url

    @classmethod
    def from_env(cls) -> Settings:
        """Defaults, overridden by `CONVEYOR_*` environment variables where set.

        `CONVEYOR_KAFKA_BOOTSTRAP`, `CONVEYOR_REDIS_URL` (a password goes in it),
        `CONVEYOR_NAMESPACE`, `CONVEYOR_ACKS`, `CONVEYOR_QUEUE_REDIS`
        (`queue=redis://...` pairs separated by spaces), and for SASL
        `CONVEYOR_KAFKA_SASL_MECHANISM`, `CONVEYOR_KAFKA_SASL_USERNAME`,
        `CONVEYOR_KAFKA_SASL_PASSWORD` (with `CONVEYOR_KAFKA_SECURITY_PROTOCOL`,
        default `SASL_SSL`), for TLS `CONVEYOR_KAFKA_SECURITY_PROTOCOL=SSL` (or
        `SASL_SSL`) with `CONVEYOR_KAFKA_SSL_CA_FILE` (default: the system's
        roots) and, for a client certificate, `CONVEYOR_KAFKA_SSL_CERT_FILE` and
        `CONVEYOR_KAFKA_SSL_KEY_FILE`, `CONVEYOR_ROUTE_REFRESH_S` (seconds, or "off"),
        `CONVEYOR_DEAD_MAX` and `CONVEYOR_DEAD_MAX_AGE_S` (dead-letter retention),
        `CONVEYOR_JOB_HISTORY_S` and `CONVEYOR_JOB_HISTORY_MAX_BYTES` (ended jobs
        findable by id), `CONVEYOR_TALLIES` ("off" to stop counting jobs per hop),
        `CONVEYOR_REDIS_ONLY` ("on" for no Kafka: every type without a route
        goes straight into Redis).
        """
        env = os.environ
        default = cls()
        properties: list[tuple[str, str]] = []
        if env.get("CONVEYOR_KAFKA_SASL_MECHANISM"):
            properties += [
                ("security.protocol", env.get("CONVEYOR_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")),
                ("sasl.mechanism", env["CONVEYOR_KAFKA_SASL_MECHANISM"]),
                ("sasl.username", env.get("CONVEYOR_KAFKA_SASL_USERNAME", "")),
                ("sasl.password", env.get("CONVEYOR_KAFKA_SASL_PASSWORD", "")),
            ]
        elif env.get("CONVEYOR_KAFKA_SECURITY_PROTOCOL"):
            properties.append(("security.protocol", env["CONVEYOR_KAFKA_SECURITY_PROTOCOL"]))
        for var, prop in (
            ("CONVEYOR_KAFKA_SSL_CA_FILE", "ssl.ca.location"),
            ("CONVEYOR_KAFKA_SSL_CERT_FILE", "ssl.certificate.location"),
            ("CONVEYOR_KAFKA_SSL_KEY_FILE", "ssl.key.location"),
        ):
            if env.get(var):
                properties.append((prop, env[var]))
        return cls(
            kafka_bootstrap=env.get("CONVEYOR_KAFKA_BOOTSTRAP", default.kafka_bootstrap),
            redis_url=env.get("CONVEYOR_REDIS_URL", default.redis_url),
            namespace=env.get("CONVEYOR_NAMESPACE", default.namespace),
            acks=env.get("CONVEYOR_ACKS", default.acks),
            queue_redis=tuple(
                (queue, url)
                for queue, _, url in (
                    pair.partition("=") for pair in env.get("CONVEYOR_QUEUE_REDIS", "").split()
                )
            ),
            kafka_properties=tuple(properties),
            route_refresh_s=_route_refresh(env.get("CONVEYOR_ROUTE_REFRESH_S")),
            dead_max=int(_number(env, "CONVEYOR_DEAD_MAX", default.dead_max)),
            dead_max_age_s=_number(env, "CONVEYOR_DEAD_MAX_AGE_S", default.dead_max_age_s),
            job_history_s=_number(env, "CONVEYOR_JOB_HISTORY_S", default.job_history_s),
            job_history_max_bytes=int(
                _number(env, "CONVEYOR_JOB_HISTORY_MAX_BYTES", default.job_history_max_bytes)
            ),
            tallies=_switch(env, "CONVEYOR_TALLIES", default.tallies),
            redis_only=_switch(env, "CONVEYOR_REDIS_ONLY", default.redis_only),
        )

    def topic_for(self, queue: str) -> str:
        """The Kafka topic that carries `queue`."""
        return _core.queue_topic(self.topic_prefix, self.namespace, queue)

    def __repr__(self) -> str:
        # Never print secrets: a password may sit in the Redis URL or SASL settings.
        hidden = ("redis_url", "kafka_properties", "queue_redis")
        shown = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items() if k not in hidden)
        extra = len(self.kafka_properties)
        return f"Settings({shown}, redis_url=<hidden>, kafka_properties=<{extra} set>)"


def _route_refresh(text: str | None) -> float | None:
    """`CONVEYOR_ROUTE_REFRESH_S`: seconds, or "off"/"0" for never."""
    if text is None:
        return Settings.route_refresh_s
    if text.strip().lower() in ("off", "0", ""):
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"CONVEYOR_ROUTE_REFRESH_S must be seconds or 'off', not {text!r}")
    return seconds


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    """On or off from the environment, or `default` if unset."""
    text = env.get(name)
    if text is None:
        return default
    word = text.strip().lower()
    if word in ("on", "1", "true", "yes"):
        return True
    if word in ("off", "0", "false", "no"):
        return False
    raise ConfigError(f"{name} must be 'on' or 'off', not {text!r}")


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    """A number of at least 0 from the environment, or `default` if unset."""
    text = env.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"{name} must be a finite number of at least 0, not {text!r}")
    return value
