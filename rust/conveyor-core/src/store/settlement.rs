//! Settling: how the jobs of one lease ended (done, retry later, dead), in
//! one `settle-11.lua` call per batch.

use redis::{ConnectionLike, FromRedisValue};

use super::history::History;
use super::keys::QueueKeys;
use super::queue::{fetch_call, Lease, NextLease};
use super::scripts::{self, is_no_script, Call};
use super::RedisStore;
use crate::error::{Error, Result};

/// How one leased job ended, for [`RedisStore::settle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Succeeded: the job leaves Redis.
    Done {
        /// Its slot in the lease (1-based).
        slot: u32,
        /// The 16-byte id, needed only if the job failed before or is unique.
        id: Option<[u8; 16]>,
        /// Its dedup key, released if it still holds it.
        unique: Option<String>,
        /// Its field in the queue's open jobs (`keys::open_field`), for a
        /// job a relay read from Kafka.
        open: Option<String>,
        /// Its result, kept under its id (`store_result` job types).
        result: Option<StoredResult>,
    },
    /// Failed, to be tried again `delay_ms` after settling (Redis' clock).
    /// An empty `error` keeps no error record.
    Retry {
        /// Its slot in the lease (1-based).
        slot: u32,
        /// The 16-byte id.
        id: [u8; 16],
        /// The envelope to store: attempt counted, stage stamps appended.
        envelope: Vec<u8>,
        /// How long after settling to try again (ms).
        delay_ms: u64,
        /// The error, as JSON text.
        error: String,
    },
    /// Cancelled (`cancel-1.lua`) before or while it ran: the job leaves
    /// Redis like a done one, counted `cancelled`.
    Cancelled {
        /// Its slot in the lease (1-based).
        slot: u32,
        /// The 16-byte id (its cancel mark is removed).
        id: [u8; 16],
        /// Its dedup key, released if it still holds it.
        unique: Option<String>,
        /// Its field in the queue's open jobs, as for `Done`.
        open: Option<String>,
        /// What its waiters read (`store_result` job types).
        result: Option<StoredResult>,
    },
    /// Given up on: moved to the dead letters with its error.
    Dead {
        /// Its slot in the lease (1-based).
        slot: u32,
        /// The 16-byte id (zeros when the envelope was unreadable).
        id: [u8; 16],
        /// Its dedup key, released if it still holds it.
        unique: Option<String>,
        /// Its field in the queue's open jobs, as for `Done`.
        open: Option<String>,
        /// The envelope to store: attempt counted, stage stamps appended.
        envelope: Vec<u8>,
        /// The error, as JSON text.
        error: String,
        /// What its waiters read: its error, kept under its id
        /// (`store_result` job types).
        result: Option<StoredResult>,
    },
}

/// A job's result, kept for whoever waits on its id (`RedisStore::result`).
/// The bytes are opaque here: Python writes and reads them
/// (`conveyor/results.py`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResult {
    /// The job's 16-byte id, which names the key.
    pub id: [u8; 16],
    /// The result as stored.
    pub value: Vec<u8>,
    /// How long it is kept (ms, at least 1).
    pub ttl_ms: u64,
}

/// What one `settle` did; see `scripts/settle-11.lua`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settled {
    /// Jobs that left Redis as done.
    pub done: u64,
    /// Jobs scheduled for another attempt.
    pub retried: u64,
    /// Jobs moved to the dead letters.
    pub dead: u64,
    /// Records for slots no longer leased (the lease expired and was reaped).
    pub stale: u64,
    /// Jobs that left Redis cancelled.
    pub cancelled: u64,
}

impl FromRedisValue for Settled {
    fn from_redis_value(v: redis::Value) -> std::result::Result<Self, redis::ParsingError> {
        let (done, retried, dead, stale, cancelled) = FromRedisValue::from_redis_value(v)?;
        Ok(Settled {
            done,
            retried,
            dead,
            stale,
            cancelled,
        })
    }
}

impl RedisStore {
    /// Records how leased jobs ended, in one atomic step, and (unless
    /// `history` is off) keeps each job's end findable by its id.
    /// `minutes[i]` is the tally minute of `outcomes[i]`'s job
    /// (`tally::minute_of`); a job past the end of `minutes` is not tallied.
    pub fn settle(
        &mut self,
        keys: &QueueKeys,
        token: &str,
        outcomes: &[Settlement],
        minutes: &[u64],
        history: &History,
    ) -> Result<Settled> {
        match settle_call(keys, token, outcomes, minutes, history) {
            Some(call) => Ok(call.invoke(self.scripted()?)?),
            None => Ok(Settled::default()),
        }
    }

