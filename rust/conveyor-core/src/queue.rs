//! The job state machine in Redis: admit, fetch, settle, heartbeat, release,
//! reap and replay, each one Lua script (see `docs/redis.md` for the states
//! and every transition).
//!
//! These are methods of [`RedisStore`] so that one connection serves a relay
//! thread or a worker thread; nothing here holds state between calls.

use std::time::Duration;

use redis::{Cmd, FromRedisValue};

use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::keys::QueueKeys;
use crate::redis_conn::RedisConn;
use crate::redis_store::{scripts, RedisStore};

/// Most jobs one fetch may lease (the scripts refuse more).
pub const MAX_FETCH: usize = 1000;

/// How long an idle worker of several queues waits on each in turn on a
/// Redis Cluster (see [`RedisStore::wait_for_work`]).
pub const CLUSTER_WAIT_SLICE: Duration = Duration::from_millis(100);

/// One partition's records for [`RedisStore::relay_batches`], in offset order.
#[derive(Debug, Clone)]
pub struct Fenced<'a> {
    /// `"<topic>:<partition>"`: the field of the queue's fence hash.
    pub fence: String,
    /// The offset after the batch's last record.
    pub next_offset: i64,
    /// The records.
    pub jobs: &'a [Admission],
}

/// A job on its way into a queue, with the envelope fields `admit` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// Kafka offset of the record (ignored on the direct path).
    pub offset: i64,
    /// Do not run before this time, in ms since the epoch (0: now).
    pub run_at_ms: u64,
    /// The job's dedup key, if it is a unique job.
    pub dedup_key: Option<String>,
    /// The encoded envelope, stored as is.
    pub envelope: Vec<u8>,
}

impl Admission {
    /// The admission for an envelope, read from its encoded bytes; refuses
    /// bytes that are not a valid envelope.
    pub fn of(offset: i64, envelope: Vec<u8>) -> Result<Admission> {
        let decoded = Envelope::decode(&envelope)?;
        Ok(Admission::from_decoded(offset, &decoded, envelope))
    }

    /// The admission for bytes already decoded as `decoded`.
    pub fn from_decoded(offset: i64, decoded: &Envelope, envelope: Vec<u8>) -> Admission {
        Admission {
            offset,
            run_at_ms: decoded.run_at_us.map_or(0, |us| us / 1000),
            dedup_key: decoded.dedup_key.clone(),
            envelope,
        }
    }
}

/// What one `admit` did; see `scripts/admit-6.lua`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Admitted {
    /// Appended to the ready list.
    pub queued: u64,
    /// Waiting in the scheduled set for their run-at time.
    pub scheduled: u64,
    /// Dropped: a job with the same dedup key is queued, scheduled or running.
    pub duplicates: u64,
    /// Below the fence: Redis had them already.
    pub skipped: u64,
}

impl FromRedisValue for Admitted {
    fn from_redis_value(v: redis::Value) -> std::result::Result<Self, redis::ParsingError> {
        let (queued, scheduled, duplicates, skipped) = FromRedisValue::from_redis_value(v)?;
        Ok(Admitted {
            queued,
            scheduled,
            duplicates,
            skipped,
        })
    }
}

/// Jobs leased to one worker by one fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The lease's token, unique per fetch.
    pub token: String,
    /// When the lease expires unless extended (ms since the epoch, Redis' clock).
    pub deadline_ms: u64,
    /// The leased envelopes; slot `i + 1` holds `jobs[i]`.
    pub jobs: Vec<Vec<u8>>,
}

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
        dedup_key: Option<String>,
    },
    /// Failed, to be tried again at `due_ms`.
    Retry {
        /// Its slot in the lease (1-based).
        slot: u32,
        /// The 16-byte id.
        id: [u8; 16],
        /// The envelope to store: attempt counted, stage stamps appended.
        envelope: Vec<u8>,
        /// When to try again (ms since the epoch).
        due_ms: u64,
        /// The error, as JSON text.
        error: String,
    },
    /// Given up on: moved to the dead letters with its error.
    Dead {
        /// Its slot in the lease (1-based).
        slot: u32,
        /// The 16-byte id (zeros when the envelope was unreadable).
        id: [u8; 16],
        /// Its dedup key, released if it still holds it.
        dedup_key: Option<String>,
        /// The envelope to store: attempt counted, stage stamps appended.
        envelope: Vec<u8>,
        /// The error, as JSON text.
        error: String,
    },
}

