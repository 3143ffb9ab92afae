//! The job state machine in Redis: fetch, heartbeat, release, reap and
//! replay (admission is in [`super::admission`], settling in
//! [`super::settlement`]), each one Lua script (see `docs/redis.md` for the states
//! and every transition).
//!
//! These are methods of [`RedisStore`] so that one connection serves a relay
//! thread or a worker thread; nothing here holds state between calls.

use std::time::Duration;

use redis::Cmd;

pub use super::settlement::{Settled, Settlement, StoredResult};

use super::keys::QueueKeys;
use super::scripts::{self, Call};
use super::RedisStore;
use crate::envelope::Envelope;
use crate::error::Result;

/// Most jobs one fetch may lease (the scripts refuse more).
pub const MAX_FETCH: usize = 1000;

/// How long an idle worker of several queues waits on each in turn on a
/// Redis Cluster (see [`RedisStore::wait_for_work`]).
pub const CLUSTER_WAIT_SLICE: Duration = Duration::from_millis(100);

/// Jobs leased to one worker by one fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The lease's token, unique per fetch.
    pub token: String,
    /// When the lease expires unless extended (ms since the epoch, Redis' clock).
    pub deadline_ms: u64,
    /// The leased envelopes; slot `i + 1` holds `jobs[i]`.
    pub jobs: Vec<Vec<u8>>,
    /// Slots of the jobs whose cancel was asked: settle them as cancelled.
    pub cancelled: Vec<u32>,
}

/// A lease to ask for: its token, at most how many jobs, for how long (ms).
#[derive(Debug, Clone, Copy)]
pub struct NextLease<'a> {
    /// The lease's token, unique per fetch.
    pub token: &'a str,
    /// Most jobs to lease (1 to [`MAX_FETCH`]; outside, the nearest).
    pub max: usize,
    /// How long the lease lasts unless extended (ms).
    pub lease_ms: u64,
}

/// What `fetch-6.lua` answers: the lease's deadline, envelopes, cancelled slots.
pub(crate) type LeaseReply = (u64, Vec<Vec<u8>>, Vec<u32>);

impl Lease {
    /// The lease `token` got, from its `fetch-6.lua` reply.
    pub(crate) fn from_reply(token: &str, (deadline_ms, jobs, cancelled): LeaseReply) -> Self {
        Lease {
            token: token.to_owned(),
            deadline_ms,
            jobs,
            cancelled,
        }
    }
}

/// The `fetch-6.lua` call asking for `next` from the queue of `keys`.
pub(crate) fn fetch_call(keys: &QueueKeys, next: &NextLease<'_>) -> Call {
    let mut call = Call::new(&scripts::FETCH);
    call.key(keys.ready())
        .key(keys.scheduled())
        .key(keys.leases())
        .key(keys.lease(next.token))
        .key(keys.wake())
        .key(keys.cancelled())
        .arg(next.token)
        .arg(next.max.clamp(1, MAX_FETCH))
        .arg(next.lease_ms);
    call
}

/// How many dead-lettered jobs a queue keeps, and for how long: the oldest
/// beyond either limit are forgotten with their error records as new ones
/// die, so a failure storm cannot fill Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadRetention {
    /// Most dead jobs kept.
    pub max_jobs: u64,
    /// Longest a dead job is kept.
    pub max_age: std::time::Duration,
}

/// Why dead jobs were forgotten, and the counter that says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forgotten {
    /// Past the retention, after new ones died (`dead_trimmed`).
    Trimmed,
    /// By an operator (`dead_purged`).
    Purged,
}

impl Forgotten {
    fn counter(self) -> &'static str {
        match self {
            Forgotten::Trimmed => "dead_trimmed",
            Forgotten::Purged => "dead_purged",
        }
    }
}

impl Default for DeadRetention {
    fn default() -> Self {
        DeadRetention {
            max_jobs: 100_000,
            max_age: std::time::Duration::from_secs(30 * 24 * 3600),
        }
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
        let next = NextLease {
            token,
            max,
            lease_ms,
        };
        let reply = fetch_call(keys, &next).invoke(self.scripted()?)?;
        Ok(Lease::from_reply(token, reply))
    }

    /// Redis' clock (ms since the epoch): the one clock workers share for
    /// lease deadlines, retries and periodic occurrences.
    pub fn now_ms(&mut self) -> Result<u64> {
        let (secs, micros): (u64, u64) = Cmd::new().arg("TIME").query(self.connection())?;
        Ok(secs * 1000 + micros / 1000)
    }

    /// Extends leases to `lease_ms` from now and records, per lease token,
    /// the slot of the job running now (0: none yet); returns the tokens no
    /// longer held.
    pub fn heartbeat(
        &mut self,
        keys: &QueueKeys,
        tokens: &[(String, u32)],
        lease_ms: u64,
    ) -> Result<Vec<String>> {
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let mut call = scripts::HEARTBEAT.key(keys.leases());
        call.key(keys.progress()).arg(lease_ms);
        for (token, slot) in tokens {
            call.arg(token).arg(*slot);
        }
        Ok(call.invoke(self.scripted()?)?)
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
            .key(keys.progress())
            .key(keys.open())
            .arg(token);
        for slot in sorted {
            call.arg(slot);
        }
        Ok(call.invoke(self.scripted()?)?)
    }

