//! The relay: Kafka topics into Redis queues, exactly once, no Python per job.
//!
//! Ownership: relays of one deployment share a Kafka consumer group, so each
//! partition has one owner and moves to another relay within seconds when its
//! owner dies. Exactly once: every batch goes into Redis with one script that
//! also records, in the queue's `relayed` hash, the offset written up to; a
//! record below it is skipped. A new owner starts each partition where Redis
//! says it ends (not where Kafka's committed offset says), and a relay that
//! lost a partition can only add records nobody wrote yet, in order.
//! Redis going back in time or losing everything is [`recovery`]'s: the
//! committed Kafka offset is each partition's watermark, the lowest offset
//! whose job has not finished.
//!
//! Control: a rate limit (jobs/s) and a pause per topic live in Redis
//! (`cv:[<ns>:]relay:control`), re-read twice a second by every relay, so a
//! change from the CLI takes effect within a second with no restart. A relay
//! owning k of a topic's n partitions takes k/n of the topic's rate. Jobs
//! over the rate wait in the relay (their partitions paused meanwhile), never
//! dropped; a paused topic's partitions stop fetching, and the backlog waits
//! in Kafka.
//!
//! Shadow mode per topic (`shadow:<topic>` in the same hash) reads, checks
//! and counts jobs and drops them, moving the fence on, for double writes.
//!
//! Observability: counters, a Redis write latency histogram and per-partition
//! lag in [`RelayStats`], rendered for Prometheus by [`render_metrics`], and
//! published once a second to Redis (`cv:[<ns>:]relay:status`, one JSON field
//! per relay) for `conveyor relays`.
//!
//! The rooms, one role each:
//! - this file: the configuration, the handle, and wiring the threads;
//! - [`reader`]: the consume loop (its own thread), with [`rebalance`];
//! - [`flow`]: flow control as pure decisions (rates, pauses, guards);
//! - [`writer`]: Redis writes on a thread of their own;
//! - [`observer`]: lag and status, once a second, on a third thread;
//! - [`recovery`]: Redis that lost what it held, and the watermarks;
//! - [`dead_letters`]: records that can never be relayed;
//! - [`stats`]: counters and their Prometheus rendering;
//! - [`batch`]: what the reader hands the writer.

mod batch;
mod dead_letters;
mod flow;
mod observer;
mod reader;
mod rebalance;
mod recovery;
mod stats;
mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

pub use dead_letters::HEADER_DEAD_REASON;
pub use stats::{render_metrics, ControlState, PartitionLag, RelayStats};

use crate::error::{Error, Result};
use crate::id::new_process_id;
use crate::kafka::names::dead_letter_topic;
use crate::kafka::{create_missing_like, KafkaConfig};
use crate::store::keys::QueueKeys;
use crate::store::RedisStore;

/// What a relay process does.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Kafka to read from.
    pub kafka: KafkaConfig,
    /// Consumer group shared by the relays of one deployment.
    pub group_id: String,
    /// Redis to write to.
    pub redis_url: String,
    /// Namespace of the Redis keys.
    pub namespace: String,
    /// `(topic, queue)`: each topic is relayed into its queue.
    pub routes: Vec<(String, String)>,
    /// Most records in one batch.
    pub batch_max: usize,
    /// How long a batch may wait to fill after its first record, and only
    /// while the writer is busy with an earlier one (an idle writer takes
    /// what has come at once).
    pub batch_wait: Duration,
    /// Redis memory guard: stop writing at this fraction of `maxmemory`...
    pub memory_high: f64,
    /// ...and resume below this one. No guard when Redis has no `maxmemory`.
    pub memory_low: f64,
    /// Queue depth guard: stop writing into a queue holding this many jobs
    /// (`None`: no limit)...
    pub depth_high: Option<u64>,
    /// ...and resume below this many.
    pub depth_low: u64,
    /// Whether relayed jobs are counted in the queues' tallies (`store::tally`).
    pub tallies: bool,
}

impl RelayConfig {
    /// Refuses settings the relay cannot run with.
    pub fn validate(&self) -> Result<()> {
        if self.routes.is_empty() {
            return Err(Error::Config(
                "the relay needs at least one topic".to_owned(),
            ));
        }
        let (low, high) = (self.memory_low, self.memory_high);
        if !(0.0 < low && low <= high && high <= 1.0) {
            return Err(Error::Config(format!(
                "water marks must satisfy 0 < memory_low <= memory_high <= 1 \
                 (memory_low {low}, memory_high {high})"
            )));
        }
        if self.depth_high.is_some_and(|high| self.depth_low > high) {
            return Err(Error::Config(
                "depth_low must not exceed depth_high".to_owned(),
            ));
        }
        Ok(())
    }
}

/// A relay running on its own thread.
pub struct RelayHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
    observer: Option<JoinHandle<()>>,
    stats: Arc<RelayStats>,
}

