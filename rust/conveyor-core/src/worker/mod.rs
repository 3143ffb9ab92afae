//! The Rust half of a worker: lease batches from weighted queues, decode
//! them, and settle them from outcomes (counting attempts, stamping stages),
//! with the leases held tracked for heartbeats. Handlers run in Python; this
//! side does everything per batch so Python only loops over ready jobs.

pub mod by_type;
mod cancels;
mod fetch_order;
pub mod keeper;
mod leases;
mod metrics;
pub mod outcomes;
pub mod records;
mod settlements;

pub use cancels::cancelled_result;
pub use leases::{MaxAges, Progress};
pub use outcomes::{Kept, Outcome};
pub use records::{cap_error, error_json, MAX_ERROR_BYTES};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::id::now_us;
use crate::metrics::Histogram;
use crate::store::history::History;
use crate::store::keys::QueueKeys;
use crate::store::queue::{DeadRetention, Lease};
use crate::store::RedisStore;

/// One queue a worker takes jobs from, with its weight.
#[derive(Debug, Clone)]
pub struct WeightedQueue {
    /// The queue's name.
    pub name: String,
    /// The queue's keys.
    pub keys: QueueKeys,
    /// Relative share of fetches (weighted mode) or rank (strict mode: the
    /// first queue in the list is always tried first).
    pub weight: u32,
}

/// A leased job that decoded, ready for a handler.
#[derive(Debug)]
pub struct ReadyJob {
    /// Its slot in the lease.
    pub slot: u32,
    /// The decoded envelope.
    pub envelope: Envelope,
    /// The bytes as stored (the base of a retried or dead-lettered copy).
    pub raw: Vec<u8>,
    /// Longest this job may hold the lease once started (ms).
    pub max_age_ms: u64,
}

/// A batch of jobs leased by one fetch.
#[derive(Debug)]
pub struct Batch {
    /// Which of the worker's queues it came from.
    pub queue: usize,
    /// The lease token.
    pub token: String,
    /// When the fetch returned (µs since the epoch).
    pub fetched_at_us: u64,
    /// Jobs for handlers, in slot order (shared with the keeper, which names
    /// a job that overstays).
    pub jobs: Arc<Vec<ReadyJob>>,
    /// Leased bytes that are not a valid envelope: dead-lettered at settle.
    pub malformed: Vec<(u32, Vec<u8>, String)>,
    /// How far it has got (`begin`), shared with the keeper.
    pub progress: Arc<Progress>,
}

/// Latency and outcome counters of one worker process.
#[derive(Default)]
pub struct WorkerStats {
    /// Attempts that succeeded.
    pub done: AtomicU64,
    /// Attempts that failed and were scheduled again.
    pub retried: AtomicU64,
    /// Jobs given up on.
    pub dead: AtomicU64,
    /// Settlements for leases that had expired meanwhile.
    pub stale: AtomicU64,
    /// Jobs cancelled, before they started or while they ran.
    pub cancelled: AtomicU64,
    /// Jobs given back unstarted.
    pub released: AtomicU64,
    /// Jobs leased.
    pub fetched: AtomicU64,
    /// Leases found expired and reaped while their jobs still ran.
    pub lost_leases: AtomicU64,
    /// Leases let go because their running job passed its maximum age.
    pub overdue_leases: AtomicU64,
    /// Heartbeats or reaps that failed (Redis away).
    pub keeper_errors: AtomicU64,
    /// Enqueue (the producer's clock) to the start of an attempt.
    pub wait: Histogram,
    /// Start to end of an attempt.
    pub run: Histogram,
    /// Enqueue to the end of the attempt that succeeded.
    pub total: Histogram,
}

