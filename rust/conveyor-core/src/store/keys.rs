//! The Redis key schema: every key Conveyor writes is built here.
//!
//! All keys of one queue share the hash tag `{<queue>}`, so a Redis Cluster
//! puts them in one slot and a script touching several of them stays atomic.
//! The full schema is written down in `docs/redis.md`.

use crate::error::{Error, Result};

/// Prefix of every key Conveyor owns, so a shared Redis shows whose keys these are.
pub const PREFIX: &str = "cv";

/// The keys of one queue, under an optional namespace (tests and tenants).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueKeys {
    base: String,
}

impl QueueKeys {
    /// Keys for `queue`; `namespace` (if not empty) keeps separate users of one
    /// Redis apart. Both follow the job-type naming rule.
    pub fn new(namespace: &str, queue: &str) -> Result<Self> {
        validate_name("queue", queue)?;
        let base = if namespace.is_empty() {
            format!("{PREFIX}:{{{queue}}}")
        } else {
            validate_name("namespace", namespace)?;
            format!("{PREFIX}:{namespace}:{{{queue}}}")
        };
        Ok(Self { base })
    }

    /// List of encoded envelopes ready to run, oldest first.
    pub fn ready(&self) -> String {
        format!("{}:ready", self.base)
    }

    /// Hash of `<topic>:<partition>` to the next Kafka offset to relay: what
    /// the relay has written into this queue, kept in the same atomic step.
    pub fn relayed(&self) -> String {
        format!("{}:relayed", self.base)
    }

    /// Sorted set of envelopes waiting for a time (delayed jobs, retries),
    /// scored by when they are due (ms since the epoch).
    pub fn scheduled(&self) -> String {
        format!("{}:scheduled", self.base)
    }

    /// Sorted set of lease tokens scored by their deadline (ms since the epoch).
    pub fn leases(&self) -> String {
        format!("{}:leases", self.base)
    }

    /// Hash of slot number to envelope: the jobs of one lease still running.
    pub fn lease(&self, token: &str) -> String {
        format!("{}:lease:{token}", self.base)
    }

    /// Sorted set of dead-lettered envelopes scored by when they died (ms).
    pub fn dead(&self) -> String {
        format!("{}:dead", self.base)
    }

    /// Hash of job id (16 bytes) to the last error of a job that failed.
    pub fn errors(&self) -> String {
        format!("{}:errors", self.base)
    }

    /// Hash of dedup key to the id of the job holding it (unique jobs).
    pub fn unique(&self) -> String {
        format!("{}:unique", self.base)
    }

    /// Hash of counter name (`admitted`, `done`, `retried`, `dead`, `reaped`,
    /// `duplicates`) to a count since the queue was created.
    pub fn counts(&self) -> String {
        format!("{}:counts", self.base)
    }

    /// Hash of periodic schedule name to the last occurrence enqueued (ms).
    pub fn periodic(&self) -> String {
        format!("{}:periodic", self.base)
    }

    /// List holding at most one token: idle workers block on it (`BLPOP`)
    /// and whatever queues jobs pushes one, so nobody polls an empty queue.
    pub fn wake(&self) -> String {
        format!("{}:wake", self.base)
    }

    /// Hash: lease token -> the slot its worker last reported running, so
    /// that the reaper charges an attempt only to jobs that had started.
    pub fn progress(&self) -> String {
        format!("{}:progress", self.base)
    }

    /// Hash: `<partition>:<block>` -> how many jobs relayed from that block
    /// of [`OPEN_BLOCK`] offsets have not finished. The lowest open block is
    /// the partition's watermark, committed to Kafka: what a relay re-reads
    /// after Redis is lost (docs/recovery.md).
    pub fn open(&self) -> String {
        format!("{}:open", self.base)
    }

    /// Hash: job id -> how it ended, for the jobs that ended in one window of
    /// [`super::history::BUCKET_S`] seconds (`bucket` = Unix seconds / that);
    /// expires by itself (`history.rs`).
    pub fn history(&self, bucket: u64) -> String {
        format!("{}:history:{bucket}", self.base)
    }

    /// Sorted set: job id (16 bytes) -> when its cancel was asked (ms): the
    /// cancels waiting for their jobs (`cancels.rs`).
    pub fn cancelled(&self) -> String {
        format!("{}:cancelled", self.base)
    }

    /// Hash: Kafka partition -> the last canary job that ran from it
    /// (JSON: when it was sent, written to Kafka, relayed, started), written
    /// by workers, read by `conveyor status` and the canary sender.
    pub fn canaries(&self) -> String {
        format!("{}:canaries", self.base)
    }

    /// Hash: how many jobs enqueued in `minute` (Unix minutes, from the job
    /// id's time) each hop counted: `sent`, `relayed`, `direct`, `ended`
    /// (`tally.rs`); expires by itself.
    pub fn tally(&self, minute: u64) -> String {
        format!("{}:tally:{minute}", self.base)
    }

