//! `WorkQueues` and `LeasedBatch`: what a Python worker calls per batch.
//! Fetching, decoding and settling run with the GIL released; Python gets
//! one list of ready jobs per batch and hands back one list of outcomes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use conveyor_core::call_reader::{read_call, READ_AT_FETCH_MAX_LEN};
use conveyor_core::config::{duration, positive_duration};
use conveyor_core::id::new_process_id;
use conveyor_core::store::history::History;
use conveyor_core::store::keys::QueueKeys;
use conveyor_core::store::queue::DeadRetention;
use conveyor_core::worker::keeper::Keeper;
use conveyor_core::worker::outcomes::{outcomes, Failure, Outcome};
use conveyor_core::worker::{self, Batch, MaxAges, ReadyJob, WeightedQueue};
use conveyor_core::Error;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::errors::IntoPyResult;
use crate::payload;

/// A worker process's connection to its queues, shared by its threads.
#[pyclass(frozen, module = "conveyor._core")]
pub struct WorkQueues {
    inner: Arc<worker::WorkQueues>,
    keeper: Mutex<Option<Keeper>>,
}

/// Jobs leased by one fetch. `jobs[i]` is `(job_type, call, attempt)`: `call`
/// is the payload's `(args, kwargs)` as the fast reader read it at fetch, or
/// `None` where it did not (a payload it declines, or one larger than
/// `READ_AT_FETCH_MAX_LEN`): `payload(i)` then gives the bytes to decode.
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

    /// Job `index`'s id.
    fn job_id(&self, index: usize) -> PyResult<String> {
        Ok(self.job(index)?.envelope.id.to_string())
    }

    /// Job `index`'s payload (JSON bytes).
    fn payload<'py>(&self, py: Python<'py>, index: usize) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &self.job(index)?.envelope.payload))
    }

    /// Marks job `index` as starting now (see `Batch::begin`).
    fn begin(&self, index: usize) {
        self.batch.begin(index);
    }

    /// The index of the job begun last (see `Batch::begun`), or `None`.
    #[getter]
    fn begun(&self) -> Option<usize> {
        self.batch.begun()
    }

    /// Whether job `index`'s cancel was asked while it was leased (as of the
    /// keeper's last beat).
    fn cancel_asked(&self, index: usize) -> bool {
        self.batch.cancel_asked(index)
    }

    /// The decoded envelope of job `index` (its timestamps and stage stamps),
    /// built only when asked for.
    fn envelope(&self, index: usize) -> PyResult<crate::envelope::Envelope> {
        Ok(crate::envelope::Envelope {
            inner: self.job(index)?.envelope.clone(),
        })
    }
}

impl LeasedBatch {
    fn job(&self, index: usize) -> PyResult<&ReadyJob> {
        self.batch
            .jobs
            .get(index)
            .ok_or_else(|| {
                Error::InvalidJob(format!(
                    "no job {index} in a batch of {}",
                    self.batch.jobs.len()
                ))
            })
            .py()
    }
}

