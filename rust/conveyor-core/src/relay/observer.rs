//! Measures a relay's lag, checks that Redis still holds what the relay saw
//! it take (and reads the watermarks to commit), and publishes its status,
//! once a second, on its own thread and connections: asking a broker for
//! watermarks takes round trips the consume loop must not wait for.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::recovery::{lost, watermark, Recovery, Rewind};
use super::stats::{lock, PartitionLag, RelayStats};
use crate::id::{new_process_id, now_us};
use crate::store::keys::{fence_field, open_prefix, QueueKeys};
use crate::store::RedisStore;

/// A queue's open-jobs counts: `(field, count)`.
type OpenJobs = Vec<(String, i64)>;

/// Each queue's fences (field -> next offset) and open-jobs counts, by topic.
type Readings = HashMap<String, (HashMap<String, i64>, OpenJobs)>;

/// How often a relay measures its partitions' lag and publishes its status.
const OBSERVE_EVERY: Duration = Duration::from_secs(1);

/// How long the brokers get to answer for a chunk of partitions' log ends.
const LOG_ENDS_TIMEOUT: Duration = Duration::from_secs(2);
/// Partitions per request for their log ends.
const LOG_ENDS_CHUNK: usize = 128;
/// How often the starts of the logs are read again (their ends are read
/// every pass): a log's start moves only as retention deletes old segments,
/// and its lag and watermark are bounded by it, not measured from it.
const LOG_STARTS_EVERY: Duration = Duration::from_secs(30);

/// Longest a status that changed only in its time goes unpublished: the
/// status of 1,600 partitions is a quarter of a megabyte of JSON, and
/// readers count a relay gone only after 10 s without one.
const REPUBLISH_EVERY: Duration = Duration::from_secs(5);

/// The observer thread's state.
pub(super) struct Observer {
    pub namespace: String,
    pub redis_url: String,
    pub queues: HashMap<String, QueueKeys>,
    pub watermarks: BaseConsumer,
    pub store: Option<RedisStore>,
    pub stats: Arc<RelayStats>,
    /// Names this relay in the published status.
    pub relay_id: String,
    pub recovery: Arc<Recovery>,
    /// The Redis store's generation when last read.
    pub generation: Option<String>,
    /// When the status was last published, and its counters then.
    pub published: Option<(Instant, serde_json::Value)>,
    /// The logs' starts as last read.
    pub starts: LogStarts,
}

/// Each owned partition's log start as last read, and when: read every
/// [`LOG_STARTS_EVERY`] (and when the assignment grows), not every pass,
/// which halves the requests an idle relay makes of the brokers.
#[derive(Default)]
pub(super) struct LogStarts {
    by_partition: HashMap<(String, i32), i64>,
    read_at: Option<Instant>,
}

impl LogStarts {
    /// Whether the starts of `owned` must be read (again) this pass.
    fn stale(&self, owned: &[(String, i32)]) -> bool {
        self.read_at
            .is_none_or(|at| at.elapsed() >= LOG_STARTS_EVERY)
            || owned.iter().any(|p| !self.by_partition.contains_key(p))
    }
}

