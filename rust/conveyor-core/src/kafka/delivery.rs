//! Delivery tracking: each `send` call's jobs as one batch whose slots
//! librdkafka's delivery callback fills in, the [`Pending`] handle a caller
//! may wait on (or drop), and failures nobody waited for, kept for the next
//! flush to report.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::producer::JobProducer;
use crate::error::{Error, Result};
use crate::id::JobId;
use crate::store::tally::minute_of;

/// How many failed job ids an error message lists before it only counts.
pub(super) const FAILURE_SAMPLES: usize = 10;

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Partition the broker wrote it to.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
}

/// A delivery failure: which job, and why.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The job that was not written.
    pub id: JobId,
    /// What Kafka (or the local queue) said.
    pub reason: String,
}

/// Most failures kept for a watcher to take; older ones are dropped (and
/// counted) if nobody takes them.
const MAX_RECENT: usize = 10_000;

/// Failures of sends nobody waited for.
#[derive(Default)]
pub(super) struct Unobserved {
    /// Since the last flush, which reports them.
    pub count: u64,
    /// The first of those, for the flush's message.
    pub samples: Vec<Failure>,
    /// Not yet taken by [`super::producer::JobProducer::take_failures`].
    pub recent: std::collections::VecDeque<Failure>,
    /// Since the producer began.
    pub total: u64,
}

impl Shared {
    /// Records failures nobody will see through a `Pending`, and wakes a
    /// thread waiting to take them.
    pub(super) fn record_unobserved(&self, failures: impl IntoIterator<Item = Failure>) {
        let mut unobserved = lock(&self.unobserved);
        let before = unobserved.total;
        for failure in failures {
            unobserved.count += 1;
            unobserved.total += 1;
            if unobserved.samples.len() < FAILURE_SAMPLES {
                unobserved.samples.push(failure.clone());
            }
            if unobserved.recent.len() >= MAX_RECENT {
                unobserved.recent.pop_front();
            }
            unobserved.recent.push_back(failure);
        }
        if unobserved.total > before {
            drop(unobserved);
            self.failed.notify_all();
        }
    }
}

/// Batches awaiting reports, and the threads in `flush` waiting for none.
#[derive(Default)]
pub(super) struct InFlight {
    pub batches: usize,
    pub flushers: usize,
}

pub(super) struct Shared {
    pub unobserved: Mutex<Unobserved>,
    pub in_flight: Mutex<InFlight>,
    pub settled: Condvar,
    /// Signalled when a failure nobody waited for is recorded.
    pub failed: Condvar,
    /// Jobs acknowledged, per topic and minute, until taken
    /// ([`super::producer::JobProducer::take_sent`]).
    pub sent: Mutex<SentTally>,
    /// Whether anyone takes `sent`: set by the first take, so a producer
    /// nobody takes from (the gate's, a relay's) keeps no counts growing.
    pub tallying: AtomicBool,
}

/// Acknowledged jobs by topic, then by minute of their ids.
pub(super) type SentTally = HashMap<Arc<str>, BTreeMap<u64, u64>>;

// Per-record helpers below are marked inline: they sit in another module
// (and so maybe another codegen unit) than the producer that calls them.
#[inline]
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn failures<'a>(
    ids: &'a [JobId],
    results: &'a [std::result::Result<Delivered, String>],
) -> impl Iterator<Item = Failure> + 'a {
    ids.iter().zip(results).filter_map(|(id, r)| {
        r.as_ref().err().map(|reason| Failure {
            id: *id,
            reason: reason.clone(),
        })
    })
}

pub(super) fn delivery_error(count: u64, samples: &[Failure]) -> Error {
    let listed: Vec<String> = samples
        .iter()
        .map(|f| format!("{} ({})", f.id, f.reason))
        .collect();
    Error::Delivery(format!(
        "{count} job(s) were not written to Kafka: {}{}",
        listed.join(", "),
        if count as usize > samples.len() {
            ", …"
        } else {
            ""
        }
    ))
}

pub(super) type Outcome = std::result::Result<Delivered, String>;

struct BatchInner {
    results: Vec<Option<Outcome>>,
    remaining: usize,
    observed: bool,
    abandoned: bool,
    /// Threads blocked in [`Pending::wait`]: a settling batch signals its
    /// condvar only when there are some (a signal is a system call, and
    /// most single sends are never waited on one by one).
    waiters: u32,
}

/// One `send` call's jobs and their delivery outcomes as they arrive.
pub(super) struct Batch {
    pub ids: Vec<JobId>,
    /// The topic its acknowledged jobs are tallied under; `None`: not tallied.
    tally: Option<Arc<str>>,
    inner: Mutex<BatchInner>,
    ready: Condvar,
    /// Wakes an async waiter; holds a permit if the batch settles first.
    settled: tokio::sync::Notify,
}

impl Batch {
    #[inline]
    pub(super) fn new(ids: Vec<JobId>, tally: Option<Arc<str>>) -> Self {
        let n = ids.len();
        Self {
            ids,
            tally,
            inner: Mutex::new(BatchInner {
                results: vec![None; n],
                remaining: n,
                observed: false,
                abandoned: false,
                waiters: 0,
            }),
            ready: Condvar::new(),
            settled: tokio::sync::Notify::new(),
        }
    }

