//! Cancelled jobs in a worker (`store/cancels.rs` has the marks): a leased
//! job whose cancel was asked is settled cancelled without running; a running
//! one is told through its batch (`Batch::cancel_asked`), which the keeper
//! updates at each beat, and its handler decides how to stop.

use crate::store::tally::minute_of;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::settlements::open_field;
use super::{Batch, ReadyJob, WorkQueues};
use crate::error::Result;
use crate::store::queue::Settlement;

/// The result a `store_result` job cancelled before it started keeps:
/// `conveyor/results.py`'s error tag and record, which raise `JobCancelled`
/// to its waiters (tests/test_cancel.py holds the two together).
pub fn cancelled_result(message: &str) -> Vec<u8> {
    let mut value = b"e".to_vec();
    value.extend(super::error_json("JobCancelled", message).into_bytes());
    value
}

impl WorkQueues {
    /// Sets, per job type, how long results are kept (`store_result` types):
    /// a job of such a type cancelled before it started keeps a result
    /// saying so.
    pub fn with_result_ttls(mut self, ttls: HashMap<String, Duration>) -> Self {
        self.result_ttls = ttls;
        self
    }

    /// Settles the jobs of lease `token` in `cancelled` (slots) as cancelled
    /// and returns the others, to run.
    pub(super) fn drop_cancelled(
        &self,
        queue: usize,
        token: &str,
        jobs: Vec<ReadyJob>,
        cancelled: &[u32],
    ) -> Result<Vec<ReadyJob>> {
        if cancelled.is_empty() {
            return Ok(jobs);
        }
        let (gone, kept): (Vec<_>, Vec<_>) =
            jobs.into_iter().partition(|j| cancelled.contains(&j.slot));
        let records: Vec<Settlement> = gone
            .iter()
            .map(|job| {
                let env = &job.envelope;
                let result = self.result_ttls.get(&env.job_type).and_then(|ttl| {
                    let value = cancelled_result("cancelled before it started");
                    self.kept(env, &Some((value, *ttl)))
                });
                Settlement::Cancelled {
                    slot: job.slot,
                    id: env.id.0,
                    unique: env.unique_field(),
                    open: open_field(env),
                    result,
                }
            })
            .collect();
        let minutes: Vec<u64> = match self.tallies {
            true => gone.iter().map(|j| minute_of(&j.envelope.id)).collect(),
            false => Vec::new(),
        };
        let keys = &self.queues[queue].keys;
        let history = self.history_now();
        let settled = self.with_store(|s| s.settle(keys, token, &records, &minutes, &history))?;
        self.stats
            .cancelled
            .fetch_add(settled.cancelled, Ordering::Relaxed);
        Ok(kept)
    }

    /// Reads which running jobs had their cancel asked since they were
    /// leased and tells their batches; one `ZCARD` per queue while none was.
    pub(super) fn check_cancels(&self) -> Result<()> {
        let mut by_queue: HashMap<usize, Vec<super::leases::Held>> = HashMap::new();
        for held in self.held.lock().unwrap_or_else(|e| e.into_inner()).values() {
            by_queue.entry(held.queue).or_default().push(held.clone());
        }
        for (queue, leases) in by_queue {
            let ids: Vec<[u8; 16]> = leases
                .iter()
                .flat_map(|h| h.jobs.iter().map(|j| j.envelope.id.0))
                .collect();
            let keys = &self.queues[queue].keys;
            let asked = self.with_store(|s| s.cancel_asked(keys, &ids))?;
            let mut asked = asked.into_iter();
            for held in &leases {
                let mut slots = held
                    .progress
                    .cancel_asked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                for job in held.jobs.iter() {
                    if asked.next() == Some(true) && !slots.contains(&job.slot) {
                        slots.push(job.slot);
                    }
                }
            }
        }
        Ok(())
    }
}

impl Batch {
    /// Whether job `index`'s cancel was asked while it was leased (as of the
    /// keeper's last beat, at most a second ago).
    pub fn cancel_asked(&self, index: usize) -> bool {
        self.jobs.get(index).is_some_and(|job| {
            self.progress
                .cancel_asked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&job.slot)
        })
    }
}
