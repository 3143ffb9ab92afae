//! The leases a worker process holds: how far each batch has got, renewing
//! them (heartbeats), letting go of those past their maximum age, and reaping
//! the expired leases of dead workers. `keeper.rs` runs this on a native
//! thread, so a handler holding the GIL cannot stop it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{Batch, ReadyJob, WorkQueues};
use crate::error::Result;
use crate::id::now_ms;
use crate::store::history::History;

/// Share of `maxmemory` from which Redis counts as nearly full.
const TIGHT_AT: f64 = 0.9;

/// Most lease events kept for Python to log; older ones are dropped (and
/// counted), so a worker nobody drains cannot grow without bound.
const MAX_EVENTS: usize = 1000;

/// How far a leased batch has got, written by the thread running it and read
/// by the keeper.
#[derive(Debug, Default)]
pub struct Progress {
    /// Highest slot begun (1-based; 0 before the first starts).
    started: AtomicU32,
    /// The index of the job begun last, plus one (0 before the first).
    begun: AtomicU32,
    /// When the running job's lease stops being renewed (ms since the epoch).
    deadline_ms: AtomicU64,
    /// Slots whose cancel was asked while leased (`cancels.rs`).
    pub(super) cancel_asked: std::sync::Mutex<Vec<u32>>,
}

/// The longest a job may hold its lease: its type's limit (its timeout plus a
/// grace), or the default for types without a timeout.
#[derive(Debug, Clone)]
pub struct MaxAges {
    /// Per job type.
    pub by_type: HashMap<String, Duration>,
    /// For every other type.
    pub default: Duration,
}

impl Default for MaxAges {
    fn default() -> Self {
        MaxAges {
            by_type: HashMap::new(),
            default: Duration::from_secs(3600),
        }
    }
}

impl MaxAges {
    /// The limit for `job_type`, in ms.
    pub fn for_type(&self, job_type: &str) -> u64 {
        self.by_type
            .get(job_type)
            .unwrap_or(&self.default)
            .as_millis()
            .min(u64::MAX as u128) as u64
    }
}

/// One lease this process holds.
#[derive(Debug, Clone)]
pub(super) struct Held {
    pub(super) queue: usize,
    pub(super) progress: Arc<Progress>,
    pub(super) jobs: Arc<Vec<ReadyJob>>,
}

impl Batch {
    /// Marks job `index` as started now: the keeper reports its slot with the
    /// next heartbeat (so a reaper charges attempts only to jobs that
    /// started) and renews the lease until the job's maximum age has passed.
    /// The slot kept is the highest begun: async jobs of a batch run at once
    /// and may be begun out of order, and every slot up to it has started.
    pub fn begin(&self, index: usize) {
        if let Some(job) = self.jobs.get(index) {
            let deadline = now_ms().saturating_add(job.max_age_ms);
            self.progress.deadline_ms.store(deadline, Ordering::Relaxed);
            self.progress.started.fetch_max(job.slot, Ordering::Relaxed);
            self.progress
                .begun
                .store(index as u32 + 1, Ordering::Relaxed);
        }
    }

    /// The index of the job begun last, if any: the one running, for a
    /// thread that runs its batch's jobs one after another (Python's
    /// `current_job()` reads it, so that the hot path sets nothing per job).
    pub fn begun(&self) -> Option<usize> {
        match self.progress.begun.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n as usize - 1),
        }
    }
}

impl Progress {
    /// Progress of a batch fetched now whose first job may hold it `max_age_ms`.
    pub(super) fn new(max_age_ms: u64) -> Self {
        Progress {
            started: AtomicU32::new(0),
            begun: AtomicU32::new(0),
            deadline_ms: AtomicU64::new(now_ms().saturating_add(max_age_ms)),
            cancel_asked: Default::default(),
        }
    }
}

