//! `WorkQueues` and `LeasedBatch`: what a Python worker calls per batch.
//! Fetching, decoding and settling run with the GIL released; Python gets
//! one list of ready jobs per batch and hands back one list of outcomes.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use conveyor_core::keys::QueueKeys;
use conveyor_core::worker::{self, Batch, Outcome, WeightedQueue};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::errors::IntoPyResult;

/// A worker process's connection to its queues, shared by its threads.
#[pyclass(frozen, module = "conveyor._core")]
pub struct WorkQueues {
    inner: worker::WorkQueues,
}

/// Jobs leased by one fetch. `jobs[i]` is `(job_type, payload, attempt, id)`.
#[pyclass(frozen, module = "conveyor._core")]
pub struct LeasedBatch {
    batch: Batch,
    #[pyo3(get)]
    queue: String,
    #[pyo3(get)]
    jobs: Py<PyList>,
}

#[pymethods]
impl LeasedBatch {
    /// The lease token.
    #[getter]
    fn token(&self) -> &str {
        &self.batch.token
    }

    /// When the fetch returned (seconds since the epoch).
    #[getter]
    fn fetched_at(&self) -> f64 {
        self.batch.fetched_at_us as f64 / 1e6
    }

    /// Leased entries that were not valid envelopes (dead-lettered at settle).
    #[getter]
    fn malformed(&self) -> usize {
        self.batch.malformed.len()
    }

    fn __len__(&self) -> usize {
        self.batch.jobs.len()
    }

    /// The decoded envelope of job `index` (its timestamps and stage stamps),
    /// built only when asked for.
    fn envelope(&self, index: usize) -> PyResult<crate::envelope::Envelope> {
        let job = self.batch.jobs.get(index).ok_or_else(|| {
            PyValueError::new_err(format!(
                "no job {index} in a batch of {}",
                self.batch.jobs.len()
            ))
        })?;
        Ok(crate::envelope::Envelope {
            inner: job.envelope.clone(),
        })
    }
}

fn to_us(seconds: f64) -> u64 {
    (seconds * 1e6).max(0.0) as u64
}

#[pymethods]
impl WorkQueues {
    #[new]
    #[pyo3(signature = (redis_url, namespace, queues, *, strict=false, worker_id=None, lease_s=30.0))]
    fn new(
        py: Python<'_>,
        redis_url: &str,
        namespace: &str,
        queues: Vec<(String, u32)>,
        strict: bool,
        worker_id: Option<String>,
        lease_s: f64,
    ) -> PyResult<Self> {
        if !(lease_s.is_finite() && lease_s > 0.0) {
            return Err(PyValueError::new_err("lease_s must be a positive number"));
        }
        let queues = queues
            .into_iter()
            .map(|(name, weight)| {
                Ok(WeightedQueue {
                    keys: QueueKeys::new(namespace, &name)?,
                    name,
                    weight,
                })
            })
            .collect::<conveyor_core::Result<Vec<_>>>()
            .py()?;
        let id = worker_id.unwrap_or_else(worker::new_worker_id);
        let lease = Duration::from_secs_f64(lease_s);
        let inner = py
            .detach(|| worker::WorkQueues::new(redis_url, queues, strict, &id, lease))
            .py()?;
        Ok(Self { inner })
    }

    /// Leases up to `max_jobs` (1 to 1000) from the queues; `None` when all are empty.
    fn fetch(&self, py: Python<'_>, max_jobs: usize) -> PyResult<Option<LeasedBatch>> {
        let Some(batch) = py.detach(|| self.inner.fetch(max_jobs)).py()? else {
            return Ok(None);
        };
        let mut types: HashMap<&str, Bound<'_, PyString>> = HashMap::new();
        let jobs = PyList::empty(py);
        for job in &batch.jobs {
            let env = &job.envelope;
            let job_type = types
                .entry(env.job_type.as_str())
                .or_insert_with(|| PyString::intern(py, &env.job_type))
                .clone();
            let item = PyTuple::new(
                py,
                [
                    job_type.into_any(),
                    PyBytes::new(py, &env.payload).into_any(),
                    env.attempt.into_pyobject(py)?.into_any(),
                    PyString::new(py, &env.id.to_string()).into_any(),
                ],
            )?;
            jobs.append(item)?;
        }
        let queue = self.inner.queues()[batch.queue].name.clone();
        Ok(Some(LeasedBatch {
            batch,
            queue,
            jobs: jobs.unbind(),
        }))
    }

