//! Conveyor's core: the job envelope, the Redis key schema and scripts, and
//! the Kafka and Redis plumbing. No Python here: the `conveyor-py` crate
//! binds this to the `conveyor._core` module, and `cargo test` tests it alone.

pub mod call_reader;
pub mod config;
pub mod envelope;
pub mod error;
pub mod gate;
pub mod id;
pub mod kafka;
pub mod metrics;
pub mod payload;
pub mod relay;
pub mod runtime;
pub mod store;
pub mod worker;

pub use envelope::{Envelope, Stage, StageStamp};
pub use error::{Error, Result};
pub use id::JobId;
