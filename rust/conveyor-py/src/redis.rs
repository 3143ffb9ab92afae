//! `RedisStore`: a Redis connection running Conveyor's scripts.

use conveyor_core::config::duration;
use conveyor_core::store::admission::{Admission, Fenced};
use conveyor_core::store::history::History;
use conveyor_core::store::keys::{fence_field, QueueKeys};
use conveyor_core::store::{Actor, RedisStore as CoreStore};
use conveyor_core::JobId;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;
use std::collections::HashMap;
use std::sync::Mutex;

use crate::errors::IntoPyResult;

/// One minute's tally as Python sees it: `(minute, [(hop, jobs)])`.
type MinuteCounts = (u64, Vec<(String, u64)>);

/// One connection to one Redis server. Calls from several threads take turns.
#[pyclass(frozen, module = "conveyor._core")]
pub struct RedisStore {
    inner: Mutex<CoreStore>,
}

impl RedisStore {
    /// Runs `f` on the connection with the GIL released.
    pub(crate) fn with<T: Send>(
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
        let timeout = duration("timeout_s", timeout_s).py()?;
        let store = py.detach(|| CoreStore::connect(url, timeout)).py()?;
        Ok(Self {
            inner: Mutex::new(store),
        })
    }

    /// The server's `INFO <section>` fields (default `server`) as pairs.
    #[pyo3(signature = (section="server"))]
    fn server_info(&self, py: Python<'_>, section: &str) -> PyResult<Vec<(String, String)>> {
        self.with(py, |s| s.server_info(section))
    }

    /// The direct path: admits encoded envelopes into a queue with the
    /// relay's script (delayed and unique jobs included); returns
    /// `(queued, scheduled, duplicates)`. Malformed envelopes are refused
    /// before anything is written. `tally`: count them in the queue's tallies.
    #[pyo3(signature = (namespace, queue, envelopes, *, tally=true))]
    fn admit(
        &self,
        py: Python<'_>,
        namespace: &str,
        queue: &str,
        envelopes: Vec<PyBackedBytes>,
        tally: bool,
    ) -> PyResult<(u64, u64, u64)> {
        let keys = QueueKeys::new(namespace, queue).py()?;
        let jobs = envelopes
            .iter()
            .map(|b| Admission::of(0, b.to_vec()))
            .collect::<conveyor_core::Result<Vec<_>>>()
            .py()?;
        let a = self.with(py, |s| s.admit(&keys, &jobs, tally))?;
        Ok((a.queued, a.scheduled, a.duplicates))
    }

    /// Adds `(minute, jobs)` counts to hop `hop` of a queue's tallies.
    fn add_tally(
        &self,
        py: Python<'_>,
        namespace: &str,
        queue: &str,
        hop: &str,
        counts: Vec<(u64, u64)>,
    ) -> PyResult<()> {
        let keys = QueueKeys::new(namespace, queue).py()?;
        self.with(py, |s| s.add_tally(&keys, hop, &counts))
    }

    /// A queue's tallies of minutes `first..=last` that have any, as
    /// `(minute, [(hop, jobs)])`.
    fn tallies(
        &self,
        py: Python<'_>,
        namespace: &str,
        queue: &str,
        first: u64,
        last: u64,
    ) -> PyResult<Vec<MinuteCounts>> {
        let keys = QueueKeys::new(namespace, queue).py()?;
        let found = self.with(py, |s| s.tallies(&keys, first, last))?;
        Ok(found.into_iter().map(|t| (t.minute, t.counts)).collect())
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

    /// The relay's exactly-once admit for one partition's records
    /// (`(offset, envelope)` in offset order); returns
    /// `(queued, scheduled, duplicates, skipped, behind)`, `behind` being
    /// the offset Redis holds when it is below `expect` (nothing written;
    /// no `expect`: none).
    /// `scripted` always takes the script path (as on a cluster), for the
    /// conformance tests.
    #[pyo3(signature = (namespace, queue, topic, partition, next_offset, records, *, expect=None, scripted=false))]
    #[allow(clippy::too_many_arguments)]
    fn relay_batch(
        &self,
        py: Python<'_>,
        namespace: &str,
        queue: &str,
        topic: &str,
        partition: i32,
        next_offset: i64,
        records: Vec<(i64, PyBackedBytes)>,
        expect: Option<i64>,
        scripted: bool,
    ) -> PyResult<(u64, u64, u64, u64, Option<i64>)> {
        let keys = QueueKeys::new(namespace, queue).py()?;
        let jobs = records
            .iter()
            .map(|(o, b)| Admission::of(*o, b.to_vec()))
            .collect::<conveyor_core::Result<Vec<_>>>()
            .py()?;
        let batch = Fenced {
            fence: fence_field(topic, partition),
            partition,
            expect: expect.unwrap_or(-1),
            next_offset,
            jobs: &jobs,
            tally: true,
        };
        let a = self.with(py, |s| {
            if scripted {
                Ok(s.relay_batches_scripted(&keys, std::slice::from_ref(&batch))?[0])
            } else {
                s.relay_batch(&keys, &batch)
            }
        })?;
        Ok((a.queued, a.scheduled, a.duplicates, a.skipped, a.behind))
    }

    /// Redis' clock, in ms since the epoch (the clock periodic jobs follow).
    fn now_ms(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |s| s.now_ms())
    }

