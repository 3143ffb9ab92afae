//! The one error type of the core crate.
//!
//! Every failure a caller can see is an [`Error`]; [`Error::code`] gives the
//! stable name that the Python package maps to its exception classes
//! (`conveyor.errors`), so the mapping is written once and never by message.

use rdkafka::error::KafkaError;

/// Everything that can go wrong in the core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A job (or one of its fields) breaks a rule of the envelope; nothing was sent.
    #[error("invalid job: {0}")]
    InvalidJob(String),
    /// Bytes that claim to be an envelope are not a well-formed one.
    #[error("malformed envelope: {0}")]
    Decode(String),
    /// The envelope was written by a newer Conveyor than this one.
    #[error(
        "envelope version {found} is newer than this build understands (up to {supported}); \
         upgrade conveyor on this side"
    )]
    UnsupportedVersion {
        /// The version byte found in the envelope.
        found: u8,
        /// The newest version this build reads.
        supported: u8,
    },
    /// Kafka refused or failed an operation.
    #[error("kafka {op} failed: {source}")]
    Kafka {
        /// What we were doing, e.g. `"produce"`.
        op: &'static str,
        /// The client's error.
        source: KafkaError,
    },
    /// A Kafka topic that Conveyor was asked to write to does not exist.
    #[error(
        "Kafka topic {0:?} does not exist; Conveyor never auto-creates topics: \
         create it with `conveyor topics create` (or let a worker create its queues' topics)"
    )]
    UnknownTopic(String),
    /// Jobs handed to the producer were not written to Kafka.
    #[error("{0}")]
    Delivery(String),
    /// Redis refused or failed an operation.
    #[error("redis: {0}")]
    Redis(redis::RedisError),
    /// An operation did not finish within its bound.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A setting (such as a Redis URL) has a value it cannot take.
    #[error("bad setting: {0}")]
    Config(String),
    /// Conveyor itself failed (a thread could not start or panicked): a bug
    /// or an exhausted machine, never the caller's input.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The stable code for this kind of error, shared with Python (and, for
    /// script errors, with Lua). Never change an existing code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidJob(_) => "invalid_job",
            Error::Decode(_) => "decode",
            Error::UnsupportedVersion { .. } => "unsupported_version",
            Error::Kafka { .. } => "kafka",
            Error::UnknownTopic(_) => "unknown_topic",
            Error::Delivery(_) => "delivery",
            Error::Redis(_) => "redis",
            Error::Timeout(_) => "timeout",
            Error::Config(_) => "config",
            Error::Internal(_) => "internal",
        }
    }

    pub(crate) fn kafka(op: &'static str) -> impl FnOnce(KafkaError) -> Error {
        move |source| Error::Kafka { op, source }
    }
}

/// Every code [`Error::code`] can return, for the conformance test that holds
/// Python's exception classes to them.
pub const CODES: [&str; 10] = [
    "invalid_job",
    "decode",
    "unsupported_version",
    "kafka",
    "unknown_topic",
    "delivery",
    "redis",
    "timeout",
    "config",
    "internal",
];

/// The code a Lua script starts its own errors with (`redis.error_reply('CVARGS
/// <reason>')`): the caller passed arguments the script refuses. Shared by
/// every script (a test in `store::scripts` holds them to it) and mapped to
/// [`Error::InvalidJob`] here, so Python sees `InvalidJobError`, not a Redis
/// failure to retry.
pub const SCRIPT_ARGS_CODE: &str = "CVARGS";

impl From<redis::RedisError> for Error {
    fn from(err: redis::RedisError) -> Self {
        if err.code() == Some(SCRIPT_ARGS_CODE) {
            let reason = err.detail().unwrap_or("refused by a script").to_owned();
            return Error::InvalidJob(reason);
        }
        Error::Redis(err)
    }
}

/// The core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scripts_own_refusal_is_an_invalid_job_and_other_redis_errors_stay_redis() {
        let refused = redis::make_extension_error(
            SCRIPT_ARGS_CODE.to_owned(),
            Some("fetch takes 1 to 1000 jobs, not 0".to_owned()),
        );
        let err = Error::from(refused);
        assert_eq!(err.code(), "invalid_job");
        assert!(err.to_string().contains("fetch takes 1 to 1000"), "{err}");
        let oom = redis::make_extension_error("OOM".to_owned(), Some("no room".to_owned()));
        assert_eq!(Error::from(oom).code(), "redis");
    }
}
