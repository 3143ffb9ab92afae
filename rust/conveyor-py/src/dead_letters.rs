//! `RedisStore`'s dead-letter methods: list, replay, forget and purge.

use conveyor_core::config::duration;
use conveyor_core::store::keys::QueueKeys;
use conveyor_core::store::queue::{DeadRetention, Forgotten};
use conveyor_core::JobId;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::IntoPyResult;
use crate::redis::RedisStore;

/// A dead letter for Python: `(envelope, dead_at_s, last_error_json)`.
type DeadLetterRow<'py> = (Bound<'py, PyBytes>, f64, Option<String>);

#[pymethods]
impl RedisStore {
    /// The oldest `count` dead letters as `(envelope, dead_at_s, last_error_json)`.
    fn dead_letters<'py>(
        &self,
        py: Python<'py>,
        namespace: &str,
        queue: &str,
        count: usize,
    ) -> PyResult<Vec<DeadLetterRow<'py>>> {
        let keys = QueueKeys::new(namespace, queue).py()?;
        let dead = self.with(py, |s| s.dead_letters(&keys, count))?;
        Ok(dead
            .into_iter()
            .map(|d| (PyBytes::new(py, &d.envelope), d.at_ms / 1000.0, d.error))
            .collect())
    }

    /// Moves up to `count` dead letters back to ready with fresh attempts (a
    /// unique one takes its key again, or stays dead if another job of its
    /// type holds it); returns `(moved, kept)`.
    fn replay_dead(
        &self,
        py: Python<'_>,
        namespace: &str,
        queue: &str,
        count: u64,
    ) -> PyResult<(u64, u64)> {
        let keys = QueueKeys::new(namespace, queue).py()?;
        self.with(py, |s| s.replay_dead(&keys, count))
    }

    /// Moves the dead letters among `job_ids` back to ready with fresh
    /// attempts, as `replay_dead` does; returns `(moved, kept)`.
    fn replay_dead_ids(
        &self,
        py: Python<'_>,
        namespace: &str,
        queue: &str,
        job_ids: Vec<String>,
    ) -> PyResult<(u64, u64)> {
        let keys = QueueKeys::new(namespace, queue).py()?;
        let ids = parse_ids(&job_ids)?;
        self.with(py, |s| s.replay_dead_ids(&keys, &ids))
    }

    /// Deletes the dead letters among `job_ids` with their error records
    /// (counted as purged); returns how many.
    fn forget_dead_ids(
        &self,
        py: Python<'_>,
        namespace: &str,
        queue: &str,
        job_ids: Vec<String>,
    ) -> PyResult<u64> {
        let keys = QueueKeys::new(namespace, queue).py()?;
        let ids = parse_ids(&job_ids)?;
        self.with(py, |s| s.forget_dead_ids(&keys, &ids))
    }

    /// Forgets up to `count` (1 to 1000) dead letters dead for longer than
    /// `older_than_s`, or the oldest beyond `keep`, with their error records;
    /// returns how many (counted as purged).
    #[pyo3(signature = (namespace, queue, *, older_than_s, keep, count))]
    fn purge_dead(
        &self,
        py: Python<'_>,
        namespace: &str,
        queue: &str,
        older_than_s: f64,
        keep: u64,
        count: usize,
    ) -> PyResult<u64> {
        let keys = QueueKeys::new(namespace, queue).py()?;
        let retention = DeadRetention {
            max_jobs: keep,
            max_age: duration("older_than_s", older_than_s).py()?,
        };
        self.with(py, |s| {
            s.purge_dead(&keys, retention, count, Forgotten::Purged)
        })
    }
}

fn parse_ids(job_ids: &[String]) -> PyResult<Vec<[u8; 16]>> {
    job_ids
        .iter()
        .map(|id| JobId::parse(id).map(|id| id.0).py())
        .collect()
}
