//! From how a handler's attempt ended (`Outcome`) to what settling records
//! for the job (`Settlement`): the stored copy of a retried or dead job
//! (attempt counted, stage stamps appended, smaller while Redis is nearly
//! full), its error record and its result, and the latencies observed.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{cap_error, Outcome, ReadyJob, WorkQueues, MAX_ERROR_BYTES};
use crate::envelope::{append_stage, set_attempt, Envelope, Stage};
use crate::store::keys;
use crate::store::queue::Settlement;

impl WorkQueues {
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
