//! What the reader hands the writer: records read from Kafka, grouped into
//! one batch per partition.

use std::sync::Arc;

use crate::store::admission::Admission;
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
}

impl PartitionBatch {
    /// The partition's field in its queue's fence hash.
    pub fn fence(&self) -> String {
        fence_field(&self.topic, self.partition)
    }
}

/// `(topic, partition, next offset)` of a partition batch Redis now holds.
pub(super) type Written = (String, i32, i64);