    /// [`settle`](Self::settle), then [`fetch`](Self::fetch) the next lease
    /// from the same queue, in one round trip (a pipeline, not a
    /// transaction: each script is atomic on its own, as when called apart).
    /// A server that lost its scripts is given them again and asked again
    /// for the part it refused, so neither part runs twice.
    pub fn settle_and_fetch(
        &mut self,
        keys: &QueueKeys,
        token: &str,
        outcomes: &[Settlement],
        minutes: &[u64],
        history: &History,
        next: &NextLease<'_>,
    ) -> Result<(Settled, Lease)> {
        let fetch = fetch_call(keys, next);
        let Some(settle) = settle_call(keys, token, outcomes, minutes, history) else {
            let reply = fetch.invoke(self.scripted()?)?;
            return Ok((Settled::default(), Lease::from_reply(next.token, reply)));
        };
        let mut packed = Vec::new();
        settle.packed(&mut packed);
        fetch.packed(&mut packed);
        let replies = self.scripted()?.req_packed_commands(&packed, 0, 2)?;
        let [settled, leased]: [redis::Value; 2] = replies.try_into().map_err(|r: Vec<_>| {
            Error::Internal(format!("a pipeline of 2 calls got {} replies", r.len()))
        })?;
        let settled = match settle.reply(settled) {
            Err(err) if is_no_script(&err) => settle.invoke(self.scripted()?)?,
            settled => settled?,
        };
        let leased = match fetch.reply(leased) {
            Err(err) if is_no_script(&err) => fetch.invoke(self.scripted()?)?,
            leased => leased?,
        };
        Ok((settled, Lease::from_reply(next.token, leased)))
    }
}

/// The `settle-11.lua` call recording `outcomes` (see
/// [`RedisStore::settle`]); `None` when there is nothing to record.
fn settle_call(
    keys: &QueueKeys,
    token: &str,
    outcomes: &[Settlement],
    minutes: &[u64],
    history: &History,
) -> Option<Call> {
    if outcomes.is_empty() {
        return None;
    }
    let mut call = Call::new(&scripts::SETTLE);
    call.key(keys.lease(token));
    // KEYS[12..]: a result key for each record that keeps one, and a
    // tally key for each minute record.
    let mut result_keys = 11;
    call.key(keys.leases())
        .key(keys.scheduled())
        .key(keys.dead())
        .key(keys.errors())
        .key(keys.unique())
        .key(keys.counts())
        .key(keys.progress())
        .key(keys.open())
        .key(keys.history(history.bucket_now()))
        .key(keys.cancelled())
        .arg(token)
        .arg(history.ttl_s())
        .arg(history.bucket_max());
    let mut minute_now = None;
    for (i, outcome) in outcomes.iter().enumerate() {
        let minute = minutes.get(i).copied();
        if minute.is_some() && minute != minute_now {
            minute_now = minute;
            result_keys += 1;
            call.key(keys.tally(minute.unwrap_or_default()))
                .arg("M")
                .arg(result_keys);
        }
        match outcome {
            Settlement::Done {
                slot,
                id,
                unique,
                open,
                result,
            } => {
                call.arg(if open.is_some() { "O" } else { "D" })
                    .arg(*slot)
                    .arg(id.as_ref().map_or(&[][..], |id| &id[..]))
                    .arg(unique.as_deref().unwrap_or(""));
                if let Some(open) = open {
                    call.arg(open);
                }
                keep(&mut call, keys, result, &mut result_keys);
            }
            Settlement::Retry {
                slot,
                id,
                envelope,
                delay_ms,
                error,
            } => {
                call.arg("R")
                    .arg(*slot)
                    .arg(&id[..])
                    .arg("")
                    .arg(envelope.as_slice())
                    .arg(*delay_ms)
                    .arg(error);
            }
            Settlement::Cancelled {
                slot,
                id,
                unique,
                open,
                result,
            } => {
                call.arg("C")
                    .arg(*slot)
                    .arg(&id[..])
                    .arg(unique.as_deref().unwrap_or(""))
                    .arg(open.as_deref().unwrap_or(""));
                keep(&mut call, keys, result, &mut result_keys);
            }
            Settlement::Dead {
                slot,
                id,
                unique,
                open,
                envelope,
                error,
                result,
            } => {
                call.arg("X")
                    .arg(*slot)
                    .arg(&id[..])
                    .arg(unique.as_deref().unwrap_or(""))
                    .arg(open.as_deref().unwrap_or(""))
                    .arg(envelope.as_slice())
                    .arg(error);
                keep(&mut call, keys, result, &mut result_keys);
            }
        }
    }
    Some(call)
}

impl RedisStore {
    /// The result kept for job `id` in this queue, if any (yet, or still).
    pub fn result(&mut self, keys: &QueueKeys, id: &[u8; 16]) -> Result<Option<Vec<u8>>> {
        Ok(redis::Cmd::get(keys.result(id)).query(self.connection())?)
    }
}

/// Adds the 'V' record that keeps `result` after the record it belongs to.
fn keep(call: &mut Call, keys: &QueueKeys, result: &Option<StoredResult>, result_keys: &mut usize) {
    if let Some(result) = result {
        *result_keys += 1;
        call.key(keys.result(&result.id))
            .arg("V")
            .arg(*result_keys)
            .arg(result.ttl_ms.max(1))
            .arg(result.value.as_slice());
    }
}
