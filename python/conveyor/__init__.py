"""Conveyor: a durable, very fast job queue for Python services.

Kafka in front of Redis, with a Rust core. This module is the public API;
`conveyor._core` is private and may change without notice.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from conveyor._core import ENVELOPE_VERSION, Envelope, decode_many, encode_many, new_job_id
from conveyor.app import Conveyor
from conveyor.enqueue import Enqueued
from conveyor.envelope import Stage
from conveyor.errors import (
    ConfigError,
    ConveyorError,
    ConveyorTimeout,
    DeliveryError,
    DevServerError,
    EnvelopeDecodeError,
    InvalidJobError,
    JobCancelled,
    JobFailed,
    JobTimeout,
    KafkaError,
    PermanentError,
    RedisError,
    UnknownTopicError,
    UnsupportedEnvelopeVersion,
)
from conveyor.handles import JobHandle
from conveyor.job_context import JobInfo, current_job
from conveyor.jobs import JobOptions, JobType
from conveyor.middleware import Middleware
from conveyor.routing import Route
from conveyor.settings import Settings
from conveyor.worker import Worker

try:
    __version__ = version("conveyor")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

__all__ = [
    "ENVELOPE_VERSION",
    "ConfigError",
    "Conveyor",
    "ConveyorError",
    "ConveyorTimeout",
    "DeliveryError",
    "DevServerError",
    "Enqueued",
    "Envelope",
    "EnvelopeDecodeError",
    "InvalidJobError",
    "JobCancelled",
    "JobFailed",
    "JobHandle",
    "JobInfo",
    "JobOptions",
    "JobTimeout",
    "JobType",
    "KafkaError",
    "Middleware",
    "PermanentError",
    "RedisError",
    "Route",
    "Settings",
    "Stage",
    "UnknownTopicError",
    "UnsupportedEnvelopeVersion",
    "Worker",
    "__version__",
    "current_job",
    "decode_many",
    "encode_many",
    "new_job_id",
]
