//! Redis going back in time or away for good: noticing it, and relaying what
//! it lost again from Kafka, which keeps every job for days.
//!
//! Two numbers per owned partition make that possible:
//! - the *fence* in Redis (next offset to relay), which goes back with
//!   Redis: a store restored from older files, or promoted from a lagging
//!   replica, holds an older fence, and a wiped one none. The relay knows
//!   what it saw Redis take; a fence below that is a loss, and the relay
//!   reads the partition again from the fence (or, with no fence, from the
//!   watermark). The writer notices on the next batch (`admit-7.lua`
//!   answers `behind`), the observer within a second for idle partitions,
//!   and a restarted or newly joined relay starts where the fence says.
//! - the *watermark*: the lowest offset whose job has not finished, from the
//!   open-jobs counts Redis keeps per block of offsets. It is committed to
//!   Kafka as the group's offset, so it survives Redis: a wiped Redis is
//!   refilled from it, and every job that was queued, scheduled or running
//!   runs again. Finished jobs after the lowest unfinished one run again
//!   too; `watermark` in each partition's status shows how far back that
//!   reaches (docs/recovery.md).
//!
//! A store's generation key (`keys::generation_key`) tells a replaced Redis
//! from the same one: when it changes, every owned partition is checked
//! again at once.

use std::collections::HashMap;
use std::sync::Mutex;

use super::stats::lock;

/// A partition to read again: from the offset Redis holds (`Some`), or from
/// the watermark committed to Kafka when Redis holds nothing (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rewind {
    pub topic: String,
    pub partition: i32,
    pub to: Option<i64>,
}

/// What the reader, the writer and the observer share about recovery.
#[derive(Default)]
pub(super) struct Recovery {
    /// Per owned partition, the least offset Redis must hold records up to:
    /// what the writer saw Redis take, or where the relay started it (-1:
    /// nothing expected yet).
    written: Mutex<HashMap<(String, i32), i64>>,
    /// Per owned partition, the offset the next batch starts at: what the
    /// reader handed on already (-1: unknown, a start without a fence).
    positions: Mutex<HashMap<(String, i32), i64>>,
    /// Partitions to read again, for the reader to act on.
    rewinds: Mutex<Vec<Rewind>>,
    /// The latest watermark of each owned partition, for the next commit.
    watermarks: Mutex<HashMap<(String, i32), i64>>,
}

impl Recovery {
    /// A new assignment: `starts` are the owned partitions and the fence
    /// each started at (-1: none, started from the committed watermark).
    pub fn assigned(&self, starts: &[(String, i32, i64)]) {
        let starts: HashMap<(String, i32), i64> = starts
            .iter()
            .map(|(topic, partition, start)| ((topic.clone(), *partition), *start))
            .collect();
        *lock(&self.written) = starts.clone();
        *lock(&self.positions) = starts;
        lock(&self.watermarks).clear();
    }

    /// Redis took a batch of the partition up to `next_offset`.
    pub fn wrote(&self, topic: &str, partition: i32, next_offset: i64) {
        if let Some(at) = lock(&self.written).get_mut(&(topic.to_owned(), partition)) {
            *at = (*at).max(next_offset);
        }
    }

    /// The partition will be read again from `start` (-1: from the watermark,
    /// no fence expected).
    pub fn restarted(&self, topic: &str, partition: i32, start: i64) {
        let key = (topic.to_owned(), partition);
        for map in [&self.written, &self.positions] {
            if let Some(at) = lock(map).get_mut(&key) {
                *at = start;
            }
        }
    }

    /// Where the next batches start, for the reader to read and move on.
    pub fn positions(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i32), i64>> {
        lock(&self.positions)
    }

    /// What Redis must hold, per owned partition (read *before* reading
    /// Redis, so a write landing in between is never taken for a loss).
    pub fn written(&self) -> HashMap<(String, i32), i64> {
        lock(&self.written).clone()
    }

    /// Asks the reader to read a partition again.
    pub fn rewind(&self, rewind: Rewind) {
        let mut rewinds = lock(&self.rewinds);
        if !rewinds
            .iter()
            .any(|r| r.topic == rewind.topic && r.partition == rewind.partition)
        {
            rewinds.push(rewind);
        }
    }

    /// The partitions to read again, taken.
    pub fn take_rewinds(&self) -> Vec<Rewind> {
        std::mem::take(&mut *lock(&self.rewinds))
    }

    /// Records the watermarks the observer read.
    pub fn set_watermarks(&self, marks: HashMap<(String, i32), i64>) {
        *lock(&self.watermarks) = marks;
    }

    /// The latest watermarks.
    pub fn watermarks(&self) -> HashMap<(String, i32), i64> {
        lock(&self.watermarks).clone()
    }
}

/// Whether Redis lost some of what the relay saw it take: its fence
/// (`None`: absent) below `written` (what it must hold; -1: nothing yet).
pub(super) fn lost(fence: Option<i64>, written: i64) -> bool {
    written >= 0 && fence.unwrap_or(-1) < written
}

/// A partition's watermark: the start of its lowest block with open jobs
/// (`open`: the open-jobs hash's `(block, count)` of this partition), or its
/// fence when none is open; never past the fence.
pub(super) fn watermark(fence: i64, open: impl IntoIterator<Item = (i64, i64)>) -> i64 {
    open.into_iter()
        .filter(|(_, count)| *count > 0)
        .map(|(block, _)| block * crate::store::keys::OPEN_BLOCK)
        .fold(fence, i64::min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_below_what_redis_took_is_a_loss() {
        assert!(lost(Some(10), 20), "rolled back");
        assert!(lost(None, 20), "wiped");
        assert!(!lost(Some(20), 20));
        assert!(!lost(Some(30), 20), "another relay wrote more");
        assert!(!lost(None, -1), "nothing written yet");
    }

    #[test]
    fn the_watermark_is_the_lowest_open_block_or_the_fence() {
        assert_eq!(watermark(5000, []), 5000);
        assert_eq!(watermark(5000, [(3, 1), (1, 2)]), 1024);
        assert_eq!(watermark(5000, [(1, 0), (1, -1), (4, 1)]), 4096);
        assert_eq!(watermark(100, [(4, 1)]), 100, "never past the fence");
    }

    #[test]
    fn rewinds_are_kept_once_per_partition_until_taken() {
        let r = Recovery::default();
        r.assigned(&[("t".to_owned(), 0, 5)]);
        r.wrote("t", 0, 9);
        r.wrote("t", 0, 7);
        r.wrote("gone", 1, 7);
        assert_eq!(r.written(), HashMap::from([(("t".to_owned(), 0), 9)]));
        let back = |to| Rewind {
            topic: "t".to_owned(),
            partition: 0,
            to,
        };
        r.rewind(back(Some(3)));
        r.rewind(back(None));
        assert_eq!(r.take_rewinds(), [back(Some(3))]);
        assert!(r.take_rewinds().is_empty());
    }
}
