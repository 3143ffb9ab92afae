//! What a relay counts and shows: counters, owned partitions and their lag,
//! the controls in force, and their rendering for Prometheus.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::metrics::{render_counter, render_gauge, Histogram};

/// Counters a relay keeps while it runs.
#[derive(Default)]
pub struct RelayStats {
    /// Jobs written into Redis.
    pub relayed: AtomicU64,
    /// Records skipped because Redis already held them.
    pub skipped: AtomicU64,
    /// Unique jobs dropped because their dedup key was held by another job.
    pub duplicates: AtomicU64,
    /// Jobs of topics in shadow mode: read, checked and dropped.
    pub shadowed: AtomicU64,
    /// Records a dead-letter topic acknowledged.
    pub dead_lettered: AtomicU64,
    /// Records a dead-letter topic refused or did not take in time (each
    /// still in its job topic; see `dead_letter_failures`).
    pub dead_letter_failed: AtomicU64,
    /// The latest of those: `topic[partition]@offset: reason`.
    pub dead_letter_failures: super::dead_letters::Failures,
    /// Batches written.
    pub batches: AtomicU64,
    /// Failed Redis writes (each retried until it succeeds).
    pub redis_errors: AtomicU64,
    /// Jobs read but waiting for their topic's rate (or its pause to end).
    pub held: AtomicU64,
    /// 1 while the memory guard holds all writes back.
    pub memory_guarded: AtomicU64,
    /// How many queues the depth guard holds back now.
    pub depth_guarded: AtomicU64,
    /// Times a guard started holding writes back (memory, or a queue's depth).
    pub guard_engaged: AtomicU64,
    /// Times a partition was read again because Redis lost part of it
    /// (restored from older files, failed over, wiped).
    pub rewinds: AtomicU64,
    /// Fences found past the end of their partition's log (the topic was
    /// deleted and created again) and moved back to its start.
    pub recreated: AtomicU64,
    /// Partitions this relay owns now.
    pub assignment: Mutex<Vec<(String, i32)>>,
    /// Lag of each owned partition, refreshed each second.
    pub partitions: Mutex<Vec<PartitionLag>>,
    /// The controls in force, as last read from Redis.
    pub controls: Mutex<ControlState>,
    /// Duration of each pipelined write of a batch into Redis.
    pub write_seconds: Histogram,
}

impl RelayStats {
    /// The counters by name, as `Relay.stats()` gives them to Python.
    pub fn counters(&self) -> [(&'static str, u64); 14] {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("relayed", load(&self.relayed)),
            ("skipped", load(&self.skipped)),
            ("duplicates", load(&self.duplicates)),
            ("shadowed", load(&self.shadowed)),
            ("dead_lettered", load(&self.dead_lettered)),
            ("dead_letter_failed", load(&self.dead_letter_failed)),
            ("batches", load(&self.batches)),
            ("redis_errors", load(&self.redis_errors)),
            ("held", load(&self.held)),
            ("memory_guarded", load(&self.memory_guarded)),
            ("depth_guarded", load(&self.depth_guarded)),
            ("guard_engaged", load(&self.guard_engaged)),
            ("rewinds", load(&self.rewinds)),
            ("recreated", load(&self.recreated)),
        ]
    }

    /// The partitions owned now.
    pub fn assignment(&self) -> Vec<(String, i32)> {
        lock(&self.assignment).clone()
    }

    /// The last lag reading of each owned partition.
    pub fn lag(&self) -> Vec<PartitionLag> {
        lock(&self.partitions).clone()
    }
}

/// Locks a stats mutex; a panicked holder left plain data, still readable.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One owned partition's position.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The next offset Kafka will write (high watermark).
    pub high: i64,
    /// The next offset to relay: everything below is in Redis.
    pub relayed_to: i64,
    /// Records in Kafka not yet in Redis.
    pub lag: i64,
    /// The lowest offset whose job has not finished (committed to Kafka):
    /// after a total loss of Redis, the partition is relayed again from
    /// here, so `relayed_to - watermark` bounds what runs again.
    pub watermark: i64,
}

/// Rate limits, pauses and shadow mode per topic, as the relay applies them.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ControlState {
    /// Jobs/s per throttled topic (the topic's total across relays).
    pub rates: Vec<(String, f64)>,
    /// Paused topics.
    pub paused: Vec<String>,
    /// Topics in shadow mode.
    pub shadow: Vec<String>,
    /// Fields of the control hash ignored, with why: `(field, value, reason)`.
    pub ignored: Vec<(String, String, String)>,
}