    /// Jobs per state: `{"queued", "scheduled", "leases", "dead"}`.
    fn depth(
        &self,
        py: Python<'_>,
        namespace: &str,
        queue: &str,
    ) -> PyResult<HashMap<&'static str, u64>> {
        let keys = QueueKeys::new(namespace, queue).py()?;
        let d = self.with(py, |s| s.depth(&keys))?;
        Ok(HashMap::from([
            ("queued", d.queued),
            ("scheduled", d.scheduled),
            ("leases", d.leases),
            ("dead", d.dead),
        ]))
    }

    /// The queue's counters since it was created (`done`, `retried`, `dead`,
    /// `reaped`, `duplicates`); missing ones are 0.
    fn counts(
        &self,
        py: Python<'_>,
        namespace: &str,
        queue: &str,
    ) -> PyResult<HashMap<String, u64>> {
        let keys = QueueKeys::new(namespace, queue).py()?;
        Ok(self.with(py, |s| s.counts(&keys))?.into_iter().collect())
    }

    /// Enqueues occurrence `occurrence_ms` of periodic schedule `name` once,
    /// however many workers call this; True if this call enqueued it.
    fn enqueue_occurrence(
        &self,
        py: Python<'_>,
        namespace: &str,
        queue: &str,
        name: &str,
        occurrence_ms: u64,
        envelope: PyBackedBytes,
    ) -> PyResult<bool> {
        let keys = QueueKeys::new(namespace, queue).py()?;
        self.with(py, |s| {
            s.enqueue_occurrence(&keys, name, occurrence_ms, &envelope)
        })
    }

    /// Returns the jobs of expired leases to ready; returns how many jobs.
    fn reap(&self, py: Python<'_>, namespace: &str, queue: &str) -> PyResult<u64> {
        let keys = QueueKeys::new(namespace, queue).py()?;
        Ok(self.with(py, |s| s.reap(&keys, 1000))?.1)
    }

    /// Sets (or with `None` clears) a relay control for `topic`: `kind` is
    /// "rate" (jobs per second, as text), "paused" or "shadow". Relays apply
    /// it within a second. Recorded in the history with `who` and `origin`;
    /// returns the value before.
    #[pyo3(signature = (namespace, kind, topic, value=None, *, who="", origin=""))]
    #[allow(clippy::too_many_arguments)]
    fn set_relay_control(
        &self,
        py: Python<'_>,
        namespace: &str,
        kind: &str,
        topic: &str,
        value: Option<&str>,
        who: &str,
        origin: &str,
    ) -> PyResult<Option<String>> {
        let actor = actor(who, origin);
        self.with(py, |s| {
            s.set_relay_control(namespace, kind, topic, value, &actor)
        })
    }

    /// Sets a job type's route at run time (`kafka_percent`, `double_write`),
    /// or with `None` clears it. Producers apply it within a second.
    /// Recorded in the history with `who` and `origin`; returns the route
    /// before (JSON).
    #[pyo3(signature = (namespace, job_type, route=None, *, who="", origin=""))]
    fn set_route(
        &self,
        py: Python<'_>,
        namespace: &str,
        job_type: &str,
        route: Option<(f64, bool)>,
        who: &str,
        origin: &str,
    ) -> PyResult<Option<String>> {
        let actor = actor(who, origin);
        self.with(py, |s| s.set_route(namespace, job_type, route, &actor))
    }

    /// The recorded changes of the routes (`routes=True`) or of the relay
    /// controls, newest first, as JSON texts.
    fn control_history(
        &self,
        py: Python<'_>,
        namespace: &str,
        routes: bool,
    ) -> PyResult<Vec<String>> {
        self.with(py, |s| s.control_history(namespace, routes))
    }

    /// Finds job `job_id` in `queue`: its description as JSON text
    /// (`Found::describe`), or `None`; see `store/history.rs`.
    /// `history_s`/`history_max_bytes` are the workers' settings (which
    /// windows to read); `max_scan` bounds the scan of the scheduled set and
    /// of the ready list.
    #[pyo3(signature = (namespace, queue, job_id, *, history_s=300.0, history_max_bytes=33_554_432, max_scan=100_000))]
    #[allow(clippy::too_many_arguments)]
    fn lookup(
        &self,
        py: Python<'_>,
        namespace: &str,
        queue: &str,
        job_id: &str,
        history_s: f64,
        history_max_bytes: u64,
        max_scan: usize,
    ) -> PyResult<Option<String>> {
        let keys = QueueKeys::new(namespace, queue).py()?;
        let id = JobId::parse(job_id).py()?;
        let history = History {
            retention: duration("history_s", history_s).py()?,
            max_bytes: history_max_bytes,
        };
        self.with(py, |s| {
            s.lookup(&keys, &id.0, &history, max_scan)?
                .map(|found| Ok(found.describe(queue)?.to_string()))
                .transpose()
        })
    }

    /// Records the canary that just ran from `partition` of `queue`.
    fn record_canary(
        &self,
        py: Python<'_>,
        namespace: &str,
        queue: &str,
        partition: u32,
        record: &str,
    ) -> PyResult<()> {
        let keys = QueueKeys::new(namespace, queue).py()?;
        self.with(py, |s| s.record_canary(&keys, partition, record))
    }

    /// The last canary of each partition of `queue` as `(partition, JSON)`.
    fn canaries(
        &self,
        py: Python<'_>,
        namespace: &str,
        queue: &str,
    ) -> PyResult<Vec<(u32, String)>> {
        let keys = QueueKeys::new(namespace, queue).py()?;
        self.with(py, |s| s.canaries(&keys))
    }

    /// Asks for job `job_id` of `queue` to be cancelled (`cancel-1.lua`);
    /// `False` if it was asked before.
    fn cancel(&self, py: Python<'_>, namespace: &str, queue: &str, job_id: &str) -> PyResult<bool> {
        let keys = QueueKeys::new(namespace, queue).py()?;
        let id = JobId::parse(job_id).py()?;
        self.with(py, |s| s.cancel(&keys, &id.0))
    }

    /// The result kept for `job_id` in `queue` (`store_result` job types), or
    /// `None`: not ended yet, kept no longer, or never kept.
    fn result<'py>(
        &self,
        py: Python<'py>,
        namespace: &str,
        queue: &str,
        job_id: &str,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let keys = QueueKeys::new(namespace, queue).py()?;
        let id = JobId::parse(job_id).py()?;
        let value = self.with(py, |s| s.result(&keys, &id.0))?;
        Ok(value.map(|v| PyBytes::new(py, &v)))
    }

    /// Every route set at run time as `(job type, JSON)`.
    fn routes(&self, py: Python<'_>, namespace: &str) -> PyResult<Vec<(String, String)>> {
        self.with(py, |s| s.routes(namespace))
    }

    /// Every running relay's published status as `(relay id, JSON)`.
    fn relay_statuses(&self, py: Python<'_>, namespace: &str) -> PyResult<Vec<(String, String)>> {
        self.with(py, |s| s.relay_statuses(namespace))
    }

    /// Every relay control of a namespace as `(field, value)`.
    fn relay_controls(&self, py: Python<'_>, namespace: &str) -> PyResult<Vec<(String, String)>> {
        self.with(py, |s| s.relay_controls(namespace))
    }

    /// How many jobs a queue's ready list holds (state `queued`).
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

fn actor(who: &str, origin: &str) -> Actor {
    Actor {
        who: who.to_owned(),
        origin: origin.to_owned(),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RedisStore>()
}