    /// String: the result of job `id` (`store_result` job types), kept for
    /// its time to live (`settlement.rs`).
    pub fn result(&self, id: &[u8; 16]) -> String {
        format!("{}:result:{}", self.base, crate::JobId(*id))
    }

    /// Every key of the queue that is not per lease (nor a history window,
    /// which expires by itself).
    pub fn all(&self) -> [String; 12] {
        [
            self.ready(),
            self.relayed(),
            self.scheduled(),
            self.leases(),
            self.dead(),
            self.errors(),
            self.unique(),
            self.counts(),
            self.periodic(),
            self.wake(),
            self.progress(),
            self.open(),
        ]
    }
}

/// A unique job's field in its queue's `unique` hash: its job type, a space
/// (no job type has one) and its dedup key, so that two job types never drop
/// each other's jobs for sharing a key.
pub fn unique_field(job_type: &str, dedup_key: &str) -> String {
    format!("{job_type} {dedup_key}")
}

/// The hash of job types that applications publish and the gate reads:
/// field = job type name, value = JSON `{"queue": …, "max_attempts": …, …}`.
pub fn registry_key(namespace: &str) -> Result<String> {
    namespaced(namespace, "registry")
}

/// The hash of relay controls (rate limits and pauses per topic) that every
/// relay of a namespace watches.
pub fn relay_control_key(namespace: &str) -> Result<String> {
    namespaced(namespace, "relay:control")
}

/// The hash of relay states (relay id -> JSON: partitions and their lag,
/// counters, guards, controls) that relays publish each second.
pub fn relay_status_key(namespace: &str) -> Result<String> {
    namespaced(namespace, "relay:status")
}

/// The hash of job type routes set at run time (`conveyor route`), which
/// producers re-read each second: field = job type, value = JSON
/// `{"kafka_percent": 0..100, "double_write": bool}`.
pub fn routes_key(namespace: &str) -> Result<String> {
    namespaced(namespace, "routes")
}

/// The list recording the changes of a control hash (`relay_control_key`
/// or `routes_key`), newest first, as `control-2.lua` writes them. Its
/// hash tag is the control hash's name, so both live in one cluster slot
/// and one script changes both.
pub fn history_key(control_key: &str) -> String {
    format!("{{{control_key}}}:history")
}

/// How many changes each control history keeps.
pub const HISTORY_LEN: usize = 1000;

/// A namespace-wide key (not tied to one queue): `cv:[<ns>:]<suffix>`.
fn namespaced(namespace: &str, suffix: &str) -> Result<String> {
    if namespace.is_empty() {
        Ok(format!("{PREFIX}:{suffix}"))
    } else {
        validate_name("namespace", namespace)?;
        Ok(format!("{PREFIX}:{namespace}:{suffix}"))
    }
}

/// The field of a partition in its queue's fence hash ([`QueueKeys::relayed`]).
pub fn fence_field(topic: &str, partition: i32) -> String {
    format!("{topic}:{partition}")
}

/// Offsets per block of a partition in a queue's open-jobs hash
/// ([`QueueKeys::open`]): a block is counted, not each job, so admitting a
/// batch adds one or two counters. A block holding one unfinished job keeps
/// its whole block (and everything after it) to be relayed again after a
/// total loss of Redis. `admit-7.lua` divides by the same number.
pub const OPEN_BLOCK: i64 = 1024;

/// What starts a partition's fields in [`QueueKeys::open`]: `"<partition>:"`.
pub fn open_prefix(partition: i32) -> String {
    format!("{partition}:")
}

/// The field in [`QueueKeys::open`] counting the job relayed from `offset`
/// of `partition`.
pub fn open_field(partition: i32, offset: i64) -> String {
    format!("{partition}:{}", offset.div_euclid(OPEN_BLOCK))
}

/// A string written once per Redis store (`SET NX`): a relay that sees it
/// change knows it now writes to another store (a wiped or replaced Redis),
/// and relays every partition it owns again from where that store ends.
pub fn generation_key(namespace: &str) -> Result<String> {
    namespaced(namespace, "generation")
}

/// Checks a queue or namespace name: a letter, then letters, digits and `_ . -`, at
/// most 100 bytes, so that they are valid in Kafka topic names too.
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    let mut bytes = name.bytes();
    let ok = name.len() <= 100
        && bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidJob(format!(
            "{what} name {name:?} must be 1 to 100 characters: a letter, then letters, digits and _ . -"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_a_queue_share_one_hash_tag() {
        let keys = QueueKeys::new("t1", "emails").unwrap();
        assert_eq!(keys.ready(), "cv:t1:{emails}:ready");
        assert_eq!(
            QueueKeys::new("", "emails").unwrap().ready(),
            "cv:{emails}:ready"
        );
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(QueueKeys::new("", "has{brace}").is_err());
        assert!(QueueKeys::new("bad ns", "q").is_err());
        assert!(QueueKeys::new("", "no:colons").is_err());
        assert!(QueueKeys::new("", &"q".repeat(101)).is_err());
    }
}