impl WorkQueues {
    /// Stops renewing `batch`'s lease without settling it: the lease then
    /// expires and the reaper (of any worker) gives its jobs back. For a
    /// batch that cannot be settled (Redis away longer than the lease), so
    /// its jobs are not held for ever by heartbeats.
    pub fn abandon(&self, batch: &Batch) {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&batch.token);
    }

    /// Extends every lease this process holds, except those whose running
    /// job is past its maximum age (let go, so that the job is retried
    /// elsewhere); returns the tokens lost (their lease had expired and was
    /// reaped: those jobs may run twice).
    pub fn heartbeat(&self) -> Result<Vec<String>> {
        let now = now_ms();
        let mut by_queue: HashMap<usize, Vec<(String, u32)>> = HashMap::new();
        let mut overdue = Vec::new();
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|token, held| {
                let started = held.progress.started.load(Ordering::Relaxed);
                if now > held.progress.deadline_ms.load(Ordering::Relaxed) {
                    overdue.push((token.clone(), started, held.clone()));
                    return false;
                }
                by_queue
                    .entry(held.queue)
                    .or_default()
                    .push((token.clone(), started));
                true
            });
        for (token, started, held) in overdue {
            self.stats.overdue_leases.fetch_add(1, Ordering::Relaxed);
            let job = held.jobs.iter().find(|j| j.slot == started.max(1));
            let what = job.map_or_else(
                || "a batch that never started".to_owned(),
                |j| format!("job {} ({})", j.envelope.id, j.envelope.job_type),
            );
            let age = job.map_or(0, |j| j.max_age_ms) as f64 / 1000.0;
            self.event(format!(
                "{what} ran past its maximum age of {age}s: lease {token} is no longer \
                 renewed, so the job is given back and retried elsewhere once it expires \
                 (its thread stays blocked until the call returns)"
            ));
        }
        let lease_ms = self.lease.as_millis() as u64;
        let mut lost = Vec::new();
        for (queue, tokens) in by_queue {
            let keys = &self.queues[queue].keys;
            lost.extend(self.with_store(|s| s.heartbeat(keys, &tokens, lease_ms))?);
        }
        // A lease settled between the snapshot above and the script is gone
        // from Redis too, but was not lost: only tokens still held count.
        // A lost lease is renewed no more (its settle will come back stale).
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        lost.retain(|token| held.remove(token).is_some());
        drop(held);
        if !lost.is_empty() {
            self.stats
                .lost_leases
                .fetch_add(lost.len() as u64, Ordering::Relaxed);
            self.event(format!(
                "leases expired before their jobs ended (they may run twice): {lost:?}"
            ));
        }
        Ok(lost)
    }

    /// Reaps expired leases on every queue; returns the jobs returned to ready.
    pub fn reap(&self) -> Result<u64> {
        let mut jobs = 0;
        for queue in &self.queues {
            jobs += self.with_store(|s| s.reap(&queue.keys, 100))?.1;
        }
        Ok(jobs)
    }

    /// Reads Redis' memory: from `TIGHT_AT` of `maxmemory`, settles keep no
    /// error record for retries and a short one for dead letters, so a
    /// storm of failures cannot push Redis past its limit (settling must
    /// work over it, and so is allowed to grow it).
    pub(super) fn check_memory(&self) -> Result<()> {
        self.kept_since_check.store(0, Ordering::Relaxed);
        let (used, max) = self.with_store(|s| s.memory())?;
        let tight = max > 0 && used as f64 >= max as f64 * TIGHT_AT;
        self.tight.store(tight, Ordering::Relaxed);
        Ok(())
    }

    /// The history settles keep now: none while Redis is nearly full.
    pub(super) fn history_now(&self) -> History {
        if self.tight.load(Ordering::Relaxed) {
            History::OFF
        } else {
            self.history
        }
    }

    /// How many leases this process holds now.
    pub fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Records something an operator should see in the worker's log.
    pub(super) fn event(&self, message: String) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() >= MAX_EVENTS {
            events.pop_front();
        }
        events.push_back(message);
    }

    /// The lease events since the last call, oldest first, for the log.
    pub fn take_events(&self) -> Vec<String> {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *events).into()
    }
}

/// The events kept for Python to log.
pub(super) type Events = std::sync::Mutex<VecDeque<String>>;
