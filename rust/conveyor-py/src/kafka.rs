//! Kafka functions and the producer, GIL released around every network call.

use conveyor_core::config::duration;
use conveyor_core::kafka::producer::{JobProducer, Pending, ProducerOptions};
use conveyor_core::kafka::{self as core_kafka, KafkaConfig};
use conveyor_core::{Envelope, Error, JobId};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict};

use crate::envelope::Envelope as PyEnvelope;
use crate::errors::IntoPyResult;
use crate::payload;

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
    let timeout = duration("timeout_s", timeout_s).py()?;
    let info = py.detach(|| core_kafka::cluster_info(&cfg, timeout)).py()?;
    Ok((info.cluster_id, info.brokers, info.topics))
}

/// Creates a topic (`replication=None`: three copies, or every broker of a
/// smaller cluster); `False` if it already existed.
#[pyfunction]
#[pyo3(signature = (bootstrap, name, partitions, replication=None, timeout_s=10.0, properties=None, configs=None))]
#[allow(clippy::too_many_arguments)]
fn kafka_create_topic(
    py: Python<'_>,
    bootstrap: &str,
    name: &str,
    partitions: i32,
    replication: Option<i32>,
    timeout_s: f64,
    properties: Option<Vec<(String, String)>>,
    configs: Option<Vec<(String, String)>>,
) -> PyResult<bool> {
    let cfg = config(bootstrap, properties);
    let timeout = duration("timeout_s", timeout_s).py()?;
    let configs = configs.unwrap_or_default();
    py.detach(|| {
        core_kafka::create_topic_with(&cfg, name, partitions, replication, &configs, timeout)
    })
    .py()
}

/// Deletes topics; returns how many were deleted (gone already: not counted).
#[pyfunction]
#[pyo3(signature = (bootstrap, names, timeout_s=30.0, properties=None))]
fn kafka_delete_topics(
    py: Python<'_>,
    bootstrap: &str,
    names: Vec<String>,
    timeout_s: f64,
    properties: Option<Vec<(String, String)>>,
) -> PyResult<usize> {
    let cfg = config(bootstrap, properties);
    let timeout = duration("timeout_s", timeout_s).py()?;
    py.detach(|| {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        core_kafka::delete_topics(&cfg, &names, timeout)
    })
    .py()
}

/// `(partition, offset)` of each partition of `topic`: its first record
/// appended at or after `at_ms`, or its end.
#[pyfunction]
#[pyo3(signature = (bootstrap, topic, at_ms, timeout_s=10.0, properties=None))]
fn kafka_offsets_for_time(
    py: Python<'_>,
    bootstrap: &str,
    topic: &str,
    at_ms: i64,
    timeout_s: f64,
    properties: Option<Vec<(String, String)>>,
) -> PyResult<Vec<(i32, i64)>> {
    let cfg = config(bootstrap, properties);
    let timeout = duration("timeout_s", timeout_s).py()?;
    py.detach(|| core_kafka::offsets_for_time(&cfg, topic, at_ms, timeout))
        .py()
}

