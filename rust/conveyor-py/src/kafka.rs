//! Kafka functions and the producer, GIL released around every network call.

use std::time::Duration;

use conveyor_core::kafka::{self as core_kafka, JobProducer, KafkaConfig};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::envelope::Envelope;
use crate::errors::IntoPyResult;

fn config(bootstrap: &str, properties: Option<Vec<(String, String)>>) -> KafkaConfig {
    KafkaConfig {
        bootstrap_servers: bootstrap.to_owned(),
        properties: properties.unwrap_or_default(),
    }
}

/// `(cluster id, [(node id, host, port)], topic names)`.
type ClusterInfoTuple = (Option<String>, Vec<(i32, String, i32)>, Vec<String>);

/// Asks the cluster for metadata: the proof that a broker really serves.
#[pyfunction]
#[pyo3(signature = (bootstrap, timeout_s=5.0, properties=None))]
fn kafka_cluster_info(
    py: Python<'_>,
    bootstrap: &str,
    timeout_s: f64,
    properties: Option<Vec<(String, String)>>,
) -> PyResult<ClusterInfoTuple> {
    let cfg = config(bootstrap, properties);
    let info = py
        .detach(|| core_kafka::cluster_info(&cfg, Duration::from_secs_f64(timeout_s)))
        .py()?;
    Ok((info.cluster_id, info.brokers, info.topics))
}

/// Creates a topic; `False` if it already existed.
#[pyfunction]
#[pyo3(signature = (bootstrap, name, partitions, replication=1, timeout_s=10.0, properties=None))]
fn kafka_create_topic(
    py: Python<'_>,
    bootstrap: &str,
    name: &str,
    partitions: i32,
    replication: i32,
    timeout_s: f64,
    properties: Option<Vec<(String, String)>>,
) -> PyResult<bool> {
    let cfg = config(bootstrap, properties);
    py.detach(|| {
        core_kafka::create_topic(
            &cfg,
            name,
            partitions,
            replication,
            Duration::from_secs_f64(timeout_s),
        )
    })
    .py()
}

/// A record read back from Kafka.
#[pyclass(frozen, get_all, module = "conveyor._core")]
pub struct KafkaRecord {
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
    key: Option<Py<PyBytes>>,
    value: Py<PyBytes>,
    headers: Vec<(String, Py<PyBytes>)>,
}

/// Reads up to `max` records of one partition from `from_offset`.
#[pyfunction]
#[pyo3(signature = (bootstrap, topic, partition, from_offset, max, timeout_s=5.0, properties=None))]
#[allow(clippy::too_many_arguments)]
fn kafka_read_partition(
    py: Python<'_>,
    bootstrap: &str,
    topic: &str,
    partition: i32,
    from_offset: i64,
    max: usize,
    timeout_s: f64,
    properties: Option<Vec<(String, String)>>,
) -> PyResult<Vec<KafkaRecord>> {
    let cfg = config(bootstrap, properties);
    let records = py
        .detach(|| {
            core_kafka::read_partition(
                &cfg,
                topic,
                partition,
                from_offset,
                max,
                Duration::from_secs_f64(timeout_s),
            )
        })
        .py()?;
    let bytes = |b: &[u8]| PyBytes::new(py, b).unbind();
    Ok(records
        .into_iter()
        .map(|r| KafkaRecord {
            partition: r.partition,
            offset: r.offset,
            timestamp_ms: r.timestamp_ms,
            key: r.key.as_deref().map(bytes),
            value: bytes(&r.value),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), bytes(v)))
                .collect(),
        })
        .collect())
}

/// A Kafka producer of envelopes (librdkafka inside; batching and
/// compression happen in Rust).
#[pyclass(frozen, module = "conveyor._core")]
pub struct KafkaProducer {
    inner: JobProducer,
}

#[pymethods]
impl KafkaProducer {
    #[new]
    #[pyo3(signature = (bootstrap, *, delivery_timeout_s=30.0, properties=None))]
    fn new(
        bootstrap: &str,
        delivery_timeout_s: f64,
        properties: Option<Vec<(String, String)>>,
    ) -> PyResult<Self> {
        let cfg = config(bootstrap, properties);
        let inner = JobProducer::new(&cfg, Duration::from_secs_f64(delivery_timeout_s)).py()?;
        Ok(Self { inner })
    }

    /// Sends envelopes and waits for every acknowledgement; returns
    /// `(partition, offset)` per envelope. If any failed, raises `KafkaError`
    /// naming how many, after all others were acknowledged or failed.
    #[pyo3(signature = (topic, envelopes, partition=None))]
    fn send_batch(
        &self,
        py: Python<'_>,
        topic: &str,
        envelopes: Vec<PyRef<'_, Envelope>>,
        partition: Option<i32>,
    ) -> PyResult<Vec<(i32, i64)>> {
        let owned: Vec<_> = envelopes.iter().map(|e| e.inner.clone()).collect();
        py.detach(|| {
            let results = self.inner.send_batch(topic, &owned, partition)?;
            let total = results.len();
            let mut delivered = Vec::with_capacity(total);
            let mut failures = Vec::new();
            for r in results {
                match r {
                    Ok(d) => delivered.push((d.partition, d.offset)),
                    Err(e) => failures.push(e),
                }
            }
            match failures.into_iter().next() {
                None => Ok(delivered),
                Some(first) => Err(conveyor_core::Error::Kafka {
                    op: "produce",
                    source: match first {
                        conveyor_core::Error::Kafka { source, .. } => source,
                        other => return Err(other),
                    },
                }),
            }
        })
        .py()
    }

    /// Waits until everything queued is delivered or failed.
    #[pyo3(signature = (timeout_s=30.0))]
    fn flush(&self, py: Python<'_>, timeout_s: f64) -> PyResult<()> {
        py.detach(|| self.inner.flush(Duration::from_secs_f64(timeout_s)))
            .py()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<KafkaProducer>()?;
    m.add_class::<KafkaRecord>()?;
    m.add_function(wrap_pyfunction!(kafka_cluster_info, m)?)?;
    m.add_function(wrap_pyfunction!(kafka_create_topic, m)?)?;
    m.add_function(wrap_pyfunction!(kafka_read_partition, m)?)?;
    Ok(())
}
