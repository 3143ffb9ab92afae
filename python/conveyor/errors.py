"""Exceptions raised by Conveyor.

Every error from the native core arrives as one of these: the core gives a
stable code, and `_from_core` picks the class. Catch `ConveyorError` for all.
"""

from __future__ import annotations


class ConveyorError(Exception):
    """Base class of every Conveyor error."""

    code: str = "conveyor"


class InvalidJobError(ConveyorError, ValueError):
    """A job breaks a rule (bad type name, field too long, payload too large); nothing was sent."""

    code = "invalid_job"


class EnvelopeDecodeError(ConveyorError, ValueError):
    """Bytes that should be a job envelope are not a well-formed one."""

    code = "decode"


class UnsupportedEnvelopeVersion(EnvelopeDecodeError):
    """The envelope was written by a newer Conveyor; upgrade this side."""

    code = "unsupported_version"


class KafkaError(ConveyorError):
    """Kafka refused or failed an operation."""

    code = "kafka"


class UnknownTopicError(KafkaError):
    """The Kafka topic for a queue does not exist; Conveyor never auto-creates topics."""

    code = "unknown_topic"


class DeliveryError(KafkaError):
    """Jobs handed to the producer were not written to Kafka; the message names them."""

    code = "delivery"


class RedisError(ConveyorError):
    """Redis refused or failed an operation."""

    code = "redis"


class ConveyorTimeout(ConveyorError, TimeoutError):
    """An operation did not finish within its bound."""

    code = "timeout"


class PermanentError(ConveyorError):
    """Raise from a handler to fail the job for good: it is dead-lettered with
    this error at once, without the retries left."""

    code = "permanent"


class JobTimeout(ConveyorError, TimeoutError):
    """An attempt ran past its job type's `timeout_s`; it counts as a failed attempt."""

    code = "job_timeout"


class ConfigError(ConveyorError, ValueError):
    """A setting (from code or a `CONVEYOR_*` environment variable) has a value it cannot take."""

    code = "config"


class InternalError(ConveyorError):
    """Conveyor itself failed (a thread could not start, or panicked): a bug or an
    exhausted machine, never the caller's input."""

    code = "internal"


class JobFailed(ConveyorError):
    """The job a result was awaited for was given up on (dead-lettered):
    `error` is its last error as the worker recorded it (`type`, `message`,
    `traceback`, `attempt`), or its result could not be kept."""

    code = "job_failed"

    def __init__(self, message: str, error: dict[str, object] | None = None) -> None:
        super().__init__(message)
        #: The recorded error.
        self.error: dict[str, object] = error or {}


class JobCancelled(JobFailed):
    """Raise from a handler to stop a job whose cancel was asked
    (`current_job().cancelled`): it ends `cancelled`, not retried. Raised to
    a waiter of a `store_result` job that was cancelled."""

    code = "job_cancelled"


class DevServerError(ConveyorError):
    """A local development server (Kafka or Redis) could not be set up or started."""

    code = "dev_server"


_BY_CODE: dict[str, type[ConveyorError]] = {
    cls.code: cls
    for cls in (
        InvalidJobError,
        EnvelopeDecodeError,
        UnsupportedEnvelopeVersion,
        KafkaError,
        UnknownTopicError,
        DeliveryError,
        RedisError,
        ConveyorTimeout,
        ConfigError,
        InternalError,
    )
}


def _from_core(code: str, message: str) -> ConveyorError:
    """Build the exception for a native error code (called from Rust only)."""
    return _BY_CODE.get(code, ConveyorError)(message)
