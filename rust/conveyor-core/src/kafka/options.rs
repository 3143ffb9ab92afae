//! What a producer is asked for: the acknowledgement it waits for and its
//! timeouts (the gate, the client and the relay's tools all build these).

use std::time::Duration;

use super::report_polling::Reports;
use crate::error::{Error, Result};

/// Which acknowledgement a send waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// The partition leader wrote it (lowest latency; the original design's choice).
    Leader,
    /// Every in-sync replica wrote it.
    All,
}

impl std::str::FromStr for Acks {
    type Err = Error;

    /// `"leader"` or `"all"`, as the settings spell them.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "leader" => Ok(Acks::Leader),
            "all" => Ok(Acks::All),
            other => Err(Error::Config(format!(
                "acks must be 'leader' or 'all', not {other:?}"
            ))),
        }
    }
}

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerOptions {
    /// Acknowledgement level.
    pub acks: Acks,
    /// How long a record may wait for the broker before its send fails.
    pub delivery_timeout: Duration,
    /// How long `send` may wait for room in the local queue before failing
    /// the records that do not fit (Kafka down or far too slow).
    pub enqueue_timeout: Duration,
    /// Which threads serve delivery reports.
    pub reports: Reports,
    /// How long a record waits for others to share its request
    /// (librdkafka's `linger.ms`).
    pub linger: Duration,
}

impl Default for ProducerOptions {
    fn default() -> Self {
        Self {
            acks: Acks::All,
            delivery_timeout: Duration::from_secs(30),
            enqueue_timeout: Duration::from_secs(5),
            reports: Reports::SendersFirst,
            // A tenth of a millisecond: a lone job hardly waits, and callers'
            // batches (`enqueue_many`, a service's steady stream) still fill
            // while earlier requests are in flight. Against 0.5 ms
            // (bench/latency_sweep.py, bench/extension_ab.py, README): p50 at
            // 10,000 jobs/s 5.2-5.8 > 3.1-4.1 ms, client row 1.12 (noise).
            linger: Duration::from_micros(100),
        }
    }
}
