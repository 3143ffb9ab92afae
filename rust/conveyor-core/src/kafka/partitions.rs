//! Availability first: where a job goes when it has neither a dedup key nor
//! a pinned partition.
//!
//! librdkafka keeps sending such jobs to a partition whose leader has died
//! until its metadata says so (seconds later, for a single-replica topic
//! never), and they fail only when the delivery timeout ends. The producer
//! picks the partition itself instead, among those that look healthy: a
//! leader in the last metadata, no records stuck unacknowledged for longer
//! than [`STALL`], no failed delivery in the last [`COOLDOWN`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Records in flight with no acknowledgement for this long mark a partition
/// as stalled: new jobs go elsewhere. Healthy acks take milliseconds.
pub const STALL: Duration = Duration::from_secs(1);
/// A partition where a delivery failed is avoided for this long.
pub const COOLDOWN: Duration = Duration::from_secs(5);
/// How often a topic's partition list (with leaders) is refreshed.
pub const REFRESH: Duration = Duration::from_secs(5);

#[derive(Default, Clone, Copy)]
struct State {
    in_flight: u64,
    /// The last acknowledgement, or when records started waiting for one.
    progress_at: Option<Instant>,
    failed_at: Option<Instant>,
}

impl State {
    fn healthy(&self, now: Instant) -> bool {
        let stalled = self.in_flight > 0
            && self
                .progress_at
                .is_some_and(|at| now.duration_since(at) > STALL);
        let failed = self
            .failed_at
            .is_some_and(|at| now.duration_since(at) < COOLDOWN);
        !stalled && !failed
    }
}

struct Topic {
    /// Partitions that had a leader at the last refresh.
    led: Vec<i32>,
    /// How many partitions the topic had at the last refresh.
    count: i32,
    refreshed: Instant,
    state: HashMap<i32, State>,
}

impl Topic {
    fn healthy(&self, partition: i32, now: Instant) -> bool {
        self.state.get(&partition).is_none_or(|s| s.healthy(now))
    }

    fn choose(&self, now: Instant) -> Option<i32> {
        let healthy = self.led.iter().filter(|&&p| self.healthy(p, now)).count();
        if healthy == 0 {
            return None;
        }
        let nth = rand::random::<u32>() as usize % healthy;
        self.led
            .iter()
            .copied()
            .filter(|&p| self.healthy(p, now))
            .nth(nth)
    }

    fn sent(&mut self, partition: i32, count: u64, now: Instant) {
        let s = self.state.entry(partition).or_default();
        if s.in_flight == 0 {
            s.progress_at = Some(now);
        }
        s.in_flight += count;
    }
}

/// What [`PartitionHealth::pick`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    /// The topic's partitions were read (it exists).
    pub known: bool,
    /// The partition list is due for a refresh, which this caller should do.
    pub stale: bool,
    /// The partition chosen for the records that may go anywhere.
    pub partition: Option<i32>,
    /// How many partitions the topic has (as of the last refresh).
    pub partitions: i32,
}

/// Per-topic partition health, fed by sends and delivery reports.
#[derive(Default)]
pub struct PartitionHealth {
    topics: Mutex<HashMap<String, Topic>>,
}