    #[inline]
    pub(super) fn complete(&self, index: usize, outcome: Outcome, shared: &Shared) {
        let mut inner = lock(&self.inner);
        if inner.results[index].replace(outcome).is_some() {
            return; // a second report for one record: keep the count honest
        }
        inner.remaining -= 1;
        if inner.remaining > 0 {
            return;
        }
        if inner.abandoned {
            let results = outcomes(&inner.results);
            shared.record_unobserved(failures(&self.ids, &results));
        }
        if let Some(topic) = self
            .tally
            .as_ref()
            .filter(|_| shared.tallying.load(Relaxed))
        {
            // Once per batch, not per record: one lock for a whole send.
            let mut sent = lock(&shared.sent);
            let minutes = sent.entry(Arc::clone(topic)).or_default();
            for (id, result) in self.ids.iter().zip(&inner.results) {
                if matches!(result, Some(Ok(_))) {
                    *minutes.entry(minute_of(id)).or_insert(0) += 1;
                }
            }
        }
        let waited = inner.waiters > 0;
        drop(inner);
        if waited {
            self.ready.notify_all();
        }
        self.settled.notify_one();
        let mut in_flight = lock(&shared.in_flight);
        in_flight.batches -= 1;
        let flushing = in_flight.flushers > 0;
        drop(in_flight);
        if flushing {
            shared.settled.notify_all();
        }
    }
}

pub(super) fn outcomes(slots: &[Option<Outcome>]) -> Vec<Outcome> {
    slots
        .iter()
        .map(|s| {
            s.clone()
                .unwrap_or_else(|| Err("no delivery report".to_owned()))
        })
        .collect()
}

/// A batch handed to the producer, awaiting its broker acknowledgements.
pub struct Pending {
    pub(super) batch: Arc<Batch>,
    pub(super) shared: Arc<Shared>,
}

impl Pending {
    /// The ids of the batch's jobs, in send order.
    pub fn ids(&self) -> &[JobId] {
        &self.batch.ids
    }

    /// Whether every record has been acknowledged or has failed.
    pub fn is_done(&self) -> bool {
        lock(&self.batch.inner).remaining == 0
    }

    /// Waits for every acknowledgement (`None`: as long as it takes, which the
    /// delivery timeout bounds). Returns where each job landed, or
    /// [`Error::Delivery`] naming the jobs that were not written.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<Vec<Delivered>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut inner = lock(&self.batch.inner);
        inner.waiters += 1;
        while inner.remaining > 0 {
            inner = match deadline {
                None => self
                    .batch
                    .ready
                    .wait(inner)
                    .unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        inner.waiters -= 1;
                        return Err(Error::Timeout(format!(
                            "{} of {} job(s) still awaiting Kafka's acknowledgement",
                            inner.remaining,
                            self.batch.ids.len()
                        )));
                    }
                    self.batch
                        .ready
                        .wait_timeout(inner, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
        inner.waiters -= 1;
        inner.observed = true;
        let results = outcomes(&inner.results);
        let failed: Vec<Failure> = failures(&self.batch.ids, &results).collect();
        if failed.is_empty() {
            Ok(results.into_iter().filter_map(|r| r.ok()).collect())
        } else {
            let samples = &failed[..failed.len().min(FAILURE_SAMPLES)];
            Err(delivery_error(failed.len() as u64, samples))
        }
    }
}

impl Pending {
    /// [`Pending::wait`] for async callers (the gate): the same outcome,
    /// without blocking a runtime thread.
    pub async fn wait_async(&self, timeout: Duration) -> Result<Vec<Delivered>> {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.is_done() {
            if tokio::time::timeout_at(deadline, self.batch.settled.notified())
                .await
                .is_err()
            {
                return Err(Error::Timeout(format!(
                    "{} job(s) not acknowledged by Kafka within {timeout:?}",
                    self.batch.ids.len()
                )));
            }
        }
        self.wait(Some(Duration::ZERO))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut inner = lock(&self.batch.inner);
        if inner.remaining > 0 {
            inner.abandoned = true;
        } else if !inner.observed {
            let results = outcomes(&inner.results);
            self.shared
                .record_unobserved(failures(&self.batch.ids, &results));
        }
    }
}

/// What the application learns from delivery reports nobody waited on.
impl JobProducer {
    /// Failures of sends nobody waited for (their `Pending` was dropped), as
    /// they happen: waits up to `timeout` for the first, then takes all there
    /// are. A watcher thread logs them and offers them to the application.
    pub fn take_failures(&self, timeout: Duration) -> Vec<Failure> {
        let mut unobserved = lock(&self.shared.unobserved);
        if unobserved.recent.is_empty() {
            unobserved = self
                .shared
                .failed
                .wait_timeout(unobserved, timeout)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        unobserved.recent.drain(..).collect()
    }

    /// Jobs Kafka acknowledged since the last call, as `(topic, minute,
    /// jobs)` (minutes of the job ids' times, `store::tally`), for the
    /// application to add to its queues' tallies. Double-written jobs are
    /// left out: a relay in shadow mode drops them by design.
    /// Counting starts at the first call.
    pub fn take_sent(&self) -> Vec<(String, u64, u64)> {
        self.shared
            .tallying
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let taken = std::mem::take(&mut *lock(&self.shared.sent));
        taken
            .into_iter()
            .flat_map(|(topic, minutes)| {
                minutes
                    .into_iter()
                    .map(move |(m, n)| (topic.to_string(), m, n))
            })
            .collect()
    }

    /// How many jobs failed delivery with nobody waiting, since this
    /// producer began.
    pub fn unobserved_failures(&self) -> u64 {
        lock(&self.shared.unobserved).total
    }
}
