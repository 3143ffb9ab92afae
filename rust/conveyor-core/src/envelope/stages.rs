//! Stage stamps: nine bytes each at the very end of an envelope, so a stage
//! is recorded by appending, without decoding or re-encoding the rest.

/// Bytes one stage stamp takes at the end of an envelope (code + u64 time).
pub const STAGE_LEN: usize = 1 + 8;

/// A point in a job's life, recorded with a timestamp in the envelope.
///
/// Codes are part of the wire format. Decoders keep codes they do not know
/// (see [`StageStamp::code`]): a stamp is information, never a reason to
/// refuse a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Stage {
    /// Written to Kafka (the record's broker timestamp, stamped by the relay).
    Kafka = 1,
    /// Written into its Redis queue by the relay or the direct path.
    Relayed = 2,
    /// A worker started an attempt.
    Started = 3,
    /// An attempt succeeded.
    Finished = 4,
    /// An attempt failed.
    Failed = 5,
    /// Given up on and moved to the dead letters.
    DeadLettered = 6,
    /// Sent to Kafka while also written straight into Redis (a double write,
    /// as a job type moves to Kafka): a relay in shadow mode drops this copy,
    /// and only records that carry it.
    DoubleWritten = 7,
    /// Where the relay read the job: not a time but the Kafka partition and
    /// offset ([`source_stamp`]), so that a worker finishing the job can
    /// count it out of its partition's open jobs (the watermark a relay
    /// re-reads from after Redis is lost; docs/recovery.md).
    Source = 8,
    /// Moved back from the dead letters for a fresh set of attempts.
    Replayed = 9,
}

impl Stage {
    /// Every stage this build knows, in code order.
    pub const ALL: [Stage; 9] = [
        Stage::Kafka,
        Stage::Relayed,
        Stage::Started,
        Stage::Finished,
        Stage::Failed,
        Stage::DeadLettered,
        Stage::DoubleWritten,
        Stage::Source,
        Stage::Replayed,
    ];

    /// The stage for a wire code, if it is one this build knows.
    pub fn from_code(code: u8) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| *s as u8 == code)
    }

    /// The stable lower-case name used in docs, metrics and Python.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Kafka => "kafka",
            Stage::Relayed => "relayed",
            Stage::Started => "started",
            Stage::Finished => "finished",
            Stage::Failed => "failed",
            Stage::DeadLettered => "dead_lettered",
            Stage::DoubleWritten => "double_written",
            Stage::Source => "source",
            Stage::Replayed => "replayed",
        }
    }
}

/// One stage stamp: a stage code and when it happened (µs since the epoch;
/// for [`Stage::Source`], where the job was read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageStamp {
    /// The wire code; see [`Stage::from_code`].
    pub code: u8,
    /// Microseconds since the Unix epoch.
    pub at_us: u64,
}

impl StageStamp {
    /// The Kafka `(partition, offset)` a [`Stage::Source`] stamp records.
    pub fn source(&self) -> Option<(i32, i64)> {
        (self.code == Stage::Source as u8).then_some((
            (self.at_us >> SOURCE_OFFSET_BITS) as i32,
            (self.at_us & SOURCE_OFFSET_MASK) as i64,
        ))
    }
}

/// Bits of a [`Stage::Source`] stamp that hold the offset; the partition
/// sits above them (offsets stay far below 2^48, partitions below 2^16).
const SOURCE_OFFSET_BITS: u32 = 48;
const SOURCE_OFFSET_MASK: u64 = (1 << SOURCE_OFFSET_BITS) - 1;

/// The value of a [`Stage::Source`] stamp for the record at `offset` of
/// `partition`.
pub fn source_stamp(partition: i32, offset: i64) -> u64 {
    ((partition.max(0) as u64) << SOURCE_OFFSET_BITS) | (offset.max(0) as u64 & SOURCE_OFFSET_MASK)
}

/// Appends a stage stamp to an encoded envelope in place, without re-encoding it.
///
/// The caller vouches that `encoded` is a valid envelope (it came from
/// [`Envelope::encode`] or passed [`Envelope::decode`]).
/// `code` is a [`Stage`] as `u8`; codes this build does not know are allowed,
/// as decoders keep them.
pub fn append_stage(encoded: &mut Vec<u8>, code: u8, at_us: u64) {
    encoded.push(code);
    encoded.extend_from_slice(&at_us.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_stamp_reads_back_its_partition_and_offset() {
        for (partition, offset) in [(0, 0), (7, 123_456_789), (1599, (1 << 47) + 3)] {
            let stamp = StageStamp {
                code: Stage::Source as u8,
                at_us: source_stamp(partition, offset),
            };
            assert_eq!(stamp.source(), Some((partition, offset)));
        }
        let other = StageStamp {
            code: Stage::Kafka as u8,
            at_us: 5,
        };
        assert_eq!(other.source(), None);
    }
}
