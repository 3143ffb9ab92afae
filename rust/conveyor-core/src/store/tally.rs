//! Counts per hop, for reconciliation: how many jobs enqueued in each minute
//! (the minute of the job id's time, which every hop can read) producers had
//! acknowledged by Kafka (`sent`), the relay admitted from Kafka
//! (`relayed`, duplicates dropped by design included), the direct path
//! admitted (`direct`), and workers ended as done, dead or cancelled
//! (`ended`). A minute whose `sent` exceeds its `relayed` once the relay has
//! nothing left to read is jobs lost between the producer and Redis.
//!
//! `relayed`, `direct` and `ended` are counted inside the scripts that make
//! the change (`admit-7.lua`, `settle-11.lua`, and the relay's `MULTI`), so
//! they are exact and roll back with Redis: a restored Redis holds the
//! counts of the jobs it holds, and the relay's second pass counts again
//! only what it writes again. `sent` is added by producers after Kafka's
//! acknowledgement (`tally-1.lua`), so a producer that dies before adding
//! undercounts it; that can hide a loss in its last second, never invent
//! one.

use std::collections::BTreeMap;

use super::keys::QueueKeys;
use super::{scripts, RedisStore};
use crate::error::Result;
use crate::id::JobId;

/// How long a minute's counts are kept after their last change (s). Also in
/// `admit-7.lua`, `settle-11.lua` and `tally-1.lua` (held by a test below).
pub const TALLY_TTL_S: u64 = 2 * 24 * 3600;

/// The minute a job is counted in: its id's time in Unix minutes.
pub fn minute_of(id: &JobId) -> u64 {
    id.timestamp_ms() / 60_000
}

/// The minute of an id's 16 bytes; the same as [`minute_of`].
pub fn minute_of_bytes(id: &[u8; 16]) -> u64 {
    minute_of(&JobId(*id))
}

/// Jobs per minute, ascending.
pub fn by_minute(minutes: impl IntoIterator<Item = u64>) -> Vec<(u64, u64)> {
    let mut counts = BTreeMap::new();
    for m in minutes {
        *counts.entry(m).or_insert(0u64) += 1;
    }
    counts.into_iter().collect()
}

/// One minute's counts, by hop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MinuteTally {
    /// Unix minutes.
    pub minute: u64,
    /// `(hop, jobs)` as stored.
    pub counts: Vec<(String, u64)>,
}

impl RedisStore {
    /// Adds `counts` (`(minute, jobs)`) to hop `hop` of the queue's tallies.
    pub fn add_tally(&mut self, keys: &QueueKeys, hop: &str, counts: &[(u64, u64)]) -> Result<()> {
        let mut commands = Vec::with_capacity(counts.len());
        for (minute, n) in counts {
            let mut cmd = redis::Cmd::new();
            cmd.arg("EVALSHA")
                .arg(scripts::TALLY.get_hash())
                .arg(1)
                .arg(keys.tally(*minute))
                .arg(hop)
                .arg(*n);
            commands.push(cmd);
        }
        if !commands.is_empty() {
            let _: Vec<redis::Value> = self.scripted()?.pipeline(commands)?;
        }
        Ok(())
    }

    /// The counts of minutes `first..=last` that have any, ascending.
    pub fn tallies(&mut self, keys: &QueueKeys, first: u64, last: u64) -> Result<Vec<MinuteTally>> {
        let commands = (first..=last)
            .map(|m| redis::Cmd::hgetall(keys.tally(m)))
            .collect();
        let all: Vec<Vec<(String, u64)>> = self.connection().pipeline(commands)?;
        Ok((first..=last)
            .zip(all)
            .filter(|(_, counts)| !counts.is_empty())
            .map(|(minute, mut counts)| {
                counts.sort();
                MinuteTally { minute, counts }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_is_counted_in_the_minute_of_its_id() {
        // 125 s after the epoch, in the id's top 48 bits.
        let id = JobId(((125_000u128) << 80 | 7).to_be_bytes());
        assert_eq!(minute_of(&id), 2);
        assert_eq!(minute_of_bytes(&id.0), 2);
        assert_eq!(by_minute([3, 2, 3, 3]), vec![(2, 1), (3, 3)]);
    }

    #[test]
    fn every_script_keeps_counts_as_long_as_rust_says() {
        let line = format!("local TALLY_TTL_S = {TALLY_TTL_S}");
        for (name, source) in [
            ("admit-7.lua", include_str!("scripts/admit-7.lua")),
            ("settle-11.lua", include_str!("scripts/settle-11.lua")),
            ("tally-1.lua", include_str!("scripts/tally-1.lua")),
        ] {
            assert!(source.contains(&line), "{name} lacks `{line}`");
        }
    }
}
