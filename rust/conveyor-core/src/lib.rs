//! Conveyor's core: the job envelope, the Redis key schema and scripts, and
//! the Kafka and Redis plumbing. No Python here: the `conveyor-py` crate
//! binds this to the `conveyor._core` module, and `cargo test` tests it alone.

pub mod envelope;
pub mod error;
pub mod gate;
pub mod id;
pub mod kafka;
pub mod keys;
pub mod metrics;
pub mod partitions;
pub mod producer;
pub mod queue;
pub mod redis_conn;
pub mod redis_store;
pub mod relay;
pub mod report_polling;
pub mod runtime;
pub mod worker;

pub use envelope::{Envelope, Stage, StageStamp};
pub use error::{Error, Result};
pub use id::JobId;