impl PartitionHealth {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Topic>) -> T) -> T {
        f(&mut self.topics.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Records the partitions of `topic` that have a leader now, and how
    /// many partitions it has.
    pub fn set_led(&self, topic: &str, led: Vec<i32>, count: i32) {
        self.with(|topics| {
            let entry = topics.entry(topic.to_owned()).or_insert_with(|| Topic {
                led: Vec::new(),
                count: 0,
                refreshed: Instant::now(),
                state: HashMap::new(),
            });
            entry.led = led;
            entry.count = count;
            entry.refreshed = Instant::now();
        });
    }

    /// Everything one send needs to know about `topic`, under one lock: a
    /// send of a single job is a few microseconds, so four lock and hash
    /// rounds showed in its profile. When `count` records may go anywhere,
    /// a healthy partition is chosen and counted as sent `count` records.
    /// A stale partition list is reported once per [`REFRESH`]: the caller
    /// that sees `stale` refreshes it, the others go on with the old one.
    pub fn pick(&self, topic: &str, count: u64) -> Pick {
        let now = Instant::now();
        self.with(|topics| {
            let Some(t) = topics.get_mut(topic) else {
                return Pick::default();
            };
            let stale = now.duration_since(t.refreshed) > REFRESH;
            if stale {
                t.refreshed = now;
            }
            let partition = if count > 0 { t.choose(now) } else { None };
            if let Some(p) = partition {
                t.sent(p, count, now);
            }
            Pick {
                known: true,
                stale,
                partition,
                partitions: t.count,
            }
        })
    }

    /// A record sent to `partition` was acknowledged (`ok`) or failed.
    pub fn reported(&self, topic: &str, partition: i32, ok: bool) {
        let now = Instant::now();
        self.with(|topics| {
            if let Some(t) = topics.get_mut(topic) {
                let s = t.state.entry(partition).or_default();
                s.in_flight = s.in_flight.saturating_sub(1);
                s.progress_at = Some(now);
                if !ok {
                    s.failed_at = Some(now);
                }
            }
        });
    }
}

/// Refuses a pinned partition the topic does not have: no delivery timeout
/// can fix it, so it is the caller's error, not Kafka's.
pub(crate) fn check_partition(topic: &str, partition: Option<i32>, count: i32) -> Result<()> {
    match partition {
        Some(p) if p < 0 || p >= count => Err(Error::InvalidJob(format!(
            "partition {p} is outside topic {topic:?}, which has partitions 0 to {}",
            count - 1
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parts of `pick` the tests look at one by one.
    impl PartitionHealth {
        fn choose(&self, topic: &str) -> Option<i32> {
            let now = Instant::now();
            self.with(|topics| topics.get(topic)?.choose(now))
        }

        fn sent(&self, topic: &str, partition: i32, count: u64) {
            let now = Instant::now();
            self.with(|topics| {
                if let Some(t) = topics.get_mut(topic) {
                    t.sent(partition, count, now);
                }
            });
        }
    }

    #[test]
    fn a_stalled_or_failing_partition_is_avoided_until_it_recovers() {
        let health = PartitionHealth::default();
        assert_eq!(
            health.choose("t"),
            None,
            "unknown topic: librdkafka chooses"
        );
        health.set_led("t", vec![0, 1], 2);
        health.sent("t", 0, 5);
        // Make partition 0's wait look older than STALL.
        health.with(|t| {
            t.get_mut("t")
                .unwrap()
                .state
                .get_mut(&0)
                .unwrap()
                .progress_at = Some(Instant::now() - STALL - Duration::from_millis(10));
        });
        for _ in 0..50 {
            assert_eq!(health.choose("t"), Some(1));
        }
        health.reported("t", 1, false);
        assert_eq!(
            health.choose("t"),
            None,
            "both unhealthy: let librdkafka choose"
        );
        for _ in 0..5 {
            health.reported("t", 0, true);
        }
        assert_eq!(health.choose("t"), Some(0), "acknowledged again: healthy");
    }

    #[test]
    fn pick_reports_the_topic_counts_the_send_and_hands_out_one_refresh() {
        let health = PartitionHealth::default();
        assert_eq!(health.pick("t", 1), Pick::default(), "unknown topic");
        health.set_led("t", vec![3], 4);
        let pick = health.pick("t", 4);
        assert_eq!(
            (pick.known, pick.stale, pick.partition),
            (true, false, Some(3))
        );
        assert_eq!(health.with(|t| t["t"].state[&3].in_flight), 4);
        assert_eq!(
            health.pick("t", 0).partition,
            None,
            "nothing may go anywhere"
        );
        health.with(|t| t.get_mut("t").unwrap().refreshed -= REFRESH + Duration::from_secs(1));
        assert!(health.pick("t", 0).stale, "the first caller refreshes");
        assert!(!health.pick("t", 0).stale, "the others go on meanwhile");
    }

    #[test]
    fn partitions_without_a_leader_are_never_chosen() {
        let health = PartitionHealth::default();
        health.set_led("t", vec![2], 4);
        assert!((0..50).all(|_| health.choose("t") == Some(2)));
    }
}