impl RelayHandle {
    /// Its counters.
    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }

    /// Whether its threads all still run: false once the relay loop ended
    /// by itself (a fatal Kafka or configuration error) or was stopped.
    pub fn running(&self) -> bool {
        let reader = self.thread.as_ref().is_some_and(|t| !t.is_finished());
        reader && self.observer.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Finishes the batch in flight, commits, leaves the group, and returns
    /// the loop's outcome.
    pub fn stop(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(observer) = self.observer.take() {
            let _ = observer.join();
        }
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(Error::Internal("the relay thread panicked".to_owned()))),
            None => Ok(()),
        }
    }
}

/// Starts a relay: creates the dead-letter topics, joins the group, relays.
pub fn start(config: RelayConfig) -> Result<RelayHandle> {
    config.validate()?;
    let mut queues = HashMap::new();
    for (topic, queue) in &config.routes {
        queues.insert(topic.clone(), QueueKeys::new(&config.namespace, queue)?);
    }
    // As many copies as its job topic: a dead letter is a job too.
    let dead_letters: Vec<(String, String)> = config
        .routes
        .iter()
        .map(|(topic, _)| (dead_letter_topic(topic), topic.clone()))
        .collect();
    create_missing_like(&config.kafka, &dead_letters, Duration::from_secs(10))?;
    let stats = Arc::new(RelayStats::default());
    let recovery = Arc::new(recovery::Recovery::default());
    let stop = Arc::new(AtomicBool::new(false));
    let context = rebalance::RelayContext {
        redis_url: config.redis_url.clone(),
        queues: queues.clone(),
        stats: Arc::clone(&stats),
        recovery: Arc::clone(&recovery),
    };
    let consumer = rebalance::subscribe(&config, context)?;
    let dead_letters =
        dead_letters::DeadLetters::new(&config.kafka, Arc::clone(&stats), Arc::clone(&stop))?;
    // One request for every topic: asked topic by topic, a relay of 50
    // queues took 12 s to start (bench/scale_bench.py).
    let mut partitions = HashMap::new();
    if let Ok(metadata) = consumer.fetch_metadata(None, Duration::from_secs(5)) {
        for t in metadata.topics() {
            if config.routes.iter().any(|(topic, _)| topic == t.name()) {
                partitions.insert(t.name().to_string(), t.partitions().len().max(1));
            }
        }
    }
    let (to_writer, batches) = sync_channel(1);
    let unwritten = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = writer::Writer {
        queues: queues.clone(),
        store: None,
        redis_url: config.redis_url.clone(),
        stats: Arc::clone(&stats),
        recovery: Arc::clone(&recovery),
        stop: Arc::clone(&stop),
        tally: config.tallies,
        unwritten: Arc::clone(&unwritten),
    };
    let writer = spawn("conveyor-relay-writer", move || writer.run(&batches))?;
    let batch_max = config.batch_max.max(1);
    let guard = flow::Guard::new(
        config.memory_high,
        config.memory_low,
        config.depth_high,
        config.depth_low,
    );
    let reader = reader::Reader {
        namespace: config.namespace.clone(),
        topics: config
            .routes
            .iter()
            .map(|(t, _)| Arc::from(t.as_str()))
            .collect(),
        flow: flow::Flow::new(guard, partitions, batch_max),
        controls_read_at: None,
        guard_read_at: None,
        consumer,
        dead_letters,
        queues: queues.clone(),
        store: None,
        redis_url: config.redis_url.clone(),
        stats: Arc::clone(&stats),
        stop: Arc::clone(&stop),
        batch_max,
        batch_wait: config.batch_wait,
        to_writer: Some(to_writer),
        unwritten,
        writer: Some(writer),
        recovery: Arc::clone(&recovery),
        committed_at: std::time::Instant::now(),
    };
    let watermarks: BaseConsumer = config
        .kafka
        .client_config()
        .set("group.id", format!("{}.observer", config.group_id))
        .create()
        .map_err(Error::kafka("create relay observer"))?;
    let observer = observer::Observer {
        namespace: config.namespace.clone(),
        redis_url: config.redis_url.clone(),
        queues,
        watermarks,
        store: None,
        stats: Arc::clone(&stats),
        relay_id: new_process_id(),
        recovery,
        generation: None,
        published: None,
        starts: Default::default(),
    };
    let thread = spawn("conveyor-relay", move || reader.run())?;
    let observer_stop = Arc::clone(&stop);
    let observer = spawn("conveyor-relay-observer", move || {
        observer.run(&observer_stop)
    })?;
    Ok(RelayHandle {
        stop,
        thread: Some(thread),
        observer: Some(observer),
        stats,
    })
}

fn spawn<T: Send + 'static>(
    name: &str,
    run: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(run)
        .map_err(|e| Error::Internal(format!("cannot start thread {name}: {e}")))
}

/// The connection in `slot`, opened first if there is none (a failed write
/// empties the slot, so the next call reconnects).
fn connected<'a>(slot: &'a mut Option<RedisStore>, url: &str) -> Result<&'a mut RedisStore> {
    if slot.is_none() {
        *slot = Some(RedisStore::connect(url, Duration::from_secs(5))?);
    }
    slot.as_mut()
        .ok_or_else(|| Error::Internal("no Redis connection".to_owned()))
}
