//! The consume loop: read records from Kafka, let flow control decide what
//! may go now, check and stamp each job, and hand one batch at a time to the
//! writer; read partitions again that Redis lost; commit the watermarks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::batch::{PartitionBatch, Record};
use super::connected;
use super::dead_letters::{Dead, DeadLetters};
use super::flow::{Controls, Flow, CONTROL_REFRESH, GUARD_REFRESH};
use super::rebalance::RelayContext;
use super::recovery::Recovery;
use super::stats::{lock, RelayStats};
use crate::envelope::{append_stage, source_stamp, EnvelopeView, Stage, STAGE_LEN};
use crate::error::Result;
use crate::id::now_us;
use crate::kafka::poll_time::sleepable;
use crate::store::admission::Admission;
use crate::store::keys::{unique_field, QueueKeys};
use crate::store::RedisStore;

/// The relay's consume loop, on its own thread.
pub(super) struct Reader {
    pub namespace: String,
    /// The relayed topics' names, shared by every record read from them.
    pub topics: Vec<Arc<str>>,
    pub flow: Flow,
    pub controls_read_at: Option<Instant>,
    pub guard_read_at: Option<Instant>,
    pub consumer: BaseConsumer<RelayContext>,
    pub dead_letters: DeadLetters,
    pub queues: HashMap<String, QueueKeys>,
    pub store: Option<RedisStore>,
    pub redis_url: String,
    pub stats: Arc<RelayStats>,
    pub stop: Arc<AtomicBool>,
    pub batch_max: usize,
    pub batch_wait: Duration,
    /// Batches to the writer thread (one slot: one being written while the
    /// next waits, never more).
    pub to_writer: Option<SyncSender<Vec<PartitionBatch>>>,
    /// Batches handed to the writer and not yet written: while there are
    /// none, a batch waits for nothing more (see `collect`).
    pub unwritten: Arc<AtomicUsize>,
    pub writer: Option<JoinHandle<()>>,
    pub recovery: Arc<Recovery>,
    pub committed_at: Instant,
}

/// How often a reader waiting for more records looks whether the writer is
/// free yet.
const WRITER_CHECK: Duration = Duration::from_micros(500);

/// How often the watermarks are committed to Kafka.
const COMMIT_EVERY: Duration = Duration::from_secs(1);

/// How long the reader waits for the writer before it stops fetching and
/// only serves the consumer (Redis away): far inside max.poll.interval.ms,
/// so the relay keeps its partitions through an outage of any length.
const WRITER_STALLED: Duration = Duration::from_secs(1);

/// Longest a poll with nothing to read waits: bounds how late the reader sees
/// a stop, a control change or a free writer while idle.
const IDLE_POLL: Duration = Duration::from_millis(100);

impl Reader {
    /// Runs until the relay is stopped, then commits and leaves the group.
    pub fn run(mut self) -> Result<()> {
        while !self.stop.load(Ordering::Relaxed) {
            self.refresh_controls();
            self.apply_rewinds();
            self.apply_pauses();
            let records = self.collect();
            self.flow.hold(records);
            if self
                .guard_read_at
                .is_none_or(|at| at.elapsed() >= GUARD_REFRESH)
            {
                self.guard_read_at = Some(Instant::now());
                self.check_guard();
            }
            let ready = self.flow.release(Instant::now());
            self.stats
                .held
                .store(self.flow.held() as u64, Ordering::Relaxed);
            if !ready.is_empty() {
                self.relay(ready);
            }
            if self.committed_at.elapsed() >= COMMIT_EVERY {
                self.committed_at = Instant::now();
                self.commit(CommitMode::Async);
                self.dead_letters.serve();
            }
        }
        // Let the writer finish the batch it holds.
        self.to_writer = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        // Commit the watermarks, then leave the group so partitions move now.
        self.commit(CommitMode::Sync);
        self.consumer.unsubscribe();
        self.dead_letters.flush(Duration::from_secs(10));
        Ok(())
    }