impl Observer {
    /// Observes until `stop`, then withdraws this relay's status.
    pub fn run(mut self, stop: &AtomicBool) {
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if Instant::now() >= next {
                next = Instant::now() + OBSERVE_EVERY;
                let moved = self.refresh_lag();
                self.publish_status(moved);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (namespace, id) = (self.namespace.clone(), self.relay_id.clone());
        if let Some(store) = self.store() {
            let _ = store.set_relay_status(&namespace, &id, None);
        }
    }

    fn store(&mut self) -> Option<&mut RedisStore> {
        if self.store.is_none() {
            self.store = RedisStore::connect(&self.redis_url, Duration::from_secs(2)).ok();
        }
        self.store.as_mut()
    }

    /// Each owned partition's lag: its high watermark (asked of the broker,
    /// which answers for paused partitions too) minus the offset Redis holds
    /// records up to, the relay's own truth of what is written. Also checks
    /// what Redis holds against what the relay saw it take, and reads the
    /// watermarks to commit. True when a partition's reading changed.
    fn refresh_lag(&mut self) -> bool {
        let owned = self.stats.assignment();
        let before = self.stats.lag();
        // Read before Redis: a batch landing meanwhile only moves a fence on.
        let written = self.recovery.written();
        let replaced = self.check_generation();
        let mut lags = Vec::with_capacity(owned.len());
        let mut marks = HashMap::new();
        let Some(readings) = self.readings(&owned) else {
            return false;
        };
        // The log ends after the fences: a fence then past its log's end can
        // only be a log that went back (a topic created again). Read the
        // other way round, records landing and relayed between the two reads
        // put fences past the ends just read, under steady load on many
        // partitions (each read of 128 partitions widens the gap), and the
        // partition was relayed again from its start.
        let ends = self.log_ends(&owned);
        for (topic, partition) in owned {
            let Some((fences, open)) = readings.get(&topic) else {
                continue;
            };
            let fence = fences.get(&fence_field(&topic, partition)).copied();
            let expected = written.get(&(topic.clone(), partition)).copied();
            if replaced || expected.is_some_and(|w| lost(fence, w)) {
                self.recovery.rewind(Rewind {
                    topic: topic.clone(),
                    partition,
                    to: fence,
                });
            }
            let prefix = open_prefix(partition);
            let mark = fence.map(|fence| {
                watermark(
                    fence,
                    open.iter().filter_map(|(field, count)| {
                        let block = field.strip_prefix(&prefix)?.parse::<i64>().ok()?;
                        Some((block, *count))
                    }),
                )
            });
            if let Some(mark) = mark {
                marks.insert((topic.clone(), partition), mark);
            }
            let Some(&(low, high)) = ends.get(&(topic.clone(), partition)) else {
                // The broker did not answer in time: keep the last reading.
                lags.extend(
                    before
                        .iter()
                        .find(|p| p.topic == topic && p.partition == partition)
                        .cloned(),
                );
                continue;
            };
            if let Some(past) = fence.filter(|f| *f > high) {
                // The new log's own start, not the one read before: the old
                // log's start may be past the new log's first records.
                let start = self.log_starts(std::slice::from_ref(&(topic.clone(), partition)));
                if let Some(&start) = start.get(&(topic.clone(), partition)) {
                    self.recreated(&topic, partition, past, start);
                }
                self.starts.read_at = None;
            }
            let relayed_to = fence.unwrap_or(low).clamp(low, high.max(low));
            lags.push(PartitionLag {
                topic,
                partition,
                high,
                relayed_to,
                lag: high - relayed_to,
                watermark: mark.unwrap_or(low).clamp(low.min(relayed_to), relayed_to),
            });
        }
        self.recovery.set_watermarks(marks);
        lags.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let moved = lags != before;
        *lock(&self.stats.partitions) = lags;
        moved
    }

    /// The fences and open-job counts of every queue with an owned
    /// partition, in one round trip (one per queue was 50 a second for a
    /// relay of 50 queues); None when Redis did not answer.
    fn readings(&mut self, owned: &[(String, i32)]) -> Option<Readings> {
        let mut topics: Vec<&String> = owned.iter().map(|(topic, _)| topic).collect();
        topics.sort_unstable();
        topics.dedup();
        let asked: Vec<(String, QueueKeys)> = topics
            .into_iter()
            .filter_map(|t| Some((t.clone(), self.queues.get(t)?.clone())))
            .collect();
        if asked.is_empty() {
            // Nothing owned: nothing to read, and the last pass's readings
            // are cleared even while Redis is away.
            return Some(Readings::new());
        }
        let store = self.store()?;
        let keys: Vec<&QueueKeys> = asked.iter().map(|(_, keys)| keys).collect();
        let Ok(got) = store.recovery_readings(&keys) else {
            self.store = None;
            return None;
        };
        Some(
            asked
                .into_iter()
                .zip(got)
                .map(|((topic, _), (fences, open))| (topic, (fences.into_iter().collect(), open)))
                .collect(),
        )
    }

    /// Each partition's `(low, high)` watermarks, asked of the brokers many
    /// partitions at a time: asking partition by partition took two requests
    /// per partition every second (with 1,600 partitions, a fifth of a core
    /// in an idle relay and more in the broker). The lows come from
    /// [`LogStarts`], read again only when stale. Partitions with no answer
    /// are left out.
    fn log_ends(&mut self, owned: &[(String, i32)]) -> HashMap<(String, i32), (i64, i64)> {
        if self.starts.stale(owned) {
            self.starts.by_partition = self.log_starts(owned);
            self.starts.read_at = Some(Instant::now());
        }
        let highs = self.log_offsets(owned, Offset::End);
        let lows = &self.starts.by_partition;
        highs
            .into_iter()
            .filter_map(|(key, high)| Some((key.clone(), (*lows.get(&key)?, high))))
            .collect()
    }

    /// Where each partition's log starts now.
    fn log_starts(&self, owned: &[(String, i32)]) -> HashMap<(String, i32), i64> {
        self.log_offsets(owned, Offset::Beginning)
    }

    /// Each partition's offset `at` its log's beginning or end, asked
    /// [`LOG_ENDS_CHUNK`] partitions at a time.
    fn log_offsets(&self, owned: &[(String, i32)], at: Offset) -> HashMap<(String, i32), i64> {
        let mut out = HashMap::new();
        // librdkafka matches each answer to its partition by a linear search
        // of the list: with all 1,600 in one list that search was 60% of an
        // idle relay's CPU.
        for chunk in owned.chunks(LOG_ENDS_CHUNK) {
            let mut tpl = TopicPartitionList::new();
            for (topic, partition) in chunk {
                let _ = tpl.add_partition_offset(topic, *partition, at);
            }
            // A timestamp of "beginning" or "end" asks for that offset.
            let Ok(got) = self.watermarks.offsets_for_times(tpl, LOG_ENDS_TIMEOUT) else {
                continue;
            };
            for e in got.elements() {
                if let (Offset::Offset(o), Ok(())) = (e.offset(), e.error()) {
                    out.insert((e.topic().to_string(), e.partition()), o);
                }
            }
        }
        out
    }

    /// A fence past the end of its partition's log belongs to a topic that
    /// was deleted and created again under the same name (Kafka keeps no
    /// record above its high watermark once written with acks=all and no
    /// unclean leader election): the fence goes back to the new log's start,
    /// and the loss check then reads the partition again from there.
    fn recreated(&mut self, topic: &str, partition: i32, fence: i64, start: i64) {
        let Some(keys) = self.queues.get(topic).cloned() else {
            return;
        };
        let Some(store) = self.store() else {
            return;
        };
        match store.reset_fence(&keys, &fence_field(topic, partition), fence, start) {
            Ok(true) => {
                self.stats.recreated.fetch_add(1, Ordering::Relaxed);
            }
            Ok(false) => {}
            Err(_) => self.store = None,
        }
    }

    /// Whether Redis is another store than when last read (its generation
    /// key changed or was lost): then every owned partition is checked.
    fn check_generation(&mut self) -> bool {
        let namespace = self.namespace.clone();
        let fresh = new_process_id();
        let Some(store) = self.store() else {
            return false;
        };
        let Ok(now) = store.generation(&namespace, &fresh) else {
            self.store = None;
            return false;
        };
        let replaced = self.generation.as_ref().is_some_and(|g| *g != now);
        self.generation = Some(now);
        replaced
    }

    /// Publishes this relay's state to Redis for `conveyor relays`, when
    /// `moved` (its partitions' readings changed) or its counters did, or
    /// [`REPUBLISH_EVERY`] passed; best effort (a full or absent Redis only
    /// delays the next one).
    fn publish_status(&mut self, moved: bool) {
        let stats = &self.stats;
        let counters = serde_json::json!({
            "id": self.relay_id,
            "relayed": stats.relayed.load(Ordering::Relaxed),
            "shadowed": stats.shadowed.load(Ordering::Relaxed),
            "dead_lettered": stats.dead_lettered.load(Ordering::Relaxed),
            "redis_errors": stats.redis_errors.load(Ordering::Relaxed),
            "held": stats.held.load(Ordering::Relaxed),
            "memory_guarded": stats.memory_guarded.load(Ordering::Relaxed) == 1,
            "depth_guarded": stats.depth_guarded.load(Ordering::Relaxed),
            "guard_engaged": stats.guard_engaged.load(Ordering::Relaxed),
            "controls": &*lock(&stats.controls),
        });
        let fresh = self.published.as_ref().is_some_and(|(at, last)| {
            !moved && *last == counters && at.elapsed() < REPUBLISH_EVERY
        });
        if fresh {
            return;
        }
        let mut status = counters.clone();
        status["updated_at"] = serde_json::json!(now_us() as f64 / 1e6);
        status["partitions"] = serde_json::json!(&*lock(&stats.partitions));
        let status = status.to_string();
        let (namespace, id) = (self.namespace.clone(), self.relay_id.clone());
        if let Some(store) = self.store() {
            if store
                .set_relay_status(&namespace, &id, Some(&status))
                .is_err()
            {
                self.store = None;
                return;
            }
            self.published = Some((Instant::now(), counters));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(partitions: &[i32]) -> Vec<(String, i32)> {
        partitions.iter().map(|p| ("t".to_string(), *p)).collect()
    }

    #[test]
    fn log_starts_are_read_when_never_read_when_old_and_when_the_assignment_grows() {
        let mut starts = LogStarts::default();
        assert!(starts.stale(&owned(&[0, 1])));
        starts.by_partition = owned(&[0, 1]).into_iter().map(|k| (k, 0)).collect();
        starts.read_at = Some(Instant::now());
        assert!(!starts.stale(&owned(&[0, 1])));
        assert!(!starts.stale(&owned(&[1])), "a shrunk assignment is known");
        assert!(starts.stale(&owned(&[0, 1, 2])), "a partition never read");
        starts.read_at = Instant::now().checked_sub(LOG_STARTS_EVERY);
        assert!(starts.stale(&owned(&[0, 1])));
    }
}