    /// Settles a batch. `ends[i]` is when job `i` ended (seconds since the
    /// epoch); jobs past the end of `ends` never started and go back to the
    /// queue. `failures[i] = (error_json, retry_in_s)` marks job `i` failed,
    /// retried after `retry_in_s` or dead-lettered when it is `None`. Job `i`
    /// started at `starts[i]` if given, else when job `i - 1` ended (the fetch
    /// for job 0). Returns `(done, retried, dead, stale)`.
    #[pyo3(signature = (batch, ends, failures, starts=None))]
    fn settle(
        &self,
        py: Python<'_>,
        batch: &LeasedBatch,
        ends: Vec<f64>,
        failures: HashMap<usize, (String, Option<f64>)>,
        starts: Option<Vec<f64>>,
    ) -> PyResult<(u64, u64, u64, u64)> {
        let batch = &batch.batch;
        if ends.len() > batch.jobs.len() || starts.as_ref().is_some_and(|s| s.len() < ends.len()) {
            return Err(PyValueError::new_err(format!(
                "settle got {} ends (and {:?} starts) for {} jobs",
                ends.len(),
                starts.as_ref().map(Vec::len),
                batch.jobs.len()
            )));
        }
        let mut outcomes = Vec::with_capacity(ends.len());
        let mut previous = batch.fetched_at_us;
        for (i, &end) in ends.iter().enumerate() {
            let ended_us = to_us(end);
            let started_us = starts.as_ref().map_or(previous, |s| to_us(s[i]));
            previous = ended_us;
            outcomes.push(match failures.get(&i) {
                None => Outcome::Done {
                    started_us,
                    ended_us,
                },
                Some((error, retry_in)) => Outcome::Failed {
                    started_us,
                    ended_us,
                    error: error.clone(),
                    retry_in: retry_in.map(|s| Duration::from_secs_f64(s.max(0.0))),
                },
            });
        }
        let s = py.detach(|| self.inner.settle(batch, &outcomes)).py()?;
        Ok((s.done, s.retried, s.dead, s.stale))
    }

    /// Extends every lease this process holds; returns the tokens that were
    /// lost (expired and reaped: their jobs may run twice).
    fn heartbeat(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        py.detach(|| self.inner.heartbeat()).py()
    }

    /// Returns the jobs of expired leases on these queues to ready; returns
    /// how many jobs went back.
    fn reap(&self, py: Python<'_>) -> PyResult<u64> {
        py.detach(|| self.inner.reap()).py()
    }

    /// Blocks (GIL released) until jobs are signalled on a queue or
    /// `timeout_s` (10 ms to 2 s) passes; True if woken.
    fn wait_for_work(&self, py: Python<'_>, timeout_s: f64) -> PyResult<bool> {
        let timeout = Duration::from_secs_f64(timeout_s.clamp(0.0, 2.0));
        py.detach(|| self.inner.wait_for_work(timeout)).py()
    }

    /// How many leases this process holds now.
    fn held(&self) -> usize {
        self.inner.held()
    }

    /// Counters of this process: fetched, done, retried, dead, stale, released.
    fn stats(&self) -> HashMap<&'static str, u64> {
        let s = self.inner.stats();
        HashMap::from([
            ("fetched", s.fetched.load(Ordering::Relaxed)),
            ("done", s.done.load(Ordering::Relaxed)),
            ("retried", s.retried.load(Ordering::Relaxed)),
            ("dead", s.dead.load(Ordering::Relaxed)),
            ("stale", s.stale.load(Ordering::Relaxed)),
            ("released", s.released.load(Ordering::Relaxed)),
        ])
    }

    /// Prometheus text for this process's worker metrics.
    fn metrics(&self) -> String {
        let s = self.inner.stats();
        let mut out = String::new();
        conveyor_core::metrics::render_counter(
            &mut out,
            "conveyor_worker_jobs_total",
            "Jobs by outcome in this worker process.",
            &[
                ("outcome=\"fetched\"", s.fetched.load(Ordering::Relaxed)),
                ("outcome=\"done\"", s.done.load(Ordering::Relaxed)),
                ("outcome=\"retried\"", s.retried.load(Ordering::Relaxed)),
                ("outcome=\"dead\"", s.dead.load(Ordering::Relaxed)),
                ("outcome=\"stale\"", s.stale.load(Ordering::Relaxed)),
                ("outcome=\"released\"", s.released.load(Ordering::Relaxed)),
            ],
        );
        s.wait.render(
            &mut out,
            "conveyor_worker_wait_seconds",
            "Enqueue to the start of a job's first attempt.",
        );
        s.run.render(
            &mut out,
            "conveyor_worker_run_seconds",
            "Duration of an attempt.",
        );
        s.total.render(
            &mut out,
            "conveyor_worker_total_seconds",
            "Enqueue to the end of the attempt that succeeded.",
        );
        out
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<WorkQueues>()?;
    m.add_class::<LeasedBatch>()
}