/// The relay's metrics in Prometheus' text format.
pub fn render_metrics(stats: &RelayStats) -> String {
    let mut out = String::new();
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    for (name, help, value) in [
        ("relayed", "Jobs written into Redis.", &stats.relayed),
        (
            "skipped",
            "Records Redis held already (after a crash or a rebalance).",
            &stats.skipped,
        ),
        (
            "duplicates",
            "Unique jobs dropped: their dedup key was held.",
            &stats.duplicates,
        ),
        (
            "shadowed",
            "Jobs read and dropped in shadow mode.",
            &stats.shadowed,
        ),
        (
            "dead_lettered",
            "Records a dead-letter topic acknowledged.",
            &stats.dead_lettered,
        ),
        (
            "dead_letter_failed",
            "Records a dead-letter topic refused or did not take in time (still in their job topic).",
            &stats.dead_letter_failed,
        ),
        (
            "batches",
            "Pipelined batches written into Redis.",
            &stats.batches,
        ),
        (
            "redis_errors",
            "Failed Redis writes (each retried).",
            &stats.redis_errors,
        ),
        (
            "guard_engaged",
            "Times a guard started holding writes back.",
            &stats.guard_engaged,
        ),
        (
            "rewinds",
            "Times a partition was read again because Redis lost part of it.",
            &stats.rewinds,
        ),
        (
            "recreated_topics",
            "Fences found past the end of their log (topic created again) and moved to its start.",
            &stats.recreated,
        ),
    ] {
        render_counter(
            &mut out,
            &format!("conveyor_relay_{name}_total"),
            help,
            &[("", load(value))],
        );
    }
    render_gauge(
        &mut out,
        "conveyor_relay_held_jobs",
        "Jobs read but waiting for their topic's rate or pause.",
        &[(String::new(), load(&stats.held) as f64)],
    );
    render_gauge(
        &mut out,
        "conveyor_relay_memory_guarded",
        "1 while Redis is over its memory high-water mark and writes are held back.",
        &[(String::new(), load(&stats.memory_guarded) as f64)],
    );
    render_gauge(
        &mut out,
        "conveyor_relay_depth_guarded_queues",
        "Queues over their depth high-water mark.",
        &[(String::new(), load(&stats.depth_guarded) as f64)],
    );
    let partitions = lock(&stats.partitions);
    let label = |p: &PartitionLag| format!("topic=\"{}\",partition=\"{}\"", p.topic, p.partition);
    render_gauge(
        &mut out,
        "conveyor_relay_lag_jobs",
        "Records in Kafka not yet relayed into Redis, per owned partition.",
        &partitions
            .iter()
            .map(|p| (label(p), p.lag as f64))
            .collect::<Vec<_>>(),
    );
    render_gauge(
        &mut out,
        "conveyor_relay_rerun_exposure_jobs",
        "Offsets between the watermark and the fence: what could run again after a total loss of Redis.",
        &partitions
            .iter()
            .map(|p| (label(p), (p.relayed_to - p.watermark).max(0) as f64))
            .collect::<Vec<_>>(),
    );
    drop(partitions);
    let controls = lock(&stats.controls);
    render_gauge(
        &mut out,
        "conveyor_relay_rate_limit_jobs_per_second",
        "Rate limit per throttled topic (all relays together).",
        &controls
            .rates
            .iter()
            .map(|(t, r)| (format!("topic=\"{t}\""), *r))
            .collect::<Vec<_>>(),
    );
    for (name, help, topics) in [
        ("paused", "1 for each paused topic.", &controls.paused),
        (
            "shadow",
            "1 for each topic in shadow mode.",
            &controls.shadow,
        ),
    ] {
        render_gauge(
            &mut out,
            &format!("conveyor_relay_{name}"),
            help,
            &topics
                .iter()
                .map(|t| (format!("topic=\"{t}\""), 1.0))
                .collect::<Vec<_>>(),
        );
    }
    stats.write_seconds.render(
        &mut out,
        "conveyor_relay_redis_write_seconds",
        "Duration of one pipelined write of a batch into Redis.",
    );
    out
}
