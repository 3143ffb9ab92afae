//! Admission: jobs entering a queue, from the relay (exactly once per Kafka
//! offset, behind each partition's fence) or from the direct path. Two ways
//! in, held to the same cases by the admission conformance tests: the
//! `admit-7.lua` script, and a Lua-free `MULTI`/`EXEC` for plain batches.

use redis::{Cmd, FromRedisValue};

use super::conn::RedisConn;
use super::keys::{open_field, open_prefix, unique_field, QueueKeys, OPEN_BLOCK};
use super::tally::{by_minute, minute_of_bytes, TALLY_TTL_S};
use super::{scripts, RedisStore};
use crate::envelope::Envelope;
use crate::error::{Error, Result};

/// One partition's records for [`RedisStore::relay_batches`], in offset order.
#[derive(Debug, Clone)]
pub struct Fenced<'a> {
    /// `"<topic>:<partition>"`: the field of the queue's fence hash.
    pub fence: String,
    /// The partition, whose open jobs the batch's jobs are counted in.
    pub partition: i32,
    /// The least offset the relay expects Redis to hold for the partition
    /// (-1: none); when Redis holds less, nothing is written and
    /// [`Admitted::behind`] says what it holds.
    pub expect: i64,
    /// The offset after the batch's last record.
    pub next_offset: i64,
    /// The records.
    pub jobs: &'a [Admission],
    /// Whether the jobs are counted in the queue's tallies (`tally.rs`).
    pub tally: bool,
}

/// A job on its way into a queue, with the envelope fields `admit` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// Kafka offset of the record (ignored on the direct path).
    pub offset: i64,
    /// Do not run before this time, in ms since the epoch (0: now).
    pub run_at_ms: u64,
    /// A unique job's field in the `unique` hash (`keys::unique_field`).
    pub unique: Option<String>,
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
            unique: decoded
                .dedup_key
                .as_deref()
                .map(|key| unique_field(&decoded.job_type, key)),
            envelope,
        }
    }
}

/// What one `admit` did; see `scripts/admit-7.lua`.
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
    /// Redis holds less of the partition than the relay expected (it went
    /// back in time, or lost the partition): nothing was written, and this
    /// is the offset it holds records up to (-1: none).
    pub behind: Option<i64>,
}

impl FromRedisValue for Admitted {
    fn from_redis_value(v: redis::Value) -> std::result::Result<Self, redis::ParsingError> {
        let (queued, scheduled, duplicates, skipped, behind, stored): (
            u64,
            u64,
            u64,
            u64,
            u8,
            i64,
        ) = FromRedisValue::from_redis_value(v)?;
        Ok(Admitted {
            queued,
            scheduled,
            duplicates,
            skipped,
            behind: (behind == 1).then_some(stored),
        })
    }
}

impl RedisStore {
    /// Admits jobs on the direct path (no Kafka, no fence): the same script
    /// the relay uses, so unique and delayed jobs behave the same way.
    /// `tally`: whether they are counted in the queue's tallies.
    pub fn admit(&mut self, keys: &QueueKeys, jobs: &[Admission], tally: bool) -> Result<Admitted> {
        let direct = Fenced {
            fence: String::new(),
            partition: 0,
            expect: -1,
            next_offset: 0,
            jobs,
            tally,
        };
        Ok(admit_command(keys, &direct).query(self.scripted()?)?)
    }