/// Fetches from and settles into a worker's queues over a small pool of
/// connections, so the threads of one process share it.
pub struct WorkQueues {
    redis_url: String,
    queues: Vec<WeightedQueue>,
    strict: bool,
    worker_id: String,
    lease: Duration,
    max_ages: MaxAges,
    retention: DeadRetention,
    /// How long ended jobs stay findable by id (off while Redis is tight).
    history: History,
    /// Whether ended jobs are counted in the queues' tallies (`store::tally`).
    tallies: bool,
    /// Redis is nearly full (see `leases::check_memory`): retries keep no
    /// error record and dead letters a short one, so failures cannot grow it.
    tight: std::sync::atomic::AtomicBool,
    /// Bytes of results kept since Redis' memory was last read (`records::kept`).
    kept_since_check: AtomicU64,
    /// How long results of `store_result` job types are kept (`cancels.rs`).
    result_ttls: HashMap<String, Duration>,
    sequence: AtomicU64,
    pool: Mutex<Vec<RedisStore>>,
    /// Every lease held now, by token.
    held: Mutex<HashMap<String, leases::Held>>,
    events: leases::Events,
    stats: WorkerStats,
    by_type: by_type::ByType,
}

impl WorkQueues {
    /// A worker's view of `queues` on the Redis at `redis_url`. `strict`
    /// always tries queues in list order; otherwise each fetch picks a queue
    /// with probability proportional to its weight and falls back to the rest.
    pub fn new(
        redis_url: &str,
        queues: Vec<WeightedQueue>,
        strict: bool,
        worker_id: &str,
        lease: Duration,
    ) -> Result<WorkQueues> {
        if queues.is_empty() {
            return Err(Error::Config("a worker needs at least one queue".into()));
        }
        if queues.iter().any(|q| q.weight == 0) {
            return Err(Error::Config("queue weights must be at least 1".into()));
        }
        if lease < Duration::from_millis(100) {
            return Err(Error::Config("a lease must last at least 100 ms".into()));
        }
        let first = RedisStore::connect(redis_url, Duration::from_secs(5))?;
        Ok(WorkQueues {
            redis_url: redis_url.to_owned(),
            queues,
            strict,
            worker_id: worker_id.to_owned(),
            lease,
            max_ages: MaxAges::default(),
            retention: DeadRetention::default(),
            history: History::default(),
            tallies: true,
            tight: Default::default(),
            kept_since_check: Default::default(),
            result_ttls: HashMap::new(),
            sequence: AtomicU64::new(0),
            pool: Mutex::new(vec![first]),
            held: Mutex::new(HashMap::new()),
            events: Default::default(),
            stats: WorkerStats::default(),
            by_type: Default::default(),
        })
    }

    /// Sets how long a started job may hold its lease (see `MaxAges`).
    pub fn with_max_ages(mut self, max_ages: MaxAges) -> Self {
        self.max_ages = max_ages;
        self
    }

    /// Sets how many dead jobs each queue keeps, and for how long.
    pub fn with_dead_retention(mut self, retention: DeadRetention) -> Self {
        self.retention = retention;
        self
    }

    /// Sets how long, and how many, ended jobs stay findable by id.
    pub fn with_history(mut self, history: History) -> Self {
        self.history = history;
        self
    }

    /// Sets whether ended jobs are counted in the queues' tallies.
    pub fn with_tallies(mut self, tallies: bool) -> Self {
        self.tallies = tallies;
        self
    }

    /// The queues, in the order given.
    pub fn queues(&self) -> &[WeightedQueue] {
        &self.queues
    }

    /// The process's counters and latency histograms.
    pub fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    /// Runs `f` on a pooled connection; a connection that failed is dropped,
    /// so the next call connects afresh (Redis restarted, network blip).
    pub(super) fn with_store<T>(&self, f: impl FnOnce(&mut RedisStore) -> Result<T>) -> Result<T> {
        let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut store = match pooled {
            Some(store) => store,
            None => RedisStore::connect(&self.redis_url, Duration::from_secs(5))?,
        };
        let result = f(&mut store);
        if result.is_ok() {
            self.pool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(store);
        }
        result
    }

    /// Leases up to `max` jobs from the first queue (in this fetch's order)
    /// that has any; `None` when every queue is empty.
    pub fn fetch(&self, max: usize) -> Result<Option<Batch>> {
        self.fetch_in(&self.fetch_order(), max)
    }

    /// The order in which one fetch tries the queues (`fetch_order.rs`).
    pub(super) fn fetch_order(&self) -> Vec<usize> {
        let weights: Vec<u32> = self.queues.iter().map(|q| q.weight).collect();
        fetch_order::draw(&weights, self.strict, &mut rand::rng())
    }