    fn store(&mut self) -> Result<&mut RedisStore> {
        connected(&mut self.store, &self.redis_url)
    }

    /// Re-reads the controls from Redis twice a second; keeps the last ones
    /// read while Redis does not answer.
    fn refresh_controls(&mut self) {
        if self
            .controls_read_at
            .is_some_and(|at| at.elapsed() < CONTROL_REFRESH)
        {
            return;
        }
        self.controls_read_at = Some(Instant::now());
        let namespace = self.namespace.clone();
        let Ok(store) = self.store() else {
            return;
        };
        let Ok(fields) = store.relay_controls(&namespace) else {
            self.store = None;
            return;
        };
        self.flow.set_controls(Controls::parse(fields));
        *lock(&self.stats.controls) = self.flow.controls.state();
    }

    /// Reads Redis memory and queue depths for the guard.
    fn check_guard(&mut self) {
        let queues: Vec<(String, QueueKeys)> = self
            .queues
            .iter()
            .map(|(t, k)| (t.clone(), k.clone()))
            .collect();
        let guard_depth = self.flow.guard.depth_high.is_some();
        let Ok(store) = self.store() else {
            return;
        };
        let Ok((used, max)) = store.memory() else {
            self.store = None;
            return;
        };
        let mut depths = Vec::new();
        if guard_depth {
            for (topic, keys) in &queues {
                if let Ok(depth) = store.ready_len(keys) {
                    depths.push((topic.clone(), depth));
                }
            }
        }
        let engaged = self.flow.guard.update(used, max, &depths);
        if engaged > 0 {
            self.stats
                .guard_engaged
                .fetch_add(engaged, Ordering::Relaxed);
        }
        let guard = &self.flow.guard;
        self.stats
            .memory_guarded
            .store(u64::from(guard.memory_on), Ordering::Relaxed);
        self.stats
            .depth_guarded
            .store(guard.deep.len() as u64, Ordering::Relaxed);
    }

    /// Applies flow control's pauses and resumes to the consumer.
    fn apply_pauses(&mut self) {
        let assignment = lock(&self.stats.assignment).clone();
        let change = self.flow.pauses(&assignment);
        for (list, pause) in [(change.pause, true), (change.resume, false)] {
            if list.is_empty() {
                continue;
            }
            let mut tpl = TopicPartitionList::new();
            for (topic, partition) in &list {
                tpl.add_partition(topic, *partition);
            }
            let _ = if pause {
                self.consumer.pause(&tpl)
            } else {
                self.consumer.resume(&tpl)
            };
        }
    }

    /// Waits up to [`IDLE_POLL`] for a first record, takes whatever else librdkafka
    /// holds already, and waits for more (up to `batch_wait`) only while the
    /// writer is busy. Batching then follows load: an idle writer gets a lone
    /// job at once (a fixed wait was most of a job's latency at low rates),
    /// while under load the records that come during a write join the batch
    /// that would have waited for the writer anyway.
    fn collect(&self) -> Vec<Record> {
        let mut messages = Vec::new();
        match self.consumer.poll(sleepable(IDLE_POLL)) {
            Some(Ok(message)) => messages.push(self.record(&message)),
            // Consumer errors are transient (a broker away); librdkafka retries.
            Some(Err(_)) | None => return messages,
        }
        let mut deadline = None;
        while messages.len() < self.batch_max {
            // What librdkafka holds already is taken without a timeout: a
            // poll with one reads the clock, and the clock reads per record
            // were a tenth of the relay's CPU. Only an empty queue waits.
            if let Some(Ok(message)) = self.consumer.poll(Duration::ZERO) {
                messages.push(self.record(&message));
                continue;
            }
            if self.unwritten.load(Ordering::Acquire) == 0 {
                break;
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + self.batch_wait);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // In short slices, so that a writer becoming free ends the wait.
            if let Some(Ok(message)) = self.consumer.poll(left.min(WRITER_CHECK)) {
                messages.push(self.record(&message));
            }
        }
        messages
    }