    /// Admits one partition's relayed records exactly once: records below
    /// the offset Redis holds for the batch's fence are skipped and the
    /// stored offset moves to its `next_offset`.
    pub fn relay_batch(&mut self, keys: &QueueKeys, batch: &Fenced<'_>) -> Result<Admitted> {
        if batch.fence.is_empty() {
            return Err(Error::InvalidJob(
                "a relayed batch needs a '<topic>:<partition>' fence".to_owned(),
            ));
        }
        Ok(self.relay_batches(keys, std::slice::from_ref(batch))?[0])
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
    /// `admit-7.lua` as before. Both write all of a batch or none of it.
    pub fn relay_batches(
        &mut self,
        keys: &QueueKeys,
        batches: &[Fenced<'_>],
    ) -> Result<Vec<Admitted>> {
        if let Some(admitted) = self.admit_plain(keys, batches)? {
            return Ok(admitted);
        }
        self.relay_batches_scripted(keys, batches)
    }

    /// [`RedisStore::relay_batches`] always through `admit-7.lua` (as on a
    /// Redis Cluster); the admission conformance tests hold the plain path
    /// to what this does.
    pub fn relay_batches_scripted(
        &mut self,
        keys: &QueueKeys,
        batches: &[Fenced<'_>],
    ) -> Result<Vec<Admitted>> {
        let commands = batches.iter().map(|b| admit_command(keys, b)).collect();
        self.scripted()?.pipeline(commands)
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
                        .all(|j| j.unique.is_none() && j.run_at_ms == 0)
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
        // Offsets ascend within a batch: its first record decides. A fence
        // behind what the relay expects is the script's to report.
        let behind = batches
            .iter()
            .zip(&stored)
            .any(|(b, s)| s.is_some_and(|s| b.jobs[0].offset < s) || s.unwrap_or(-1) < b.expect);
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
            for (field, n) in open_blocks(b.partition, b.jobs) {
                tx.cmd("HINCRBY")
                    .arg(keys.open())
                    .arg(field)
                    .arg(n)
                    .ignore();
            }
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
        let jobs = batches
            .iter()
            .filter(|b| b.tally)
            .flat_map(|b| b.jobs.iter());
        for (minute, n) in tally_minutes(jobs) {
            tx.cmd("HINCRBY")
                .arg(keys.tally(minute))
                .arg("relayed")
                .arg(n)
                .ignore();
            tx.cmd("EXPIRE")
                .arg(keys.tally(minute))
                .arg(TALLY_TTL_S)
                .ignore();
        }
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
}

/// How many of `jobs` fall in each minute of the tallies (`tally.rs`),
/// read from their envelopes' ids as `admit-7.lua` reads them.
fn tally_minutes<'a>(jobs: impl IntoIterator<Item = &'a Admission>) -> Vec<(u64, u64)> {
    by_minute(jobs.into_iter().filter_map(|j| {
        let id: [u8; 16] = crate::envelope::id_bytes(&j.envelope)?.try_into().ok()?;
        Some(minute_of_bytes(&id))
    }))
}

/// How many of `jobs` (one partition's, in offset order) fall in each block
/// of the open-jobs hash, as `admit-7.lua` counts them.
fn open_blocks(partition: i32, jobs: &[Admission]) -> Vec<(String, usize)> {
    let mut blocks: Vec<(i64, usize)> = Vec::new();
    for job in jobs {
        let block = job.offset.div_euclid(OPEN_BLOCK);
        match blocks.last_mut() {
            Some((b, n)) if *b == block => *n += 1,
            _ => blocks.push((block, 1)),
        }
    }
    blocks
        .into_iter()
        .map(|(block, n)| (open_field(partition, block * OPEN_BLOCK), n))
        .collect()
}

/// The `admit` script call for a batch (also used in the relay's pipelines);
/// an empty fence is the direct path.
pub(crate) fn admit_command(keys: &QueueKeys, batch: &Fenced<'_>) -> Cmd {
    let minutes = if batch.tally {
        tally_minutes(batch.jobs)
    } else {
        Vec::new()
    };
    let mut cmd = Cmd::new();
    cmd.arg("EVALSHA")
        .arg(scripts::ADMIT.get_hash())
        .arg(7 + minutes.len())
        .arg(keys.ready())
        .arg(keys.relayed())
        .arg(keys.scheduled())
        .arg(keys.unique())
        .arg(keys.counts())
        .arg(keys.wake())
        .arg(keys.open());
    for (minute, _) in &minutes {
        cmd.arg(keys.tally(*minute));
    }
    cmd.arg(&batch.fence)
        .arg(batch.next_offset)
        .arg(batch.expect)
        .arg(open_prefix(batch.partition));
    for job in batch.jobs {
        cmd.arg(job.offset)
            .arg(job.run_at_ms)
            .arg(job.unique.as_deref().unwrap_or(""))
            .arg(job.envelope.as_slice());
    }
    cmd
}