#[pymethods]
impl WorkQueues {
    #[new]
    #[pyo3(signature = (
        redis_url, namespace, queues, *, strict=false, worker_id=None, lease_s=30.0,
        max_age_s=HashMap::new(), max_age_default_s=3600.0,
        dead_max=100_000, dead_max_age_s=2_592_000.0, history_s=300.0, history_max_bytes=33_554_432,
        result_ttl_s=HashMap::new(), tallies=true,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        redis_url: &str,
        namespace: &str,
        queues: Vec<(String, u32)>,
        strict: bool,
        worker_id: Option<String>,
        lease_s: f64,
        max_age_s: HashMap<String, f64>,
        max_age_default_s: f64,
        dead_max: u64,
        dead_max_age_s: f64,
        history_s: f64,
        history_max_bytes: u64,
        result_ttl_s: HashMap<String, f64>,
        tallies: bool,
    ) -> PyResult<Self> {
        let history = History {
            retention: duration("history_s", history_s).py()?,
            max_bytes: history_max_bytes,
        };
        let lease = positive_duration("lease_s", lease_s).py()?;
        let max_ages = MaxAges {
            by_type: max_age_s
                .into_iter()
                .map(|(job_type, s)| Ok((job_type, positive_duration("max_age_s", s)?)))
                .collect::<conveyor_core::Result<_>>()
                .py()?,
            default: positive_duration("max_age_default_s", max_age_default_s).py()?,
        };
        let result_ttls = result_ttl_s
            .into_iter()
            .map(|(job_type, s)| Ok((job_type, positive_duration("result_ttl_s", s)?)))
            .collect::<conveyor_core::Result<_>>()
            .py()?;
        let retention = DeadRetention {
            max_jobs: dead_max,
            max_age: positive_duration("dead_max_age_s", dead_max_age_s).py()?,
        };
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
        let id = worker_id.unwrap_or_else(new_process_id);
        let inner = py
            .detach(|| worker::WorkQueues::new(redis_url, queues, strict, &id, lease))
            .py()?
            .with_max_ages(max_ages)
            .with_dead_retention(retention)
            .with_history(history)
            .with_result_ttls(result_ttls)
            .with_tallies(tallies);
        Ok(Self {
            inner: Arc::new(inner),
            keeper: Mutex::new(None),
        })
    }

    /// Leases up to `max_jobs` (1 to 1000) from the queues; `None` when all are empty.
    fn fetch(&self, py: Python<'_>, max_jobs: usize) -> PyResult<Option<LeasedBatch>> {
        let Some(batch) = py.detach(|| self.inner.fetch(max_jobs)).py()? else {
            return Ok(None);
        };
        self.leased_batch(py, batch).map(Some)
    }

    /// Settles a batch. `ends[i]` is when job `i` ended (seconds since the
    /// epoch); jobs past the end of `ends` never started and go back to the
    /// queue. `failures[i] = (error_json, retry_in_s)` marks job `i` failed,
    /// retried after `retry_in_s` or dead-lettered when it is `None`. Job `i`
    /// started at `starts[i]` if given, else when job `i - 1` ended (the fetch
    /// for job 0). `results[i] = (value, ttl_s)` is kept for job `i`'s
    /// waiters when it is done, dead or cancelled; the jobs in `cancelled`
    /// stopped because their cancel was asked. Returns `(done, retried, dead,
    /// stale)`.
    #[pyo3(signature = (batch, ends, failures, starts=None, results=None, cancelled=None))]
    #[allow(clippy::too_many_arguments)]
    fn settle(
        &self,
        py: Python<'_>,
        batch: &LeasedBatch,
        ends: Vec<f64>,
        failures: HashMap<usize, Failure>,
        starts: Option<Vec<f64>>,
        results: Option<HashMap<usize, (Vec<u8>, f64)>>,
        cancelled: Option<Vec<usize>>,
    ) -> PyResult<Counts> {
        let batch = &batch.batch;
        let ran = Ran {
            ends,
            failures,
            starts,
            results,
            cancelled,
        };
        let outcomes = ran.outcomes(batch)?;
        let s = py.detach(|| self.inner.settle(batch, &outcomes)).py()?;
        Ok((s.done, s.retried, s.dead, s.stale))
    }

    /// Settles a batch as `settle` does and leases up to `max_jobs` for the
    /// next, in one round trip to Redis when the next comes from the same
    /// queue. Returns the settle's counts and the next batch, or `None` when
    /// the queues are empty (or the fetch failed: the next `fetch` says why).
    #[pyo3(signature = (batch, ends, failures, max_jobs, starts=None, results=None, cancelled=None))]
    #[allow(clippy::too_many_arguments)]
    fn settle_and_fetch(
        &self,
        py: Python<'_>,
        batch: &LeasedBatch,
        ends: Vec<f64>,
        failures: HashMap<usize, Failure>,
        max_jobs: usize,
        starts: Option<Vec<f64>>,
        results: Option<HashMap<usize, (Vec<u8>, f64)>>,
        cancelled: Option<Vec<usize>>,
    ) -> PyResult<(Counts, Option<LeasedBatch>)> {
        let batch = &batch.batch;
        let ran = Ran {
            ends,
            failures,
            starts,
            results,
            cancelled,
        };
        let outcomes = ran.outcomes(batch)?;
        let (s, next) = py
            .detach(|| self.inner.settle_and_fetch(batch, &outcomes, max_jobs))
            .py()?;
        let next = match next {
            Some(next) => Some(self.leased_batch(py, next)?),
            None => None,
        };
        Ok(((s.done, s.retried, s.dead, s.stale), next))
    }

    /// Stops renewing a batch's lease without settling it (the reaper gives
    /// its jobs back once it expires).
    fn abandon(&self, batch: &LeasedBatch) {
        self.inner.abandon(&batch.batch);
    }

    /// Starts the native keeper thread: heartbeats and reaping without the
    /// GIL. Does nothing if it runs already.
    fn start_keeper(&self) -> PyResult<()> {
        let mut keeper = self.keeper.lock().unwrap_or_else(|e| e.into_inner());
        if keeper.is_none() {
            let started = Keeper::start(Arc::clone(&self.inner));
            let started = started
                .map_err(|err| Error::Internal(format!("cannot start the keeper thread: {err}")));
            *keeper = Some(started.py()?);
        }
        Ok(())
    }

    /// Stops the keeper thread, waiting (GIL released) for its beat to end.
    fn stop_keeper(&self, py: Python<'_>) {
        let keeper = self.keeper.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut keeper) = keeper {
            py.detach(move || keeper.stop());
        }
    }

    /// Lease events since the last call (lost leases, leases let go past
    /// their maximum age, failed keeper beats), for the log.
    fn take_events(&self) -> Vec<String> {
        self.inner.take_events()
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
        let timeout = duration("timeout_s", timeout_s).py()?;
        py.detach(|| self.inner.wait_for_work(timeout)).py()
    }

    /// How many leases this process holds now.
    fn held(&self) -> usize {
        self.inner.held()
    }

    /// Counters of this process: fetched, done, retried, dead, stale,
    /// released, lost_leases, overdue_leases, keeper_errors.
    fn stats(&self) -> HashMap<&'static str, u64> {
        let stats = self.inner.stats();
        let mut out = HashMap::from(stats.counters());
        out.extend(stats.lease_events());
        out
    }

    /// Prometheus text for this process's worker metrics, per job type
    /// too, and the depth of its queues (read from Redis now).
    fn metrics(&self, py: Python<'_>) -> String {
        let inner = &self.inner;
        let mut out = inner.stats().render();
        out.push_str(&inner.render_by_type());
        out.push_str(&py.detach(|| inner.render_depths()));
        out
    }
}