    /// Copies what relaying needs out of a message librdkafka owns: one
    /// allocation per record (its value, with room for the two stage stamps),
    /// no headers, the topic name shared.
    fn record(&self, message: &BorrowedMessage<'_>) -> Record {
        let name = message.topic();
        let topic = self
            .topics
            .iter()
            .find(|t| &***t == name)
            .cloned()
            .unwrap_or_else(|| Arc::from(name));
        let payload = message.payload().unwrap_or_default();
        let mut value = Vec::with_capacity(payload.len() + 2 * STAGE_LEN);
        value.extend_from_slice(payload);
        Record {
            topic,
            partition: message.partition(),
            offset: message.offset(),
            kafka_us: message.timestamp().to_millis().unwrap_or(0).max(0) as u64 * 1000,
            value,
        }
    }

    /// Checks and stamps each record, groups them by partition, dead-letters
    /// what can never be relayed, and hands the batch to the writer.
    fn relay(&mut self, records: Vec<Record>) {
        let relayed_at = now_us();
        let mut batches: Vec<PartitionBatch> = Vec::new();
        let mut dead: Vec<Dead> = Vec::new();
        let recovery = Arc::clone(&self.recovery);
        let mut positions = recovery.positions();
        for record in records {
            let Record {
                topic,
                partition,
                offset,
                kafka_us,
                mut value,
            } = record;
            let index = match batches
                .iter()
                .position(|b| b.partition == partition && b.topic == topic)
            {
                Some(i) => i,
                None => {
                    let expect = positions
                        .get(&(topic.to_string(), partition))
                        .copied()
                        .unwrap_or(-1);
                    batches.push(PartitionBatch {
                        topic: Arc::clone(&topic),
                        partition,
                        jobs: Vec::new(),
                        // A record below what was handed on already (read
                        // before a rewind took effect) is not taken again.
                        next_offset: offset.max(expect),
                        expect,
                    });
                    batches.len() - 1
                }
            };
            let batch = &mut batches[index];
            if !batch.take(offset) {
                self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let shadowed = self.flow.shadowed(&topic);
            let fields = EnvelopeView::parse(&value).map(|e| {
                (
                    e.run_at_us.map_or(0, |us| us / 1000),
                    e.dedup_key.map(|key| unique_field(e.job_type, key)),
                    // Only a shadowed topic's records are looked at.
                    shadowed && e.has_stage(Stage::DoubleWritten),
                )
            });
            match fields {
                // Shadow mode: the job was written to Redis by the direct
                // path too (double writes); count it and move the fence on.
                // Any other job of the queue (the gate's, another type's) is
                // relayed as always.
                Ok((_, _, true)) => {
                    self.stats.shadowed.fetch_add(1, Ordering::Relaxed);
                }
                Ok((run_at_ms, unique, _)) => {
                    append_stage(&mut value, Stage::Kafka as u8, kafka_us);
                    append_stage(&mut value, Stage::Relayed as u8, relayed_at);
                    append_stage(
                        &mut value,
                        Stage::Source as u8,
                        source_stamp(partition, offset),
                    );
                    batch.jobs.push(Admission {
                        offset,
                        run_at_ms,
                        unique,
                        envelope: value,
                    });
                }
                Err(err) => dead.push(Dead {
                    topic: topic.to_string(),
                    partition,
                    offset,
                    value,
                    reason: err.to_string(),
                }),
            }
        }
        // A record that cannot be relayed must not block its partition, nor be
        // lost: it goes to the dead-letter topic before its offset moves on.
        if !dead.is_empty() {
            self.dead_letters.send(&dead);
        }
        for batch in &batches {
            if let Some(at) = positions.get_mut(&(batch.topic.to_string(), batch.partition)) {
                *at = batch.next_offset;
            }
        }
        drop(positions);
        self.hand_over(batches);
    }

    /// Gives the writer a batch. While it cannot take one for long (Redis
    /// away), fetching stops and the consumer is still served, so the relay
    /// keeps its group membership and partitions however long that lasts.
    fn hand_over(&mut self, mut batches: Vec<PartitionBatch>) {
        let Some(writer) = self.to_writer.clone() else {
            return;
        };
        let began = Instant::now();
        let mut stalled = false;
        loop {
            // Counted before the send: the writer may finish it before
            // this thread runs again.
            self.unwritten.fetch_add(1, Ordering::Release);
            match writer.try_send(batches) {
                Ok(()) => break,
                // Disconnected only when the writer is gone (stopping):
                // nothing of this batch was acknowledged, so its records are
                // read again later.
                Err(TrySendError::Disconnected(_)) => {
                    self.unwritten.fetch_sub(1, Ordering::Release);
                    break;
                }
                Err(TrySendError::Full(back)) => {
                    self.unwritten.fetch_sub(1, Ordering::Release);
                    batches = back;
                }
            }
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            stalled = stalled || began.elapsed() >= WRITER_STALLED;
            if stalled {
                // Every owned partition, each time: one assigned by a
                // rebalance meanwhile would otherwise fetch into memory.
                let mut all = TopicPartitionList::new();
                for (topic, partition) in self.stats.assignment() {
                    all.add_partition(&topic, partition);
                }
                let _ = self.consumer.pause(&all);
                // Serves rebalances and max.poll.interval.ms; whatever was
                // fetched before the pause waits in flow control.
                if let Some(Ok(message)) = self.consumer.poll(sleepable(IDLE_POLL)) {
                    let record = self.record(&message);
                    self.flow.hold(vec![record]);
                }
                self.apply_rewinds();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        if stalled {
            // Flow control sets every partition's pause again.
            self.flow.reassert_pauses();
        }
    }

    /// Reads again the partitions Redis lost part of: from the offset it
    /// still holds, or from the committed watermark when it holds nothing.
    fn apply_rewinds(&mut self) {
        let owned = self.stats.assignment();
        for rewind in self.recovery.take_rewinds() {
            let (topic, partition) = (rewind.topic.as_str(), rewind.partition);
            if !owned.iter().any(|(t, p)| t == topic && *p == partition) {
                continue;
            }
            let (offset, start) = match rewind.to {
                Some(at) => (Offset::Offset(at), at),
                None => (self.committed(topic, partition), -1),
            };
            if self
                .consumer
                .seek(topic, partition, offset, Duration::from_secs(1))
                .is_err()
            {
                // Not fetching yet (just assigned), or the broker away: next loop.
                self.recovery.rewind(rewind);
                continue;
            }
            self.flow.forget(topic, partition);
            self.recovery.restarted(topic, partition, start);
            self.stats.rewinds.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The partition's committed offset (its watermark), or its beginning.
    fn committed(&self, topic: &str, partition: i32) -> Offset {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        self.consumer
            .committed_offsets(tpl, Duration::from_secs(5))
            .ok()
            .and_then(|c| c.find_partition(topic, partition).map(|e| e.offset()))
            .filter(|o| matches!(o, Offset::Offset(_)))
            .unwrap_or(Offset::Beginning)
    }

    /// Commits each owned partition's watermark, the lowest offset whose job
    /// has not finished: where a relay starts when Redis holds nothing.
    fn commit(&self, mode: CommitMode) {
        // Looked up by key: matching each watermark against the assignment
        // list was quadratic, millions of comparisons a second at 1,600.
        let marks = self.recovery.watermarks();
        let mut tpl = TopicPartitionList::new();
        for key in self.stats.assignment() {
            if let Some(&mark) = marks.get(&key) {
                let _ = tpl.add_partition_offset(&key.0, key.1, Offset::Offset(mark));
            }
        }
        if tpl.count() > 0 {
            let _ = self.consumer.commit(&tpl, mode);
        }
    }
}
