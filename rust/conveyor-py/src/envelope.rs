//! `Envelope`: the job envelope as a frozen Python object.

use conveyor_core::envelope::{self as core_env, StageStamp};
use conveyor_core::id::now_us;
use conveyor_core::JobId;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;

use crate::errors::IntoPyResult;

/// A job envelope (see docs/envelope.md). Immutable; timestamps are
/// microseconds since the Unix epoch.
#[pyclass(frozen, eq, skip_from_py_object, module = "conveyor._core")]
#[derive(Clone, PartialEq)]
pub struct Envelope {
    pub(crate) inner: core_env::Envelope,
}

#[pymethods]
impl Envelope {
    #[new]
    #[pyo3(signature = (job_type, payload, *, id=None, attempt=0, enqueued_at_us=None, run_at_us=None, dedup_key=None, trace_context=None, stages=Vec::new()))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        job_type: String,
        payload: &[u8],
        id: Option<&str>,
        attempt: u32,
        enqueued_at_us: Option<u64>,
        run_at_us: Option<u64>,
        dedup_key: Option<String>,
        trace_context: Option<String>,
        stages: Vec<(u8, u64)>,
    ) -> PyResult<Self> {
        let id = match id {
            Some(text) => JobId::parse(text).py()?,
            None => JobId::generate(),
        };
        let inner = core_env::Envelope {
            id,
            job_type,
            attempt,
            enqueued_at_us: enqueued_at_us.unwrap_or_else(now_us),
            run_at_us,
            dedup_key,
            trace_context,
            payload: payload.to_vec(),
            stages: stages
                .into_iter()
                .map(|(code, at_us)| StageStamp { code, at_us })
                .collect(),
        };
        // The codec's constructor: the format's rules; new jobs get the rest
        // where they are made (the producer, the gate).
        inner.check_format().py()?;
        Ok(Self { inner })
    }

    /// Decodes an encoded envelope; raises `EnvelopeDecodeError` (or
    /// `UnsupportedEnvelopeVersion`) on anything malformed.
    #[staticmethod]
    fn decode(data: &[u8]) -> PyResult<Self> {
        core_env::Envelope::decode(data)
            .py()
            .map(|inner| Self { inner })
    }

    /// The canonical encoding.
    fn encode<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = self.inner.encode().py()?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Unique, time-sortable id (26 characters).
    #[getter]
    fn id(&self) -> String {
        self.inner.id.to_string()
    }

    /// Stable name of the job type.
    #[getter]
    fn job_type(&self) -> &str {
        &self.inner.job_type
    }

    /// Attempts made so far.
    #[getter]
    fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// When the producer accepted the job.
    #[getter]
    fn enqueued_at_us(&self) -> u64 {
        self.inner.enqueued_at_us
    }

    /// Do not run before this time, if set.
    #[getter]
    fn run_at_us(&self) -> Option<u64> {
        self.inner.run_at_us
    }

    /// Dedup key, if set.
    #[getter]
    fn dedup_key(&self) -> Option<&str> {
        self.inner.dedup_key.as_deref()
    }

    /// W3C trace context, if set.
    #[getter]
    fn trace_context(&self) -> Option<&str> {
        self.inner.trace_context.as_deref()
    }

    /// The handler's arguments as the producer sent them.
    #[getter]
    fn payload<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.payload)
    }

    /// Stage stamps as `(code, at_us)` in recorded order.
    #[getter]
    fn stages(&self) -> Vec<(u8, u64)> {
        self.inner
            .stages
            .iter()
            .map(|s| (s.code, s.at_us))
            .collect()
    }

    fn __repr__(&self) -> String {
        format!(
            "Envelope(id={:?}, job_type={:?}, attempt={}, payload=<{} bytes>)",
            self.inner.id.to_string(),
            self.inner.job_type,
            self.inner.attempt,
            self.inner.payload.len()
        )
    }
}

/// Encodes many envelopes in one call, without the GIL.
#[pyfunction]
fn encode_many<'py>(
    py: Python<'py>,
    envelopes: Vec<PyRef<'py, Envelope>>,
) -> PyResult<Vec<Bound<'py, PyBytes>>> {
    // Frozen objects: their data cannot change while we hold the references.
    let inner: Vec<&core_env::Envelope> = envelopes.iter().map(|e| &e.inner).collect();
    let encoded = py
        .detach(|| {
            inner
                .iter()
                .map(|e| e.encode())
                .collect::<conveyor_core::Result<Vec<_>>>()
        })
        .py()?;
    Ok(encoded.iter().map(|b| PyBytes::new(py, b)).collect())
}

/// Decodes many envelopes in one call, without the GIL; the first malformed
/// one raises.
#[pyfunction]
fn decode_many(py: Python<'_>, data: Vec<PyBackedBytes>) -> PyResult<Vec<Envelope>> {
    py.detach(|| {
        data.iter()
            .map(|b| core_env::Envelope::decode(b).map(|inner| Envelope { inner }))
            .collect::<conveyor_core::Result<Vec<_>>>()
    })
    .py()
}

/// Returns `data` with a stage stamp appended, without re-encoding the rest
/// (the payload bytes stay exactly as they were). `data` must decode.
#[pyfunction]
fn append_stage<'py>(
    py: Python<'py>,
    data: &[u8],
    code: u8,
    at_us: u64,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut stamped = data.to_vec();
    core_env::Envelope::decode(&stamped).py()?;
    core_env::append_stage(&mut stamped, code, at_us);
    Ok(PyBytes::new(py, &stamped))
}

/// Raises `InvalidJobError` unless `name` is a valid job type name.
#[pyfunction]
fn check_job_type(name: &str) -> PyResult<()> {
    core_env::validate_job_type(name).py()
}

/// Raises `InvalidJobError` unless `name` is a valid queue (or namespace) name.
#[pyfunction]
fn check_queue_name(name: &str) -> PyResult<()> {
    conveyor_core::store::keys::validate_name("queue", name).py()
}

/// A fresh job id.
#[pyfunction]
fn new_job_id() -> String {
    JobId::generate().to_string()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Envelope>()?;
    m.add_function(wrap_pyfunction!(encode_many, m)?)?;
    m.add_function(wrap_pyfunction!(decode_many, m)?)?;
    m.add_function(wrap_pyfunction!(new_job_id, m)?)?;
    m.add_function(wrap_pyfunction!(append_stage, m)?)?;
    m.add_function(wrap_pyfunction!(check_job_type, m)?)?;
    m.add_function(wrap_pyfunction!(check_queue_name, m)?)?;
    Ok(())
}
