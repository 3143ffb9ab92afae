//! `Relay`: Kafka to Redis on a Rust thread; Python only starts and stops it.

use std::collections::HashMap;
use std::sync::Mutex;

use conveyor_core::config::duration;
use conveyor_core::kafka::KafkaConfig;
use conveyor_core::relay::{self, RelayConfig, RelayHandle};
use pyo3::prelude::*;

use crate::errors::IntoPyResult;

/// A running relay. No Python runs per job: consuming, checking, stamping
/// and the pipelined Redis writes all happen on its Rust thread.
#[pyclass(frozen, module = "conveyor._core")]
pub struct Relay {
    handle: Mutex<RelayHandle>,
}

impl Relay {
    fn handle(&self) -> std::sync::MutexGuard<'_, RelayHandle> {
        self.handle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[pymethods]
impl Relay {
    #[new]
    #[pyo3(signature = (bootstrap, redis_url, routes, *, namespace="", group_id="conveyor-relay", batch_max=5000, batch_wait_s=0.005, memory_high=0.8, memory_low=0.6, depth_high=None, depth_low=0, properties=None, tallies=true))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        bootstrap: &str,
        redis_url: String,
        routes: Vec<(String, String)>,
        namespace: &str,
        group_id: &str,
        batch_max: usize,
        batch_wait_s: f64,
        memory_high: f64,
        memory_low: f64,
        depth_high: Option<u64>,
        depth_low: u64,
        properties: Option<Vec<(String, String)>>,
        tallies: bool,
    ) -> PyResult<Self> {
        let config = RelayConfig {
            kafka: KafkaConfig {
                bootstrap_servers: bootstrap.to_owned(),
                properties: properties.unwrap_or_default(),
            },
            group_id: group_id.to_owned(),
            redis_url,
            namespace: namespace.to_owned(),
            routes,
            batch_max,
            batch_wait: duration("batch_wait_s", batch_wait_s).py()?,
            memory_high,
            memory_low,
            depth_high,
            depth_low,
            tallies,
        };
        let handle = py.detach(|| relay::start(config)).py()?;
        Ok(Self {
            handle: Mutex::new(handle),
        })
    }

    /// Counters: relayed, skipped, duplicates, shadowed, dead_lettered,
    /// dead_letter_failed, batches, redis_errors;
    /// held (jobs read but waiting for their topic's rate or pause);
    /// memory_guarded (1 while Redis is over its high-water mark) and
    /// depth_guarded (queues over their depth high-water mark).
    fn stats(&self) -> HashMap<&'static str, u64> {
        HashMap::from(self.handle().stats().counters())
    }

    /// The latest records a dead-letter topic refused or did not take in
    /// time, as `topic[partition]@offset: reason` (each still in its job
    /// topic at that offset).
    fn dead_letter_failures(&self) -> Vec<String> {
        let handle = self.handle();
        let failures = handle
            .stats()
            .dead_letter_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        failures.iter().cloned().collect()
    }

    /// Relay controls found in Redis and not acted on, as `(field, value,
    /// reason)`, from the last read (twice a second).
    fn ignored_controls(&self) -> Vec<(String, String, String)> {
        let handle = self.handle();
        let controls = handle
            .stats()
            .controls
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        controls.ignored.clone()
    }

    /// Whether the relay's threads all still run (false once its loop ended
    /// by itself, on a fatal error, or after `stop`).
    fn running(&self) -> bool {
        self.handle().running()
    }

    /// The `(topic, partition)`s this relay owns now.
    fn assignment(&self) -> Vec<(String, i32)> {
        self.handle().stats().assignment()
    }

    /// Lag per owned partition as `(topic, partition, high watermark,
    /// relayed to, lag, watermark)`, measured once a second against the
    /// fences in Redis; `watermark` is the lowest offset whose job has not
    /// finished (what is relayed again after a total loss of Redis).
    fn lag(&self) -> Vec<(String, i32, i64, i64, i64, i64)> {
        self.handle()
            .stats()
            .lag()
            .into_iter()
            .map(|p| {
                (
                    p.topic,
                    p.partition,
                    p.high,
                    p.relayed_to,
                    p.lag,
                    p.watermark,
                )
            })
            .collect()
    }

    /// The relay's metrics in Prometheus' text format.
    fn metrics(&self) -> String {
        relay::render_metrics(self.handle().stats())
    }

    /// Finishes the batch in flight, commits, and leaves the group.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.handle().stop()).py()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Relay>()
}