impl WorkQueues {
    /// `batch` for Python: each job's type, call (as the fast reader reads
    /// it) and attempt, in one list.
    fn leased_batch(&self, py: Python<'_>, batch: Batch) -> PyResult<LeasedBatch> {
        let mut types: HashMap<&str, Bound<'_, PyString>> = HashMap::new();
        let jobs = PyList::empty(py);
        for job in batch.jobs.iter() {
            let env = &job.envelope;
            let job_type = types
                .entry(env.job_type.as_str())
                .or_insert_with(|| PyString::intern(py, &env.job_type))
                .clone();
            let call = if env.payload.len() <= READ_AT_FETCH_MAX_LEN {
                read_call(&env.payload, &mut payload::Objects(py))
            } else {
                None
            };
            let call = match call {
                Some(call) => call.into_pyobject(py)?.into_any(),
                None => py.None().into_bound(py),
            };
            let item = PyTuple::new(
                py,
                [
                    job_type.into_any(),
                    call,
                    env.attempt.into_pyobject(py)?.into_any(),
                ],
            )?;
            jobs.append(item)?;
        }
        let queue = self.inner.queues()[batch.queue].name.clone();
        Ok(LeasedBatch {
            batch,
            queue,
            jobs: jobs.unbind(),
        })
    }
}

/// What a settle did: `(done, retried, dead, stale)`.
type Counts = (u64, u64, u64, u64);

/// How a batch's jobs ended, as Python reports it to `settle`.
struct Ran {
    ends: Vec<f64>,
    failures: HashMap<usize, Failure>,
    starts: Option<Vec<f64>>,
    results: Option<HashMap<usize, (Vec<u8>, f64)>>,
    cancelled: Option<Vec<usize>>,
}

impl Ran {
    fn outcomes(self, batch: &Batch) -> PyResult<Vec<Outcome>> {
        outcomes(
            batch,
            &self.ends,
            &self.failures,
            self.starts.as_deref(),
            self.results.unwrap_or_default(),
            &self.cancelled.unwrap_or_default(),
        )
        .py()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<WorkQueues>()?;
    m.add_class::<LeasedBatch>()
}