/// What one `settle` did; see `scripts/settle-7.lua`.
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
}

impl FromRedisValue for Settled {
    fn from_redis_value(v: redis::Value) -> std::result::Result<Self, redis::ParsingError> {
        let (done, retried, dead, stale) = FromRedisValue::from_redis_value(v)?;
        Ok(Settled {
            done,
            retried,
            dead,
            stale,
        })
    }
}

/// How many jobs a queue holds in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    /// State `queued`: in the ready list.
    pub queued: u64,
    /// State `scheduled`: waiting for a time.
    pub scheduled: u64,
    /// Leases outstanding (each holds one or more `running` jobs).
    pub leases: u64,
    /// State `dead`.
    pub dead: u64,
}

/// A dead-lettered job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The envelope, with its stage stamps.
    pub envelope: Vec<u8>,
    /// When it was dead-lettered (ms since the epoch).
    pub at_ms: f64,
    /// The last error recorded for it (JSON), if any.
    pub error: Option<String>,
}

impl RedisStore {
    /// Admits jobs on the direct path (no Kafka, no fence): the same script
    /// the relay uses, so unique and delayed jobs behave the same way.
    pub fn admit(&mut self, keys: &QueueKeys, jobs: &[Admission]) -> Result<Admitted> {
        Ok(admit_command(keys, "", 0, jobs).query(self.connection())?)
    }

    /// Admits one partition's relayed records exactly once: records below
    /// the offset Redis holds for `fence` (`"<topic>:<partition>"`) are skipped
    /// and the stored offset moves to `next_offset`.
    pub fn relay_batch(
        &mut self,
        keys: &QueueKeys,
        fence: &str,
        next_offset: i64,
        jobs: &[Admission],
    ) -> Result<Admitted> {
        if fence.is_empty() {
            return Err(Error::InvalidJob(
                "a relayed batch needs a '<topic>:<partition>' fence".to_owned(),
            ));
        }
        let batch = Fenced {
            fence: fence.to_owned(),
            next_offset,
            jobs,
        };
        Ok(self.relay_batches(keys, std::slice::from_ref(&batch))?[0])
    }