    /// Returns the jobs of up to `max_leases` expired leases to ready, with
    /// an attempt counted for each job that had started (the slots up to the
    /// last one its worker reported running, and at least the first);
    /// returns `(leases, jobs)` reaped.
    pub fn reap(&mut self, keys: &QueueKeys, max_leases: usize) -> Result<(u64, u64)> {
        let expired: Vec<String> = Cmd::new()
            .arg("ZRANGE")
            .arg(keys.leases())
            .arg("-inf")
            .arg(format!("({}", self.now_ms()?))
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(max_leases.max(1))
            .query(self.connection())?;
        if expired.is_empty() {
            return Ok((0, 0));
        }
        let mut call = scripts::REAP.key(keys.leases());
        call.key(keys.ready())
            .key(keys.counts())
            .key(keys.wake())
            .key(keys.progress());
        for token in &expired {
            call.key(keys.lease(token));
        }
        for token in &expired {
            call.arg(token);
        }
        Ok(call.invoke(self.scripted()?)?)
    }

    /// Forgets up to `max` (1 to 1000) dead-lettered jobs past `retention`
    /// (dead longer than its age, or the oldest beyond its count), oldest
    /// first, with their error records; returns how many, counted as `why`.
    pub fn purge_dead(
        &mut self,
        keys: &QueueKeys,
        retention: DeadRetention,
        max: usize,
        why: Forgotten,
    ) -> Result<u64> {
        Ok(scripts::PURGE_DEAD
            .key(keys.dead())
            .key(keys.errors())
            .key(keys.counts())
            .arg(retention.max_age.as_millis().min(u64::MAX as u128) as u64)
            .arg(retention.max_jobs)
            .arg(max.clamp(1, MAX_FETCH))
            .arg(why.counter())
            .invoke(self.scripted()?)?)
    }

    /// Moves up to `max` dead-lettered jobs back to ready, oldest first, each
    /// with a fresh set of attempts; a unique job takes its dedup key again,
    /// or stays dead if another job of its type holds the key now. Returns
    /// `(moved, kept)`.
    pub fn replay_dead(&mut self, keys: &QueueKeys, max: u64) -> Result<(u64, u64)> {
        let (mut moved, mut kept) = (0u64, 0u64);
        while moved + kept < max {
            let want = (max - moved - kept).min(MAX_FETCH as u64);
            // Jobs kept stay at the head of dead: read past them.
            let dead: Vec<Vec<u8>> = Cmd::new()
                .arg("ZRANGE")
                .arg(keys.dead())
                .arg(kept)
                .arg(kept + want - 1)
                .query(self.connection())?;
            if dead.is_empty() {
                break;
            }
            let (now_moved, now_kept) = self.replay_envelopes(keys, &dead)?;
            if now_moved + now_kept == 0 {
                break;
            }
            moved += now_moved;
            kept += now_kept;
        }
        Ok((moved, kept))
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
            .invoke(self.scripted()?)?;
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

    /// Which of `queues` a fetch would take jobs from now: a job ready, or
    /// a scheduled one due by Redis' clock (what the fetch script moves
    /// first). One round trip of plain reads for them all, so that a worker
    /// of many queues need not run the fetch script on each empty one; not
    /// on a Redis Cluster (the queues' keys sit on different nodes), where
    /// every queue is said to have work.
    pub fn with_work(&mut self, queues: &[&QueueKeys]) -> Result<Vec<bool>> {
        if self.is_cluster() {
            return Ok(vec![true; queues.len()]);
        }
        let mut pipe = redis::pipe();
        pipe.cmd("TIME");
        for keys in queues {
            pipe.cmd("LLEN").arg(keys.ready());
            pipe.cmd("ZRANGE")
                .arg(keys.scheduled())
                .arg(0)
                .arg(0)
                .arg("WITHSCORES");
        }
        let mut replies: Vec<redis::Value> = pipe.query(self.connection())?;
        if replies.len() != 1 + 2 * queues.len() {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Parse,
                "queue look: unexpected number of replies",
            ))
            .into());
        }
        let rest = replies.split_off(1);
        let (secs, micros): (u64, u64) =
            redis::from_redis_value(replies.remove(0)).map_err(redis::RedisError::from)?;
        let now_ms = (secs * 1000 + micros / 1000) as f64;
        let mut found = Vec::with_capacity(queues.len());
        let mut replies = rest.into_iter();
        while let (Some(ready), Some(first)) = (replies.next(), replies.next()) {
            let ready: u64 = redis::from_redis_value(ready).map_err(redis::RedisError::from)?;
            let first: Vec<(Vec<u8>, f64)> =
                redis::from_redis_value(first).map_err(redis::RedisError::from)?;
            found.push(ready > 0 || first.first().is_some_and(|(_, due)| *due <= now_ms));
        }
        Ok(found)
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
            let error: Option<String> = match crate::envelope::id_bytes(&envelope) {
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
