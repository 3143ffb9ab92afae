//! What the reader hands the writer: records read from Kafka, grouped into
//! one batch per partition.

use std::sync::Arc;

use crate::store::admission::{Admission, Fenced};
use crate::store::keys::fence_field;

/// A record read from Kafka, kept until its batch is handed to the writer.
pub(super) struct Record {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// The broker's append time, µs since the epoch.
    pub kafka_us: u64,
    /// The record's value, with capacity for the two stage stamps.
    pub value: Vec<u8>,
}

/// One partition's share of a batch.
pub(super) struct PartitionBatch {
    pub topic: Arc<str>,
    pub partition: i32,
    /// `(offset, envelope with stage stamps)` in offset order.
    pub jobs: Vec<Admission>,
    /// The offset after the last record seen (dead letters included).
    pub next_offset: i64,
    /// The least offset Redis must hold for the partition before this batch
    /// (-1: none); see `admit-7.lua`.
    pub expect: i64,
}

impl PartitionBatch {
    /// The batch as the store writes it, counted in the tallies or not.
    pub fn fenced(&self, tally: bool) -> Fenced<'_> {
        Fenced {
            fence: fence_field(&self.topic, self.partition),
            partition: self.partition,
            expect: self.expect,
            next_offset: self.next_offset,
            jobs: &self.jobs,
            tally,
        }
    }

    /// Whether the record at `offset` is new to this batch, moving the next
    /// offset past it. A record at or below one taken already (librdkafka
    /// delivering again after a seek) is not: each is written once, and the
    /// fence never moves back within a batch.
    pub fn take(&mut self, offset: i64) -> bool {
        let fresh = offset >= self.next_offset;
        if fresh {
            self.next_offset = offset + 1;
        }
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_delivered_again_within_a_batch_is_taken_once() {
        let mut batch = PartitionBatch {
            topic: Arc::from("t"),
            partition: 0,
            jobs: Vec::new(),
            next_offset: 10,
            expect: 10,
        };
        let taken: Vec<bool> = [10, 11, 10, 11, 12, 9]
            .into_iter()
            .map(|o| batch.take(o))
            .collect();
        assert_eq!(taken, [true, true, false, false, true, false]);
        assert_eq!(batch.next_offset, 13, "never moved back");
    }
}
