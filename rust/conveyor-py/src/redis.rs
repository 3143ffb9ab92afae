//! `RedisStore`: a Redis connection running Conveyor's scripts.

use std::sync::Mutex;
use std::time::Duration;

use conveyor_core::keys::QueueKeys;
use conveyor_core::redis_store::RedisStore as CoreStore;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;

use crate::errors::IntoPyResult;

/// One connection to one Redis server. Calls from several threads take turns.
#[pyclass(frozen, module = "conveyor._core")]
pub struct RedisStore {
    inner: Mutex<CoreStore>,
}

impl RedisStore {
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut CoreStore) -> conveyor_core::Result<T> + Send,
    ) -> PyResult<T> {
        py.detach(|| {
            let mut store = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut store)
        })
        .py()
    }
}

#[pymethods]
impl RedisStore {
    #[new]
    #[pyo3(signature = (url, *, timeout_s=5.0))]
    fn new(py: Python<'_>, url: &str, timeout_s: f64) -> PyResult<Self> {
        let store = py
            .detach(|| CoreStore::connect(url, Duration::from_secs_f64(timeout_s)))
            .py()?;
        Ok(Self {
            inner: Mutex::new(store),
        })
    }

    /// The server's `INFO server` section as a dict.
    fn server_info(&self, py: Python<'_>) -> PyResult<Vec<(String, String)>> {
        self.with(py, |s| s.server_info())
    }

    /// Appends encoded envelopes to a queue's ready list; returns its new length.
    fn push_ready(
        &self,
        py: Python<'_>,
        namespace: &str,
        queue: &str,
        envelopes: Vec<PyBackedBytes>,
    ) -> PyResult<u64> {
        let keys = QueueKeys::new(namespace, queue).py()?;
        let owned: Vec<Vec<u8>> = envelopes.iter().map(|b| b.to_vec()).collect();
        self.with(py, |s| s.push_ready(&keys, &owned))
    }

    /// Up to `count` envelopes from the head of a ready list, left in place.
    fn peek_ready<'py>(
        &self,
        py: Python<'py>,
        namespace: &str,
        queue: &str,
        count: usize,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let keys = QueueKeys::new(namespace, queue).py()?;
        let items = self.with(py, |s| s.peek_ready(&keys, count))?;
        Ok(items.iter().map(|b| PyBytes::new(py, b)).collect())
    }

    /// Publishes job types (`(name, JSON options)`) for the gate; returns how
    /// many the registry holds.
    fn publish_registry(
        &self,
        py: Python<'_>,
        namespace: &str,
        entries: Vec<(String, String)>,
    ) -> PyResult<u64> {
        self.with(py, |s| s.publish_registry(namespace, &entries))
    }

    /// Every published job type as `(name, JSON options)`.
    fn read_registry(&self, py: Python<'_>, namespace: &str) -> PyResult<Vec<(String, String)>> {
        self.with(py, |s| s.read_registry(namespace))
    }

    /// The next offset to relay per `<topic>:<partition>` of a queue.
    fn relayed_offsets(
        &self,
        py: Python<'_>,
        namespace: &str,
        queue: &str,
    ) -> PyResult<Vec<(String, i64)>> {
        let keys = QueueKeys::new(namespace, queue).py()?;
        self.with(py, |s| s.relayed_offsets(&keys))
    }

    /// The relay's exactly-once append for one partition's records
    /// (`(offset, envelope)` in offset order); returns `(pushed, skipped)`.
    fn relay_batch(
        &self,
        py: Python<'_>,
        namespace: &str,
        queue: &str,
        topic_partition: &str,
        next_offset: i64,
        records: Vec<(i64, PyBackedBytes)>,
    ) -> PyResult<(u64, u64)> {
        let keys = QueueKeys::new(namespace, queue).py()?;
        let owned: Vec<(i64, Vec<u8>)> = records.iter().map(|(o, b)| (*o, b.to_vec())).collect();
        self.with(py, |s| {
            s.relay_batch(&keys, topic_partition, next_offset, &owned)
        })
    }

    /// Sets (or with `None` clears) a relay control for `topic`: `kind` is
    /// "rate" (jobs per second, as text) or "paused". Relays apply it within a second.
    #[pyo3(signature = (namespace, kind, topic, value=None))]
    fn set_relay_control(
        &self,
        py: Python<'_>,
        namespace: &str,
        kind: &str,
        topic: &str,
        value: Option<&str>,
    ) -> PyResult<()> {
        self.with(py, |s| s.set_relay_control(namespace, kind, topic, value))
    }

    /// Every relay control of a namespace as `(field, value)`.
    fn relay_controls(&self, py: Python<'_>, namespace: &str) -> PyResult<Vec<(String, String)>> {
        self.with(py, |s| s.relay_controls(namespace))
    }

    /// How many jobs a queue's ready list holds.
    fn ready_len(&self, py: Python<'_>, namespace: &str, queue: &str) -> PyResult<u64> {
        let keys = QueueKeys::new(namespace, queue).py()?;
        self.with(py, |s| s.ready_len(&keys))
    }

    /// Deletes every key of a queue.
    fn purge(&self, py: Python<'_>, namespace: &str, queue: &str) -> PyResult<()> {
        let keys = QueueKeys::new(namespace, queue).py()?;
        self.with(py, |s| s.purge(&keys))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RedisStore>()
}