    /// [`RedisStore::relay_batch`] for several partitions of one queue in
    /// one go; one [`Admitted`] per batch, in order.
    ///
    /// Most batches are plain (no dedup key, no run-at time) and at or past
    /// their fence; those are written without Lua, in one `MULTI`/`EXEC`
    /// under `WATCH` of the queue's fence hash: Redis runs a script's
    /// arguments through Lua at about 1 µs per job, five times a plain
    /// `RPUSH`, and that bounded the relay. Everything else (unique or
    /// delayed jobs, a batch behind its fence after a crash or rebalance, a
    /// fence moved by another relay meanwhile, a Redis Cluster) goes through
    /// `admit-6.lua` as before. Both write all of a batch or none of it.
    pub fn relay_batches(
        &mut self,
        keys: &QueueKeys,
        batches: &[Fenced<'_>],
    ) -> Result<Vec<Admitted>> {
        if let Some(admitted) = self.admit_plain(keys, batches)? {
            return Ok(admitted);
        }
        let commands = batches
            .iter()
            .map(|b| admit_command(keys, &b.fence, b.next_offset, b.jobs))
            .collect();
        self.connection().pipeline(commands)
    }

    /// The Lua-free path of [`RedisStore::relay_batches`]; `None` when the
    /// batches must go through the script.
    fn admit_plain(
        &mut self,
        keys: &QueueKeys,
        batches: &[Fenced<'_>],
    ) -> Result<Option<Vec<Admitted>>> {
        let plain = !batches.is_empty()
            && batches.iter().all(|b| {
                !b.jobs.is_empty()
                    && b.jobs
                        .iter()
                        .all(|j| j.dedup_key.is_none() && j.run_at_ms == 0)
            });
        let RedisConn::Server(conn) = self.connection() else {
            return Ok(None);
        };
        if !plain {
            return Ok(None);
        }
        let relayed = keys.relayed();
        let mut read = redis::pipe();
        read.cmd("WATCH").arg(&relayed).ignore();
        read.cmd("HMGET").arg(&relayed);
        for b in batches {
            read.arg(&b.fence);
        }
        let (stored,): (Vec<Option<i64>>,) = read.query(conn)?;
        // Offsets ascend within a batch: its first record decides.
        let behind = batches
            .iter()
            .zip(&stored)
            .any(|(b, s)| s.is_some_and(|s| b.jobs[0].offset < s));
        if behind {
            redis::cmd("UNWATCH").exec(conn)?;
            return Ok(None);
        }
        let mut tx = redis::pipe();
        tx.atomic();
        let mut total = 0;
        for b in batches {
            tx.cmd("RPUSH").arg(keys.ready());
            for job in b.jobs {
                tx.arg(job.envelope.as_slice());
            }
            tx.ignore();
            tx.cmd("HSET")
                .arg(&relayed)
                .arg(&b.fence)
                .arg(b.next_offset)
                .ignore();
            total += b.jobs.len();
        }
        // As the script does: wake one idle worker, count what came in.
        tx.cmd("RPUSH").arg(keys.wake()).arg(1).ignore();
        tx.cmd("LTRIM").arg(keys.wake()).arg(-1).arg(-1).ignore();
        tx.cmd("HINCRBY")
            .arg(keys.counts())
            .arg("admitted")
            .arg(total)
            .ignore();
        // EXEC answers nil when the fence hash changed after WATCH: another
        // relay wrote this queue meanwhile, and the script sorts it out.
        let done: Option<()> = tx.query(conn)?;
        Ok(done.map(|()| {
            batches
                .iter()
                .map(|b| Admitted {
                    queued: b.jobs.len() as u64,
                    ..Admitted::default()
                })
                .collect()
        }))
    }

    /// Leases up to `max` jobs (1 to [`MAX_FETCH`]) for `lease_ms` under
    /// `token`, promoting due scheduled jobs first. An empty lease when
    /// nothing is ready.
    pub fn fetch(
        &mut self,
        keys: &QueueKeys,
        token: &str,
        max: usize,
        lease_ms: u64,
    ) -> Result<Lease> {
        let (deadline_ms, jobs): (u64, Vec<Vec<u8>>) = scripts::FETCH
            .key(keys.ready())
            .key(keys.scheduled())
            .key(keys.leases())
            .key(keys.lease(token))
            .key(keys.wake())
            .arg(token)
            .arg(max.clamp(1, MAX_FETCH))
            .arg(lease_ms)
            .invoke(self.connection())?;
        Ok(Lease {
            token: token.to_owned(),
            deadline_ms,
            jobs,
        })
    }

    /// Records how leased jobs ended, in one atomic step.
    pub fn settle(
        &mut self,
        keys: &QueueKeys,
        token: &str,
        outcomes: &[Settlement],
    ) -> Result<Settled> {
        if outcomes.is_empty() {
            return Ok(Settled::default());
        }
        let mut call = scripts::SETTLE.key(keys.lease(token));
        call.key(keys.leases())
            .key(keys.scheduled())
            .key(keys.dead())
            .key(keys.errors())
            .key(keys.unique())
            .key(keys.counts())
            .arg(token);
        for outcome in outcomes {
            match outcome {
                Settlement::Done {
                    slot,
                    id,
                    dedup_key,
                } => {
                    call.arg("D")
                        .arg(*slot)
                        .arg(id.as_ref().map_or(&[][..], |id| &id[..]))
                        .arg(dedup_key.as_deref().unwrap_or(""));
                }
                Settlement::Retry {
                    slot,
                    id,
                    envelope,
                    due_ms,
                    error,
                } => {
                    call.arg("R")
                        .arg(*slot)
                        .arg(&id[..])
                        .arg("")
                        .arg(envelope.as_slice())
                        .arg(*due_ms)
                        .arg(error);
                }
                Settlement::Dead {
                    slot,
                    id,
                    dedup_key,
                    envelope,
                    error,
                } => {
                    call.arg("X")
                        .arg(*slot)
                        .arg(&id[..])
                        .arg(dedup_key.as_deref().unwrap_or(""))
                        .arg(envelope.as_slice())
                        .arg(error);
                }
            }
        }
        Ok(call.invoke(self.connection())?)
    }

    /// Extends leases to `lease_ms` from now; returns the tokens no longer held.
    pub fn heartbeat(
        &mut self,
        keys: &QueueKeys,
        tokens: &[String],
        lease_ms: u64,
    ) -> Result<Vec<String>> {
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let mut call = scripts::HEARTBEAT.key(keys.leases());
        call.arg(lease_ms);
        for token in tokens {
            call.arg(token);
        }
        Ok(call.invoke(self.connection())?)
    }

    /// Gives unstarted jobs of a lease back to the head of ready, not counted
    /// as an attempt; returns how many went back.
    pub fn release(&mut self, keys: &QueueKeys, token: &str, slots: &[u32]) -> Result<u64> {
        if slots.is_empty() {
            return Ok(0);
        }
        let mut sorted = slots.to_vec();
        sorted.sort_unstable();
        let mut call = scripts::RELEASE.key(keys.lease(token));
        call.key(keys.leases())
            .key(keys.ready())
            .key(keys.wake())
            .arg(token);
        for slot in sorted {
            call.arg(slot);
        }
        Ok(call.invoke(self.connection())?)
    }

    /// Returns the jobs of up to `max_leases` expired leases to ready, each
    /// with an attempt counted; returns `(leases, jobs)` reaped.
    pub fn reap(&mut self, keys: &QueueKeys, max_leases: usize) -> Result<(u64, u64)> {
        let expired: Vec<String> = Cmd::new()
            .arg("ZRANGE")
            .arg(keys.leases())
            .arg("-inf")
            .arg(format!("({}", redis_now_ms(self)?))
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(max_leases.max(1))
            .query(self.connection())?;
        if expired.is_empty() {
            return Ok((0, 0));
        }
        let mut call = scripts::REAP.key(keys.leases());
        call.key(keys.ready()).key(keys.counts()).key(keys.wake());
        for token in &expired {
            call.key(keys.lease(token));
        }
        for token in &expired {
            call.arg(token);
        }
        Ok(call.invoke(self.connection())?)
    }

    /// Moves up to `max` dead-lettered jobs (1 to 1000) back to ready with a
    /// fresh set of attempts; returns how many moved.
    pub fn replay_dead(&mut self, keys: &QueueKeys, max: usize) -> Result<u64> {
        Ok(scripts::REPLAY_DEAD
            .key(keys.dead())
            .key(keys.ready())
            .arg(max.clamp(1, MAX_FETCH))
            .invoke(self.connection())?)
    }

    /// Enqueues occurrence `occurrence_ms` of the periodic schedule `name`
    /// unless it (or a later one) was enqueued before; true if this call did.
    pub fn enqueue_occurrence(
        &mut self,
        keys: &QueueKeys,
        name: &str,
        occurrence_ms: u64,
        envelope: &[u8],
    ) -> Result<bool> {
        Envelope::decode(envelope)?;
        let enqueued: i64 = scripts::PERIODIC
            .key(keys.periodic())
            .key(keys.ready())
            .key(keys.wake())
            .arg(name)
            .arg(occurrence_ms)
            .arg(envelope)
            .invoke(self.connection())?;
        Ok(enqueued == 1)
    }

    /// Blocks until one of `queues` signals new jobs or `timeout` passes;
    /// true if woken. Idle workers wait here instead of polling.
    ///
    /// On a Redis Cluster one `BLPOP` cannot span the slots of several queues,
    /// so the wait goes round the queues, [`CLUSTER_WAIT_SLICE`] on each: a
    /// job queued meanwhile waits at most one round for an idle worker.
    pub fn wait_for_work(&mut self, queues: &[&QueueKeys], timeout: Duration) -> Result<bool> {
        let blpop = |keys: &[&QueueKeys], wait: Duration| {
            let mut cmd = Cmd::new();
            cmd.arg("BLPOP");
            for k in keys {
                cmd.arg(k.wake());
            }
            cmd.arg(wait.as_secs_f64());
            cmd
        };
        if !self.is_cluster() || queues.len() < 2 {
            let woken: Option<(String, String)> =
                blpop(queues, timeout).query(self.connection())?;
            return Ok(woken.is_some());
        }
        let deadline = std::time::Instant::now() + timeout;
        for keys in queues.iter().cycle() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            // BLPOP's smallest timeout is 1 ms; 0 would mean forever.
            let wait = left.min(CLUSTER_WAIT_SLICE).max(Duration::from_millis(1));
            let woken: Option<(String, String)> =
                blpop(std::slice::from_ref(keys), wait).query(self.connection())?;
            if woken.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// How many jobs the queue holds in each state.
    pub fn depth(&mut self, keys: &QueueKeys) -> Result<Depth> {
        let (queued, scheduled, leases, dead) = redis::pipe()
            .cmd("LLEN")
            .arg(keys.ready())
            .cmd("ZCARD")
            .arg(keys.scheduled())
            .cmd("ZCARD")
            .arg(keys.leases())
            .cmd("ZCARD")
            .arg(keys.dead())
            .query(self.connection())?;
        Ok(Depth {
            queued,
            scheduled,
            leases,
            dead,
        })
    }

    /// The queue's counters (`done`, `retried`, `dead`, `reaped`, `duplicates`).
    pub fn counts(&mut self, keys: &QueueKeys) -> Result<Vec<(String, u64)>> {
        Ok(Cmd::hgetall(keys.counts()).query(self.connection())?)
    }

    /// The oldest `max` dead letters with their last errors.
    pub fn dead_letters(&mut self, keys: &QueueKeys, max: usize) -> Result<Vec<DeadLetter>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let entries: Vec<(Vec<u8>, f64)> =
            Cmd::zrange_withscores(keys.dead(), 0, max as isize - 1).query(self.connection())?;
        let mut out = Vec::with_capacity(entries.len());
        for (envelope, at_ms) in entries {
            let error: Option<String> = match envelope.get(4..20) {
                Some(id) => Cmd::hget(keys.errors(), id).query(self.connection())?,
                None => None,
            };
            out.push(DeadLetter {
                envelope,
                at_ms,
                error,
            });
        }
        Ok(out)
    }
}

/// Redis' clock in ms: lease deadlines are kept by it, never by a worker's.
fn redis_now_ms(store: &mut RedisStore) -> Result<u64> {
    let (secs, micros): (u64, u64) = Cmd::new().arg("TIME").query(store.connection())?;
    Ok(secs * 1000 + micros / 1000)
}

/// The `admit` script call for a batch (also used in the relay's pipelines).
pub(crate) fn admit_command(
    keys: &QueueKeys,
    fence: &str,
    next_offset: i64,
    jobs: &[Admission],
) -> Cmd {
    let mut cmd = Cmd::new();
    cmd.arg("EVALSHA")
        .arg(scripts::ADMIT.get_hash())
        .arg(6)
        .arg(keys.ready())
        .arg(keys.relayed())
        .arg(keys.scheduled())
        .arg(keys.unique())
        .arg(keys.counts())
        .arg(keys.wake())
        .arg(fence)
        .arg(next_offset);
    for job in jobs {
        cmd.arg(job.offset)
            .arg(job.run_at_ms)
            .arg(job.dedup_key.as_deref().unwrap_or(""))
            .arg(job.envelope.as_slice());
    }
    cmd
}
