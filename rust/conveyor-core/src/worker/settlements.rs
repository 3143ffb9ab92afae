//! Settling a batch, alone or with the fetch of the next in one round trip;
//! and from how a handler's attempt ended (`Outcome`) to what settling
//! records for the job (`Settlement`): the stored copy of a retried or dead job
//! (attempt counted, stage stamps appended, smaller while Redis is nearly
//! full), its error record and its result, and the latencies observed.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{cap_error, error_json, Batch, Outcome, ReadyJob, WorkQueues, MAX_ERROR_BYTES};
use crate::envelope::{append_stage, set_attempt, Envelope, Stage};
use crate::error::{Error, Result};
use crate::store::keys;
use crate::store::queue::{Forgotten, Lease, NextLease, Settled, Settlement};
use crate::store::tally::{minute_of, minute_of_bytes};

impl WorkQueues {
    /// Settles a batch: `outcomes[i]` is how `batch.jobs[i]` ended; jobs past
    /// the end of `outcomes` are released. Malformed jobs are dead-lettered.
    pub fn settle(&self, batch: &Batch, outcomes: &[Outcome]) -> Result<Settled> {
        Ok(self.settle_then(batch, outcomes, None)?.0)
    }

    /// Settles a batch as [`settle`](Self::settle) does and leases up to
    /// `max` jobs for the next, as [`fetch`](WorkQueues::fetch) does. When
    /// this fetch's order starts at the settled batch's queue (always, for a
    /// worker of one queue), both go to Redis in one round trip: for small
    /// jobs, the round trips are most of what a batch costs a worker beyond
    /// its handlers. Once settled, a failed fetch is not an error of this
    /// call (the batch must not be settled again): it gives `None`, and the
    /// next fetch meets the fault and reports it.
    pub fn settle_and_fetch(
        &self,
        batch: &Batch,
        outcomes: &[Outcome],
        max: usize,
    ) -> Result<(Settled, Option<Batch>)> {
        let order = self.fetch_order();
        if order.first() != Some(&batch.queue) {
            let settled = self.settle(batch, outcomes)?;
            return Ok((settled, self.fetch_in(&order, max).unwrap_or(None)));
        }
        let (settled, lease) = self.settle_then(batch, outcomes, Some(max))?;
        let next = match lease {
            Some(lease) => self.leased(batch.queue, lease).unwrap_or(None),
            None => None,
        };
        match next {
            Some(next) => Ok((settled, Some(next))),
            None => Ok((settled, self.fetch_in(&order[1..], max).unwrap_or(None))),
        }
    }