    /// Leases up to `max` jobs from the first queue of `order` that has any.
    pub(super) fn fetch_in(&self, order: &[usize], max: usize) -> Result<Option<Batch>> {
        let (first, rest) = order.split_at(order.len().min(fetch_order::TRIED_FIRST));
        for &index in first {
            if let Some(batch) = self.fetch_from(index, max)? {
                return Ok(Some(batch));
            }
        }
        let mut rest = rest.to_vec();
        if rest.len() >= fetch_order::LOOK_FROM {
            let keys: Vec<&QueueKeys> = rest.iter().map(|&i| &self.queues[i].keys).collect();
            let found = self.with_store(|s| s.with_work(&keys))?;
            let mut found = found.into_iter();
            rest.retain(|_| found.next().unwrap_or(true));
        }
        for index in rest {
            if let Some(batch) = self.fetch_from(index, max)? {
                return Ok(Some(batch));
            }
        }
        Ok(None)
    }

    /// Leases up to `max` jobs from queue `index`; `None` when it has none.
    fn fetch_from(&self, index: usize, max: usize) -> Result<Option<Batch>> {
        let token = self.new_token();
        let keys = &self.queues[index].keys;
        let lease_ms = self.lease_ms();
        let lease = self.with_store(|s| s.fetch(keys, &token, max, lease_ms))?;
        self.leased(index, lease)
    }

    /// A token for a new lease, unique to this process.
    pub(super) fn new_token(&self) -> String {
        format!(
            "{}:{}",
            self.worker_id,
            self.sequence.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// How long a lease lasts unless extended (ms).
    pub(super) fn lease_ms(&self) -> u64 {
        self.lease.as_millis() as u64
    }

    /// The batch of `lease`, from queue `index`, now held (renewed by the
    /// keeper until settled); `None` when it leased nothing.
    pub(super) fn leased(&self, index: usize, lease: Lease) -> Result<Option<Batch>> {
        if lease.jobs.is_empty() {
            return Ok(None);
        }
        let token = lease.token;
        let fetched_at_us = now_us();
        self.stats
            .fetched
            .fetch_add(lease.jobs.len() as u64, Ordering::Relaxed);
        let mut jobs = Vec::with_capacity(lease.jobs.len());
        let mut malformed = Vec::new();
        for (i, raw) in lease.jobs.into_iter().enumerate() {
            let slot = i as u32 + 1;
            match Envelope::decode(&raw) {
                Ok(envelope) => jobs.push(ReadyJob {
                    slot,
                    max_age_ms: self.max_ages.for_type(&envelope.job_type),
                    envelope,
                    raw,
                }),
                Err(err) => malformed.push((slot, raw, err.to_string())),
            }
        }
        let jobs = self.drop_cancelled(index, &token, jobs, &lease.cancelled)?;
        if jobs.is_empty() && malformed.is_empty() {
            return Ok(None);
        }
        let first = jobs
            .first()
            .map_or(self.lease.as_millis() as u64, |j| j.max_age_ms);
        let batch = Batch {
            queue: index,
            token,
            fetched_at_us,
            jobs: Arc::new(jobs),
            malformed,
            progress: Arc::new(Progress::new(first)),
        };
        self.held.lock().unwrap_or_else(|e| e.into_inner()).insert(
            batch.token.clone(),
            leases::Held {
                queue: index,
                progress: Arc::clone(&batch.progress),
                jobs: Arc::clone(&batch.jobs),
            },
        );
        Ok(Some(batch))
    }

    /// Blocks until new jobs are signalled on any of the queues or `timeout`
    /// (at most 2 s, inside the connection's reply timeout) passes.
    pub fn wait_for_work(&self, timeout: Duration) -> Result<bool> {
        let keys: Vec<&QueueKeys> = self.queues.iter().map(|q| &q.keys).collect();
        let timeout = timeout.clamp(Duration::from_millis(10), Duration::from_secs(2));
        self.with_store(|s| s.wait_for_work(&keys, timeout))
    }
}