/// `(partition, end offset)` of each partition of `topic`.
#[pyfunction]
#[pyo3(signature = (bootstrap, topic, timeout_s=5.0, properties=None))]
fn kafka_end_offsets(
    py: Python<'_>,
    bootstrap: &str,
    topic: &str,
    timeout_s: f64,
    properties: Option<Vec<(String, String)>>,
) -> PyResult<Vec<(i32, i64)>> {
    let cfg = config(bootstrap, properties);
    let timeout = duration("timeout_s", timeout_s).py()?;
    py.detach(|| core_kafka::end_offsets(&cfg, topic, timeout))
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
    let timeout = duration("timeout_s", timeout_s).py()?;
    let records = py
        .detach(|| core_kafka::read_partition(&cfg, topic, partition, from_offset, max, timeout))
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

/// A Kafka producer of envelopes: librdkafka inside, batching and compression
/// on its own threads, the GIL released for every call.
#[pyclass(frozen, module = "conveyor._core")]
pub struct KafkaProducer {
    inner: JobProducer,
}

#[pymethods]
impl KafkaProducer {
    #[new]
    #[pyo3(signature = (bootstrap, *, acks="all", delivery_timeout_s=30.0, enqueue_timeout_s=5.0, properties=None))]
    fn new(
        py: Python<'_>,
        bootstrap: &str,
        acks: &str,
        delivery_timeout_s: f64,
        enqueue_timeout_s: f64,
        properties: Option<Vec<(String, String)>>,
    ) -> PyResult<Self> {
        let options = ProducerOptions {
            acks: acks.parse().py()?,
            delivery_timeout: duration("delivery_timeout_s", delivery_timeout_s).py()?,
            enqueue_timeout: duration("enqueue_timeout_s", enqueue_timeout_s).py()?,
            ..ProducerOptions::default()
        };
        let cfg = config(bootstrap, properties);
        let inner = py.detach(|| JobProducer::new(&cfg, options)).py()?;
        Ok(Self { inner })
    }

    /// Makes envelopes for `payloads` (one job each, fresh ids, enqueued now)
    /// and hands them to Kafka; returns at once with a handle.
    #[pyo3(signature = (topic, job_type, payloads, *, dedup_keys=None, run_at_us=None, trace_context=None, partition=None))]
    #[allow(clippy::too_many_arguments)]
    fn send(
        &self,
        py: Python<'_>,
        topic: &str,
        job_type: String,
        payloads: Vec<PyBackedBytes>,
        dedup_keys: Option<Vec<Option<String>>>,
        run_at_us: Option<u64>,
        trace_context: Option<String>,
        partition: Option<i32>,
    ) -> PyResult<DeliveryHandle> {
        let payloads = payloads.iter().map(|p| p.to_vec()).collect();
        let jobs = NewJobs {
            job_type,
            payloads,
            dedup_keys,
            run_at_us,
            trace_context,
        };
        self.send_jobs(py, topic, jobs, partition)
    }

    /// One job from handler arguments: encodes `{"args", "kwargs"}` as JSON
    /// here (one encoder for every path), then sends like `send`. `job_id`:
    /// the id to give it, for a caller that had to name the job before
    /// sending it (an enqueue deferred to a transaction's commit).
    #[pyo3(signature = (topic, job_type, args, kwargs=None, *, max_payload_bytes, dedup_key=None, run_at_us=None, trace_context=None, partition=None, job_id=None))]
    #[allow(clippy::too_many_arguments)]
    fn send_call(
        &self,
        py: Python<'_>,
        topic: &str,
        job_type: String,
        args: &Bound<'_, PyAny>,
        kwargs: Option<&Bound<'_, PyAny>>,
        max_payload_bytes: usize,
        dedup_key: Option<String>,
        run_at_us: Option<u64>,
        trace_context: Option<String>,
        partition: Option<i32>,
        job_id: Option<&str>,
    ) -> PyResult<DeliveryHandle> {
        let mut payload = Vec::with_capacity(128);
        payload::encode_call(args, kwargs, max_payload_bytes, &mut payload).py()?;
        let id = job_id.map(JobId::parse).transpose().py()?;
        py.detach(|| {
            let mut envelope =
                Envelope::new_job(job_type, payload, dedup_key, run_at_us, trace_context);
            if let Some(id) = id {
                envelope.id = id;
            }
            envelope.validate()?;
            self.inner
                .send(topic, std::slice::from_ref(&envelope), partition)
        })
        .py()
        .map(|inner| DeliveryHandle { inner })
    }

    /// Many jobs of one type, one call: each item of `calls` is a list or
    /// tuple of positional arguments, or a dict of keyword arguments.
    #[pyo3(signature = (topic, job_type, calls, *, max_payload_bytes, dedup_keys=None, run_at_us=None, trace_context=None, partition=None))]
    #[allow(clippy::too_many_arguments)]
    fn send_calls(
        &self,
        py: Python<'_>,
        topic: &str,
        job_type: String,
        calls: &Bound<'_, PyAny>,
        max_payload_bytes: usize,
        dedup_keys: Option<Vec<Option<String>>>,
        run_at_us: Option<u64>,
        trace_context: Option<String>,
        partition: Option<i32>,
    ) -> PyResult<DeliveryHandle> {
        let mut payloads = Vec::new();
        for call in calls.try_iter()? {
            let call = call?;
            let mut payload = Vec::with_capacity(128);
            if call.is_instance_of::<PyDict>() {
                let empty = pyo3::types::PyTuple::empty(py);
                payload::encode_call(empty.as_any(), Some(&call), max_payload_bytes, &mut payload)
            } else {
                payload::encode_call(&call, None, max_payload_bytes, &mut payload)
            }
            .map_err(|e| match e {
                conveyor_core::Error::InvalidJob(reason) => conveyor_core::Error::InvalidJob(
                    format!("job {} of the batch: {reason}", payloads.len()),
                ),
                other => other,
            })
            .py()?;
            payloads.push(payload);
        }
        let jobs = NewJobs {
            job_type,
            payloads,
            dedup_keys,
            run_at_us,
            trace_context,
        };
        self.send_jobs(py, topic, jobs, partition)
    }

    /// Hands ready-made envelopes to Kafka; returns at once with a handle.
    /// `double_written`: the jobs went straight into Redis too, and their
    /// records are marked so that a relay in shadow mode drops them.
    #[pyo3(signature = (topic, envelopes, partition=None, *, double_written=false))]
    fn send_envelopes(
        &self,
        py: Python<'_>,
        topic: &str,
        envelopes: Vec<PyRef<'_, PyEnvelope>>,
        partition: Option<i32>,
        double_written: bool,
    ) -> PyResult<DeliveryHandle> {
        let owned: Vec<Envelope> = envelopes.iter().map(|e| e.inner.clone()).collect();
        if double_written && partition.is_some() {
            return Err(Error::InvalidJob(
                "double-written jobs are not pinned to a partition".into(),
            ))
            .py();
        }
        py.detach(|| {
            if double_written {
                self.inner.send_double_written(topic, &owned)
            } else {
                self.inner.send(topic, &owned, partition)
            }
        })
        .py()
        .map(|inner| DeliveryHandle { inner })
    }

    /// Raises `UnknownTopicError` unless `topic` exists (checked once per topic).
    fn check_topic(&self, py: Python<'_>, topic: &str) -> PyResult<()> {
        py.detach(|| self.inner.check_topic(topic)).py()
    }

    /// Failures of sends nobody waited for, as `(job id, reason)`, as they
    /// happen: waits (GIL released) up to `timeout_s` for the first.
    #[pyo3(signature = (timeout_s=1.0))]
    fn take_failures(&self, py: Python<'_>, timeout_s: f64) -> PyResult<Vec<(String, String)>> {
        let timeout = duration("timeout_s", timeout_s).py()?;
        let failures = py.detach(|| self.inner.take_failures(timeout));
        Ok(failures
            .into_iter()
            .map(|f| (f.id.to_string(), f.reason))
            .collect())
    }

    /// Jobs Kafka acknowledged since the last call, as `(topic, minute,
    /// jobs)`, for the queues' tallies (double-written jobs left out).
    fn take_sent(&self) -> Vec<(String, u64, u64)> {
        self.inner.take_sent()
    }

    /// How many jobs failed delivery with nobody waiting, since the start.
    #[getter]
    fn unobserved_failures(&self) -> u64 {
        self.inner.unobserved_failures()
    }

    /// Delivers everything pending; raises `DeliveryError` for failures that
    /// no handle reported.
    #[pyo3(signature = (timeout_s=30.0))]
    fn flush(&self, py: Python<'_>, timeout_s: f64) -> PyResult<()> {
        let timeout = duration("timeout_s", timeout_s).py()?;
        py.detach(|| self.inner.flush(timeout)).py()
    }
}

/// Jobs of one type whose payloads are ready, not yet envelopes.
struct NewJobs {
    job_type: String,
    payloads: Vec<Vec<u8>>,
    dedup_keys: Option<Vec<Option<String>>>,
    run_at_us: Option<u64>,
    trace_context: Option<String>,
}

impl KafkaProducer {
    /// Makes the envelopes and sends them, without the GIL: the one path
    /// behind `send` and `send_calls`.
    fn send_jobs(
        &self,
        py: Python<'_>,
        topic: &str,
        jobs: NewJobs,
        partition: Option<i32>,
    ) -> PyResult<DeliveryHandle> {
        py.detach(|| {
            let envelopes = Envelope::new_jobs(
                &jobs.job_type,
                jobs.payloads,
                jobs.dedup_keys,
                jobs.run_at_us,
                jobs.trace_context.as_deref(),
            )?;
            self.inner.send(topic, &envelopes, partition)
        })
        .py()
        .map(|inner| DeliveryHandle { inner })
    }
}

/// Jobs handed to Kafka (`conveyor.Enqueued`). The ids are known at once;
/// `wait()` blocks until the broker acknowledged every job, or raises
/// `DeliveryError` naming those it did not take. A failure nobody waits for is
/// raised by the next `flush()` instead.
#[pyclass(frozen, module = "conveyor._core")]
pub struct DeliveryHandle {
    inner: Pending,
}

#[pymethods]
impl DeliveryHandle {
    /// The jobs' ids, in send order.
    #[getter]
    fn ids(&self) -> Vec<String> {
        self.inner.ids().iter().map(ToString::to_string).collect()
    }

    /// The id of the first (for a single enqueue, the only) job.
    #[getter]
    fn id(&self) -> String {
        self.inner
            .ids()
            .first()
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    fn __repr__(&self) -> String {
        let state = if self.inner.is_done() {
            "acknowledged or failed"
        } else {
            "in flight"
        };
        format!("<Enqueued {} job(s), {state}>", self.inner.ids().len())
    }

    /// Whether every job was acknowledged or failed.
    fn done(&self) -> bool {
        self.inner.is_done()
    }

    /// Waits for the acknowledgements; returns `(partition, offset)` per job,
    /// or raises `DeliveryError` naming the jobs that were not written.
    #[pyo3(signature = (timeout_s=None))]
    fn wait(&self, py: Python<'_>, timeout_s: Option<f64>) -> PyResult<Vec<(i32, i64)>> {
        let timeout = timeout_s
            .map(|s| duration("timeout_s", s))
            .transpose()
            .py()?;
        let delivered = py.detach(|| self.inner.wait(timeout)).py()?;
        Ok(delivered.iter().map(|d| (d.partition, d.offset)).collect())
    }

    fn __len__(&self) -> usize {
        self.inner.ids().len()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<KafkaProducer>()?;
    m.add_class::<DeliveryHandle>()?;
    m.add_class::<KafkaRecord>()?;
    m.add_function(wrap_pyfunction!(kafka_cluster_info, m)?)?;
    m.add_function(wrap_pyfunction!(kafka_create_topic, m)?)?;
    m.add_function(wrap_pyfunction!(kafka_delete_topics, m)?)?;
    m.add_function(wrap_pyfunction!(kafka_read_partition, m)?)?;
    m.add_function(wrap_pyfunction!(kafka_end_offsets, m)?)?;
    m.add_function(wrap_pyfunction!(kafka_offsets_for_time, m)?)?;
    Ok(())
}