    /// Settles `batch` (see [`settle`](Self::settle)) and, with `next`, in the
    /// same round trip leases up to `next` jobs from its queue.
    fn settle_then(
        &self,
        batch: &Batch,
        outcomes: &[Outcome],
        next: Option<usize>,
    ) -> Result<(Settled, Option<Lease>)> {
        if outcomes.len() > batch.jobs.len() {
            return Err(Error::InvalidJob(format!(
                "{} outcomes for a batch of {} jobs",
                outcomes.len(),
                batch.jobs.len()
            )));
        }
        let mut records = Vec::with_capacity(batch.jobs.len() + batch.malformed.len());
        let mut minutes = Vec::with_capacity(records.capacity());
        let mut released = Vec::new();
        for (i, job) in batch.jobs.iter().enumerate() {
            let outcome = outcomes.get(i).unwrap_or(&Outcome::Released);
            match self.settlement(job, outcome) {
                Some(record) => {
                    records.push(record);
                    minutes.push(minute_of(&job.envelope.id));
                }
                None => released.push(job.slot),
            }
        }
        for (slot, raw, reason) in &batch.malformed {
            let mut id = [0u8; 16];
            if let Some(bytes) = crate::envelope::id_bytes(raw) {
                id.copy_from_slice(bytes);
            }
            minutes.push(minute_of_bytes(&id));
            records.push(Settlement::Dead {
                slot: *slot,
                id,
                unique: None,
                open: None,
                envelope: raw.clone(),
                error: cap_error(error_json("EnvelopeDecodeError", reason), self.error_cap()),
                result: None,
            });
        }
        let keys = &self.queues[batch.queue].keys;
        // Out of `held` while settling: a heartbeat meanwhile would find the
        // lease gone and report it lost. Back in if settling failed, so the
        // lease is renewed while the caller retries.
        let held = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&batch.token);
        let history = self.history_now();
        let next = next.map(|max| (self.new_token(), max));
        let lease_ms = self.lease_ms();
        let result = self.with_store(|s| {
            let minutes = if self.tallies { &minutes[..] } else { &[] };
            let (settled, lease) = match &next {
                None => (
                    s.settle(keys, &batch.token, &records, minutes, &history)?,
                    None,
                ),
                Some((token, max)) => {
                    let next = NextLease {
                        token,
                        max: *max,
                        lease_ms,
                    };
                    let (settled, lease) =
                        s.settle_and_fetch(keys, &batch.token, &records, minutes, &history, &next)?;
                    (settled, Some(lease))
                }
            };
            let back = s.release(keys, &batch.token, &released)?;
            if settled.dead > 0 {
                // The retention, so that failures cannot fill Redis. Best
                // effort: the next dead letter tries again.
                let _ = s.purge_dead(keys, self.retention, 100, Forgotten::Trimmed);
            }
            Ok((settled, back, lease))
        });
        let (settled, back, lease) = match result {
            Ok(counts) => counts,
            Err(err) => {
                if let Some(held) = held {
                    self.held
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(batch.token.clone(), held);
                }
                return Err(err);
            }
        };
        let stats = &self.stats;
        stats.done.fetch_add(settled.done, Ordering::Relaxed);
        stats.retried.fetch_add(settled.retried, Ordering::Relaxed);
        stats.dead.fetch_add(settled.dead, Ordering::Relaxed);
        stats.stale.fetch_add(settled.stale, Ordering::Relaxed);
        stats
            .cancelled
            .fetch_add(settled.cancelled, Ordering::Relaxed);
        stats.released.fetch_add(back, Ordering::Relaxed);
        self.by_type.add(batch, outcomes);
        Ok((settled, lease))
    }

    /// The record for one job's outcome (`None`: release it), and its latencies.
    pub(super) fn settlement(&self, job: &ReadyJob, outcome: &Outcome) -> Option<Settlement> {
        let env = &job.envelope;
        let attempt = env.attempt.saturating_add(1);
        match outcome {
            Outcome::Released => None,
            Outcome::Cancelled {
                started_us,
                ended_us,
                result,
            } => {
                self.observe(env, *started_us, *ended_us, false);
                Some(Settlement::Cancelled {
                    slot: job.slot,
                    id: env.id.0,
                    unique: env.unique_field(),
                    open: open_field(env),
                    result: self.kept(env, result),
                })
            }
            Outcome::Done {
                started_us,
                ended_us,
                result,
            } => {
                self.observe(env, *started_us, *ended_us, true);
                let needs_id = env.attempt > 0 || env.dedup_key.is_some();
                Some(Settlement::Done {
                    slot: job.slot,
                    id: needs_id.then_some(env.id.0),
                    unique: env.unique_field(),
                    open: open_field(env),
                    result: self.kept(env, result),
                })
            }
            Outcome::Failed {
                started_us,
                ended_us,
                error,
                retry_in,
                result,
            } => {
                self.observe(env, *started_us, *ended_us, false);
                // Redis nearly full: a failure adds nothing to the job but its
                // attempt count, so a storm of them cannot grow Redis.
                let tight = self.tight.load(Ordering::Relaxed);
                let mut stored = job.raw.clone();
                set_attempt(&mut stored, attempt);
                if !tight {
                    append_stage(&mut stored, Stage::Started as u8, *started_us);
                    append_stage(&mut stored, Stage::Failed as u8, *ended_us);
                }
                // A job out of stamp room still retries; its history is full.
                let full = tight || Envelope::decode(&stored).is_err();
                if full && !tight {
                    stored = job.raw.clone();
                    set_attempt(&mut stored, attempt);
                }
                match retry_in {
                    Some(delay) => Some(Settlement::Retry {
                        slot: job.slot,
                        id: env.id.0,
                        envelope: stored,
                        delay_ms: delay.as_millis().min(u64::MAX as u128) as u64,
                        // The attempt count and stage stamps still say it failed.
                        error: if tight {
                            String::new()
                        } else {
                            cap_error(error.clone(), MAX_ERROR_BYTES)
                        },
                    }),
                    None => {
                        if !full {
                            append_stage(&mut stored, Stage::DeadLettered as u8, *ended_us);
                        }
                        Some(Settlement::Dead {
                            slot: job.slot,
                            id: env.id.0,
                            unique: env.unique_field(),
                            open: open_field(env),
                            envelope: stored,
                            error: cap_error(error.clone(), self.error_cap()),
                            result: self.kept(env, result),
                        })
                    }
                }
            }
        }
    }

    fn observe(&self, env: &Envelope, started_us: u64, ended_us: u64, done: bool) {
        let us = |a: u64, b: u64| Duration::from_micros(b.saturating_sub(a));
        if env.attempt == 0 {
            self.stats.wait.observe(us(env.enqueued_at_us, started_us));
        }
        self.stats.run.observe(us(started_us, ended_us));
        if done {
            self.stats.total.observe(us(env.enqueued_at_us, ended_us));
        }
    }
}

/// The job's field in its queue's open jobs: where a relay read it, unless
/// it was dead-lettered before (replayed from the dead letters, it was
/// counted out then and runs outside the watermark).
pub(super) fn open_field(env: &Envelope) -> Option<String> {
    let mut source = None;
    for stamp in &env.stages {
        if stamp.code == Stage::DeadLettered as u8 {
            return None;
        }
        source = stamp.source().or(source);
    }
    source.map(|(partition, offset)| keys::open_field(partition, offset))
}
