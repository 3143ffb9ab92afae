//! The relay: Kafka topics into Redis queues, exactly once, no Python per job.
//!
//! Ownership: relays of one deployment share a Kafka consumer group, so each
//! partition has one owner and moves to another relay within seconds when its
//! owner dies. Exactly once: every batch goes into Redis with one script that
//! also records, in the queue's `relayed` hash, the offset written up to; a
//! record below it is skipped. A new owner starts each partition where Redis
//! says it ends (not where Kafka's committed offset says), and a relay that
//! lost a partition can only add records nobody wrote yet, in order.
//! Kafka offsets are committed after Redis holds the jobs, for lag reporting.
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
//! lag (each second: the partition's high watermark, asked of the broker,
//! minus the offset Redis holds records up to) in [`RelayStats`], rendered for Prometheus by
//! [`render_metrics`], and published once a second to Redis
//! (`cv:[<ns>:]relay:status`, one JSON field per relay) for `conveyor relays`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::envelope::{append_stage, EnvelopeView, Stage, STAGE_LEN};
use crate::error::{Error, Result};
use crate::id::now_us;
use crate::kafka::{create_topic, KafkaConfig};
use crate::keys::QueueKeys;
use crate::metrics::{render_counter, render_gauge, Histogram};
use crate::queue::{admit_command, Admission, Admitted, Fenced};
use crate::redis_store::RedisStore;

/// Header on a dead-lettered record: why it could not be relayed.
pub const HEADER_DEAD_REASON: &str = "cv-dead-reason";

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
    /// How long a batch may wait to fill after its first record.
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
}

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
    /// Records sent to a dead-letter topic.
    pub dead_lettered: AtomicU64,
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
    /// Partitions this relay owns now.
    pub assignment: Mutex<Vec<(String, i32)>>,
    /// Lag of each owned partition, refreshed each second.
    pub partitions: Mutex<Vec<PartitionLag>>,
    /// The controls in force, as last read from Redis.
    pub controls: Mutex<ControlState>,
    /// Duration of each pipelined write of a batch into Redis.
    pub write_seconds: Histogram,
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
                .unwrap_or_else(|_| Err(Error::Timeout("relay thread panicked".to_owned()))),
            None => Ok(()),
        }
    }
}

/// Starts a relay: creates the dead-letter topics, joins the group, relays.
pub fn start(config: RelayConfig) -> Result<RelayHandle> {
    if config.routes.is_empty() {
        return Err(Error::InvalidJob(
            "the relay needs at least one topic".to_owned(),
        ));
    }
    let mut queues = HashMap::new();
    for (topic, queue) in &config.routes {
        queues.insert(topic.clone(), QueueKeys::new(&config.namespace, queue)?);
        create_topic(
            &config.kafka,
            &dead_letter_topic(topic),
            1,
            1,
            Duration::from_secs(10),
        )?;
    }
    let stats = Arc::new(RelayStats::default());
    let context = RelayContext {
        redis_url: config.redis_url.clone(),
        queues: queues.clone(),
        stats: Arc::clone(&stats),
    };
    let mut client = config.kafka.client_config();
    client
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        // Offsets are stored by hand, only after Redis holds the jobs.
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // A dead relay's partitions move within seconds.
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("enable.partition.eof", "false")
        // Relay memory must not grow with the backlog. librdkafka bounds its
        // prefetch in *compressed* bytes (queued.max.messages.kbytes, all
        // partitions together) and in messages per partition; each message
        // costs a few hundred bytes once decompressed, so well-compressing
        // jobs took 300-400 MB with large fetches. Small fetches are as fast
        // provided the next fetch is not postponed a whole second
        // (fetch.queue.backoff.ms, default 1000) whenever the queue is full:
        // measured with bench/relay_bench.py, 2M jobs of 100 bytes, 3
        // partitions: 87 MB peak RSS and 300k jobs/s, against 360 MB and
        // 230k jobs/s with 16 MB fetches and the default backoff.
        .set("queued.max.messages.kbytes", "2048")
        .set("queued.min.messages", "20000")
        .set("fetch.queue.backoff.ms", "2")
        .set("max.partition.fetch.bytes", "524288")
        .set("fetch.max.bytes", "2097152");
    // User properties win over our defaults.
    for (key, value) in &config.kafka.properties {
        client.set(key, value);
    }
    let consumer: BaseConsumer<RelayContext> = client
        .create_with_context(context)
        .map_err(Error::kafka("create relay consumer"))?;
    let topics: Vec<&str> = config.routes.iter().map(|(t, _)| t.as_str()).collect();
    consumer
        .subscribe(&topics)
        .map_err(Error::kafka("subscribe"))?;
    let dead_letters: ThreadedProducer<DefaultProducerContext> = config
        .kafka
        .client_config()
        .set("acks", "all")
        .create()
        .map_err(Error::kafka("create dead-letter producer"))?;
    let mut partitions = HashMap::new();
    for (topic, _) in &config.routes {
        if let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            if let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) {
                partitions.insert(topic.clone(), t.partitions().len().max(1));
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (to_writer, batches) = sync_channel::<Vec<PartitionBatch>>(0);
    let (written_tx, written) = sync_channel(64);
    let writer = Writer {
        queues: queues.clone(),
        store: None,
        redis_url: config.redis_url.clone(),
        stats: Arc::clone(&stats),
        stop: Arc::clone(&stop),
    };
    let writer = std::thread::Builder::new()
        .name("conveyor-relay-writer".to_owned())
        .spawn(move || writer.run(&batches, &written_tx))
        .map_err(|e| Error::Timeout(format!("cannot start the relay writer: {e}")))?;
    let worker = Relay {
        namespace: config.namespace.clone(),
        partitions,
        held: HashMap::new(),
        topics: config
            .routes
            .iter()
            .map(|(t, _)| Arc::from(t.as_str()))
            .collect(),
        controls: Controls::default(),
        buckets: HashMap::new(),
        paused_now: HashSet::new(),
        last_assignment: Vec::new(),
        consumer,
        dead_letters,
        queues,
        store: None,
        redis_url: config.redis_url.clone(),
        stats: Arc::clone(&stats),
        stop: Arc::clone(&stop),
        batch_max: config.batch_max.max(1),
        batch_wait: config.batch_wait,
        guard: Guard {
            memory_high: config.memory_high,
            memory_low: config.memory_low,
            depth_high: config.depth_high,
            depth_low: config.depth_low,
            memory_on: false,
            deep: HashSet::new(),
        },
        guard_read_at: None,
        to_writer: Some(to_writer),
        written,
        writer: Some(writer),
    };
    // Lag and status are measured off the relay's thread: asking a broker
    // for watermarks takes round trips the relay loop must not wait for.
    let watermarks: BaseConsumer = config
        .kafka
        .client_config()
        .set("group.id", format!("{}.observer", config.group_id))
        .create()
        .map_err(Error::kafka("create relay observer"))?;
    let observer = Observer {
        namespace: config.namespace.clone(),
        redis_url: config.redis_url.clone(),
        queues: worker.queues.clone(),
        watermarks,
        store: None,
        stats: Arc::clone(&stats),
        relay_id: crate::worker::new_worker_id(),
    };
    let thread = std::thread::Builder::new()
        .name("conveyor-relay".to_owned())
        .spawn(move || worker.run())
        .map_err(|e| Error::Timeout(format!("cannot start the relay thread: {e}")))?;
    let observer_stop = Arc::clone(&stop);
    let observer = std::thread::Builder::new()
        .name("conveyor-relay-observer".to_owned())
        .spawn(move || observer.run(&observer_stop))
        .map_err(|e| Error::Timeout(format!("cannot start the relay observer: {e}")))?;
    Ok(RelayHandle {
        stop,
        thread: Some(thread),
        observer: Some(observer),
        stats,
    })
}

/// The connection in `slot`, opened first if there is none (a failed write
/// empties the slot, so the next call reconnects).
fn connected<'a>(slot: &'a mut Option<RedisStore>, url: &str) -> Result<&'a mut RedisStore> {
    if slot.is_none() {
        *slot = Some(RedisStore::connect(url, Duration::from_secs(5))?);
    }
    slot.as_mut()
        .ok_or_else(|| Error::Timeout("no Redis connection".to_owned()))
}

/// Where records that cannot be relayed go, with the reason in a header.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dead")
}

struct RelayContext {
    redis_url: String,
    queues: HashMap<String, QueueKeys>,
    stats: Arc<RelayStats>,
}

impl ClientContext for RelayContext {}

impl ConsumerContext for RelayContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let assigned = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.start_where_redis_ends(tpl);
                consumer.assign(tpl).map(|_| tpl.clone())
            }
            _ => consumer.unassign().map(|_| TopicPartitionList::new()),
        };
        let owned = assigned
            .map(|tpl| {
                tpl.elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect()
            })
            .unwrap_or_default();
        *self
            .stats
            .assignment
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = owned;
    }
}

impl RelayContext {
    /// Sets each newly assigned partition's start to the offset Redis holds
    /// records up to. Without an answer from Redis, Kafka's committed offset
    /// is used; the script's check still keeps every write exactly-once.
    fn start_where_redis_ends(&self, tpl: &mut TopicPartitionList) {
        let Ok(mut store) = RedisStore::connect(&self.redis_url, Duration::from_secs(2)) else {
            return;
        };
        let mut relayed: HashMap<String, HashMap<String, i64>> = HashMap::new();
        let wanted: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        for (topic, partition) in wanted {
            let Some(keys) = self.queues.get(&topic) else {
                continue;
            };
            let offsets = relayed.entry(topic.clone()).or_insert_with(|| {
                store
                    .relayed_offsets(keys)
                    .map(|v| v.into_iter().collect())
                    .unwrap_or_default()
            });
            if let Some(&next) = offsets.get(&format!("{topic}:{partition}")) {
                let _ = tpl.set_partition_offset(&topic, partition, Offset::Offset(next));
            }
        }
    }
}

/// Relay controls as last read from Redis.
#[derive(Default)]
struct Controls {
    rates: HashMap<String, f64>,
    paused: HashSet<String>,
    /// Topics in shadow mode: read, checked, counted and dropped.
    shadow: HashSet<String>,
    read_at: Option<Instant>,
}

/// Redis protection: the relay stops writing when Redis (or one queue) is
/// near full and resumes by itself once workers have drained it.
struct Guard {
    memory_high: f64,
    memory_low: f64,
    depth_high: Option<u64>,
    depth_low: u64,
    /// Above the memory high-water mark (until below the low one).
    memory_on: bool,
    /// Topics whose queue is over its depth high-water mark.
    deep: HashSet<String>,
}

fn stopped(guard: &Guard, controls: &Controls, topic: &str) -> bool {
    guard.memory_on || guard.deep.contains(topic) || controls.paused.contains(topic)
}

/// How often a relay reads Redis memory and queue depths: at 300,000 jobs/s
/// about 2 MB land in 20 ms, well inside the guard's headroom.
const GUARD_REFRESH: Duration = Duration::from_millis(20);

/// How often a relay measures its partitions' lag and publishes its status.
const OBSERVE_EVERY: Duration = Duration::from_secs(1);

/// How often a relay re-reads its controls.
const CONTROL_REFRESH: Duration = Duration::from_millis(500);

/// A token bucket for one topic's rate.
struct Bucket {
    tokens: f64,
    at: Instant,
}

struct Relay {
    namespace: String,
    /// Partition count per topic, to split a topic's rate between relays.
    partitions: HashMap<String, usize>,
    /// Jobs read but not yet released by their topic's rate, in order.
    held: HashMap<String, VecDeque<Record>>,
    /// The relayed topics' names, shared by every record read from them.
    topics: Vec<Arc<str>>,
    controls: Controls,
    buckets: HashMap<String, Bucket>,
    /// Partitions this relay has paused (for a pause or for held jobs).
    paused_now: HashSet<(String, i32)>,
    last_assignment: Vec<(String, i32)>,
    guard: Guard,
    guard_read_at: Option<Instant>,
    consumer: BaseConsumer<RelayContext>,
    dead_letters: ThreadedProducer<DefaultProducerContext>,
    queues: HashMap<String, QueueKeys>,
    store: Option<RedisStore>,
    redis_url: String,
    stats: Arc<RelayStats>,
    stop: Arc<AtomicBool>,
    batch_max: usize,
    batch_wait: Duration,
    /// Batches to the writer thread (a rendezvous: one being written while
    /// the next is read and decoded, never more).
    to_writer: Option<SyncSender<Vec<PartitionBatch>>>,
    /// `(topic, partition, next offset)` of every partition batch written.
    written: Receiver<Vec<(String, i32, i64)>>,
    writer: Option<JoinHandle<()>>,
}

/// Writes batches into Redis on its own thread, so that reading and decoding
/// the next batch overlaps with Redis running the script for this one: with
/// one thread doing both, the relay and Redis each sat idle half the time
/// (measured: ~0.5 core each at 315k jobs/s on 2 cores). Batches are written
/// in the order they come, so each partition stays in offset order.
struct Writer {
    queues: HashMap<String, QueueKeys>,
    store: Option<RedisStore>,
    redis_url: String,
    stats: Arc<RelayStats>,
    stop: Arc<AtomicBool>,
}

/// A record read from Kafka, kept until its batch is handed to the writer.
struct Record {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    /// The broker's append time, µs since the epoch.
    kafka_us: u64,
    /// The record's value, with capacity for the two stage stamps.
    value: Vec<u8>,
}

/// One partition's share of a batch.
struct PartitionBatch {
    topic: Arc<str>,
    partition: i32,
    /// `(offset, envelope with stage stamps)` in offset order.
    jobs: Vec<Admission>,
    /// The offset after the last record seen (dead letters included).
    next_offset: i64,
}

impl PartitionBatch {
    /// The partition's field in its queue's fence hash.
    fn fence(&self) -> String {
        format!("{}:{}", self.topic, self.partition)
    }
}

impl Relay {
    fn run(mut self) -> Result<()> {
        while !self.stop.load(Ordering::Relaxed) {
            self.refresh_controls();
            self.apply_pauses();
            for record in self.collect() {
                match self.held.get_mut(&*record.topic) {
                    Some(queue) => queue.push_back(record),
                    None => {
                        let topic = record.topic.to_string();
                        self.held.entry(topic).or_default().push_back(record);
                    }
                }
            }
            if self
                .guard_read_at
                .is_none_or(|at| at.elapsed() >= GUARD_REFRESH)
            {
                self.guard_read_at = Some(Instant::now());
                self.check_guard();
            }
            let ready = self.release();
            let waiting: usize = self.held.values().map(VecDeque::len).sum();
            self.stats.held.store(waiting as u64, Ordering::Relaxed);
            if !ready.is_empty() {
                self.relay(ready);
            }
            self.store_written();
        }
        // Let the writer finish the batch it holds, then store its offsets.
        self.to_writer = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        self.store_written();
        // Commit what was stored, then leave the group so partitions move now.
        let _ = self
            .consumer
            .commit_consumer_state(rdkafka::consumer::CommitMode::Sync);
        self.consumer.unsubscribe();
        let _ = self.dead_letters.flush(Duration::from_secs(10));
        Ok(())
    }

    /// Re-reads the controls from Redis twice a second; keeps the last ones
    /// read while Redis does not answer.
    fn refresh_controls(&mut self) {
        if self
            .controls
            .read_at
            .is_some_and(|at| at.elapsed() < CONTROL_REFRESH)
        {
            return;
        }
        self.controls.read_at = Some(Instant::now());
        let namespace = self.namespace.clone();
        let Ok(store) = self.store() else {
            return;
        };
        let Ok(fields) = store.relay_controls(&namespace) else {
            self.store = None;
            return;
        };
        let mut rates = HashMap::new();
        let mut paused = HashSet::new();
        let mut shadow = HashSet::new();
        for (field, value) in fields {
            if let Some(topic) = field.strip_prefix("rate:") {
                if let Ok(rate) = value.parse::<f64>() {
                    if rate > 0.0 && rate.is_finite() {
                        rates.insert(topic.to_owned(), rate);
                    }
                }
            } else if let Some(topic) = field.strip_prefix("paused:") {
                paused.insert(topic.to_owned());
            } else if let Some(topic) = field.strip_prefix("shadow:") {
                shadow.insert(topic.to_owned());
            }
        }
        self.buckets.retain(|topic, _| rates.contains_key(topic));
        self.controls.rates = rates;
        self.controls.paused = paused;
        self.controls.shadow = shadow;
        let mut state = ControlState {
            rates: self
                .controls
                .rates
                .iter()
                .map(|(t, r)| (t.clone(), *r))
                .collect(),
            paused: self.controls.paused.iter().cloned().collect(),
            shadow: self.controls.shadow.iter().cloned().collect(),
        };
        state.rates.sort_by(|a, b| a.0.cmp(&b.0));
        state.paused.sort();
        state.shadow.sort();
        *self
            .stats
            .controls
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = state;
    }

    /// Reads Redis memory and queue depths and moves the guard's state
    /// between its water marks (hysteresis, so it does not flap).
    fn check_guard(&mut self) {
        let queues: Vec<(String, QueueKeys)> = self
            .queues
            .iter()
            .map(|(t, k)| (t.clone(), k.clone()))
            .collect();
        let guard_depth = self.guard.depth_high.is_some();
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
        let g = &mut self.guard;
        let engaged_before = u64::from(g.memory_on) + g.deep.len() as u64;
        if max > 0 {
            let fill = used as f64 / max as f64;
            if fill >= g.memory_high {
                g.memory_on = true;
            } else if fill <= g.memory_low {
                g.memory_on = false;
            }
        } else {
            g.memory_on = false;
        }
        if let Some(high) = g.depth_high {
            for (topic, depth) in depths {
                if depth >= high {
                    g.deep.insert(topic);
                } else if depth <= g.depth_low {
                    g.deep.remove(&topic);
                }
            }
        }
        let engaged_now = u64::from(g.memory_on) + g.deep.len() as u64;
        if engaged_now > engaged_before {
            self.stats
                .guard_engaged
                .fetch_add(engaged_now - engaged_before, Ordering::Relaxed);
        }
        self.stats
            .memory_guarded
            .store(u64::from(g.memory_on), Ordering::Relaxed);
        self.stats
            .depth_guarded
            .store(g.deep.len() as u64, Ordering::Relaxed);
    }

    /// Whether nothing may be written into `topic`'s queue now: paused by an
    /// operator, or held back by the guard.
    fn stopped(&self, topic: &str) -> bool {
        stopped(&self.guard, &self.controls, topic)
    }

    /// Pauses the partitions of paused topics and of topics with a batch of
    /// jobs held for their rate; resumes the others.
    fn apply_pauses(&mut self) {
        let assignment = self
            .stats
            .assignment
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if assignment != self.last_assignment {
            // A new assignment starts unpaused; held jobs of partitions gone
            // elsewhere are their new owner's now.
            self.paused_now.clear();
            let owned: HashSet<(&str, i32)> =
                assignment.iter().map(|(t, p)| (t.as_str(), *p)).collect();
            for queue in self.held.values_mut() {
                queue.retain(|r| owned.contains(&(&*r.topic, r.partition)));
            }
            self.last_assignment = assignment.clone();
        }
        let want: HashSet<(String, i32)> = assignment
            .into_iter()
            .filter(|(topic, _)| {
                // Keep fetching while a batch or less waits: pausing at every
                // held job would leave gaps (a resumed partition takes a fetch
                // round trip to flow again) and the rate would sag.
                self.stopped(topic)
                    || self
                        .held
                        .get(topic)
                        .is_some_and(|q| q.len() >= self.batch_max)
            })
            .collect();
        let mut pause = TopicPartitionList::new();
        for (topic, partition) in want.difference(&self.paused_now) {
            pause.add_partition(topic, *partition);
        }
        let mut resume = TopicPartitionList::new();
        for (topic, partition) in self.paused_now.difference(&want) {
            resume.add_partition(topic, *partition);
        }
        if pause.count() > 0 {
            let _ = self.consumer.pause(&pause);
        }
        if resume.count() > 0 {
            let _ = self.consumer.resume(&resume);
        }
        self.paused_now = want;
    }

    /// Takes from the held jobs what each topic's rate allows now.
    fn release(&mut self) -> Vec<Record> {
        let now = Instant::now();
        let mut out = Vec::new();
        for (topic, queue) in &mut self.held {
            if queue.is_empty() || stopped(&self.guard, &self.controls, topic) {
                continue;
            }
            let n = match self.controls.rates.get(topic) {
                None => queue.len(),
                Some(&rate) => {
                    let owned = self
                        .last_assignment
                        .iter()
                        .filter(|(t, _)| t == topic)
                        .count()
                        .max(1);
                    let total = self.partitions.get(topic).copied().unwrap_or(owned);
                    let share = rate * owned as f64 / total.max(owned) as f64;
                    let bucket = self.buckets.entry(topic.clone()).or_insert(Bucket {
                        tokens: 0.0,
                        at: now,
                    });
                    // At most a quarter second's worth saved up: bursts stay small.
                    let burst = share * 0.25 + 1.0;
                    bucket.tokens = (bucket.tokens
                        + share * now.duration_since(bucket.at).as_secs_f64())
                    .min(burst);
                    bucket.at = now;
                    let n = (bucket.tokens.floor() as usize).min(queue.len());
                    bucket.tokens -= n as f64;
                    n
                }
            };
            out.extend(queue.drain(..n));
        }
        out
    }

    fn store(&mut self) -> Result<&mut RedisStore> {
        connected(&mut self.store, &self.redis_url)
    }

    /// Waits up to 100 ms for a first record, then up to `batch_wait` more.
    fn collect(&self) -> Vec<Record> {
        let mut messages = Vec::new();
        match self.consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => messages.push(self.record(&message)),
            // Consumer errors are transient (a broker away); librdkafka retries.
            Some(Err(_)) | None => return messages,
        }
        let deadline = Instant::now() + self.batch_wait;
        while messages.len() < self.batch_max {
            // What librdkafka holds already is taken without a timeout: a
            // poll with one reads the clock, and the clock reads per record
            // were a tenth of the relay's CPU. Only an empty queue waits.
            let polled = match self.consumer.poll(Duration::ZERO) {
                Some(Ok(message)) => Some(Ok(message)),
                Some(Err(_)) | None => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    self.consumer.poll(left)
                }
            };
            if let Some(Ok(message)) = polled {
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

    fn relay(&mut self, records: Vec<Record>) {
        let relayed_at = now_us();
        let mut batches: Vec<PartitionBatch> = Vec::new();
        let mut dead = Vec::new();
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
                    batches.push(PartitionBatch {
                        topic: Arc::clone(&topic),
                        partition,
                        jobs: Vec::new(),
                        next_offset: offset,
                    });
                    batches.len() - 1
                }
            };
            let batch = &mut batches[index];
            batch.next_offset = offset + 1;
            let fields = EnvelopeView::parse(&value).map(|e| {
                (
                    e.run_at_us.map_or(0, |us| us / 1000),
                    e.dedup_key.map(str::to_owned),
                )
            });
            match fields {
                // Shadow mode: the job was written to Redis by the direct
                // path too (double writes); count it and move the fence on.
                Ok(_) if self.controls.shadow.contains(&*topic) => {
                    self.stats.shadowed.fetch_add(1, Ordering::Relaxed);
                }
                Ok((run_at_ms, dedup_key)) => {
                    append_stage(&mut value, Stage::Kafka as u8, kafka_us);
                    append_stage(&mut value, Stage::Relayed as u8, relayed_at);
                    batch.jobs.push(Admission {
                        offset,
                        run_at_ms,
                        dedup_key,
                        envelope: value,
                    });
                }
                Err(err) => dead.push((topic.to_string(), value, err.to_string())),
            }
        }
        // A record that cannot be relayed must not block its partition, nor be
        // lost: it goes to the dead-letter topic before its offset moves on.
        if !dead.is_empty() {
            self.dead_letter(dead);
        }
        if let Some(writer) = &self.to_writer {
            // Fails only when the writer is gone (stopping): nothing of this
            // batch was acknowledged, so its records are read again later.
            let _ = writer.send(batches);
        }
    }

    /// Stores the offsets of what the writer has put into Redis, for the
    /// next commit. Storing fails only for a partition this relay no longer
    /// owns: its new owner starts from what Redis holds.
    fn store_written(&mut self) {
        while let Ok(partitions) = self.written.try_recv() {
            for (topic, partition, next_offset) in partitions {
                let _ = self
                    .consumer
                    .store_offset(&topic, partition, next_offset - 1);
            }
        }
    }

    fn dead_letter(&self, dead: Vec<(String, Vec<u8>, String)>) {
        loop {
            let mut ok = true;
            for (topic, value, reason) in &dead {
                let dead_topic = dead_letter_topic(topic);
                let record = BaseRecord::<(), [u8]>::to(&dead_topic)
                    .payload(value.as_slice())
                    .headers(OwnedHeaders::new().insert(Header {
                        key: HEADER_DEAD_REASON,
                        value: Some(reason.as_str()),
                    }));
                ok &= self.dead_letters.send(record).is_ok();
            }
            if ok && self.dead_letters.flush(Duration::from_secs(10)).is_ok() {
                self.stats
                    .dead_lettered
                    .fetch_add(dead.len() as u64, Ordering::Relaxed);
                return;
            }
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Writer {
    fn run(
        mut self,
        batches: &Receiver<Vec<PartitionBatch>>,
        written: &SyncSender<Vec<(String, i32, i64)>>,
    ) {
        for batch in batches {
            if self.write(&batch) {
                let offsets = batch
                    .iter()
                    .map(|b| (b.topic.to_string(), b.partition, b.next_offset))
                    .collect();
                // The relay drains this channel every loop and at its end.
                let _ = written.send(offsets);
            }
        }
    }

    /// Writes every partition's jobs in one pipeline of script calls,
    /// retrying until Redis takes them; false if the relay was stopped first.
    fn write(&mut self, batches: &[PartitionBatch]) -> bool {
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.try_write(batches) {
                Ok(()) => return true,
                Err(_) => {
                    self.stats.redis_errors.fetch_add(1, Ordering::Relaxed);
                    self.store = None;
                    if self.stop.load(Ordering::Relaxed) {
                        return false;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    fn try_write(&mut self, batches: &[PartitionBatch]) -> Result<()> {
        let began = Instant::now();
        let stats = &self.stats;
        // Counted as each write lands: after a failure part-way, the retry
        // finds the written part behind its fence (and counts it skipped).
        let count = |results: Vec<Admitted>| {
            for admitted in results {
                stats
                    .relayed
                    .fetch_add(admitted.queued + admitted.scheduled, Ordering::Relaxed);
                stats.skipped.fetch_add(admitted.skipped, Ordering::Relaxed);
                stats
                    .duplicates
                    .fetch_add(admitted.duplicates, Ordering::Relaxed);
            }
        };
        let store = connected(&mut self.store, &self.redis_url)?;
        if store.is_cluster() {
            // Each queue's call goes to its node; a retry after a partial
            // write is safe, as `admit` skips what its fence has seen.
            let commands = batches
                .iter()
                .map(|b| admit_command(&self.queues[&*b.topic], &b.fence(), b.next_offset, &b.jobs))
                .collect();
            count(store.connection().pipeline(commands)?);
        } else {
            // One queue's partitions at a time (one topic is one queue): the
            // plain path watches one queue's fences.
            let mut topics: Vec<&str> = Vec::new();
            for batch in batches {
                if !topics.contains(&&*batch.topic) {
                    topics.push(&batch.topic);
                }
            }
            for topic in topics {
                let group: Vec<Fenced<'_>> = batches
                    .iter()
                    .filter(|b| &*b.topic == topic)
                    .map(|b| Fenced {
                        fence: b.fence(),
                        next_offset: b.next_offset,
                        jobs: &b.jobs,
                    })
                    .collect();
                count(store.relay_batches(&self.queues[topic], &group)?);
            }
        }
        self.stats.write_seconds.observe(began.elapsed());
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
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
            "Records sent to a dead-letter topic.",
            &stats.dead_lettered,
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
    let partitions = stats.partitions.lock().unwrap_or_else(|e| e.into_inner());
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
    drop(partitions);
    let controls = stats.controls.lock().unwrap_or_else(|e| e.into_inner());
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

/// Measures a relay's lag and publishes its status, once a second, on its
/// own thread and connections.
struct Observer {
    namespace: String,
    redis_url: String,
    queues: HashMap<String, QueueKeys>,
    watermarks: BaseConsumer,
    store: Option<RedisStore>,
    stats: Arc<RelayStats>,
    /// Names this relay in the published status.
    relay_id: String,
}

impl Observer {
    fn run(mut self, stop: &AtomicBool) {
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if Instant::now() >= next {
                next = Instant::now() + OBSERVE_EVERY;
                self.refresh_lag();
                self.publish_status();
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
    /// records up to, the relay's own truth of what is written.
    fn refresh_lag(&mut self) {
        let owned = self
            .stats
            .assignment
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let before = self
            .stats
            .partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut fences: HashMap<String, HashMap<String, i64>> = HashMap::new();
        let mut lags = Vec::with_capacity(owned.len());
        for (topic, partition) in owned {
            let Ok((low, high)) =
                self.watermarks
                    .fetch_watermarks(&topic, partition, Duration::from_millis(500))
            else {
                // The broker did not answer in time: keep the last reading.
                lags.extend(
                    before
                        .iter()
                        .find(|p| p.topic == topic && p.partition == partition)
                        .cloned(),
                );
                continue;
            };
            if !fences.contains_key(&topic) {
                let Some(keys) = self.queues.get(&topic).cloned() else {
                    continue;
                };
                let Some(store) = self.store() else {
                    return;
                };
                let Ok(read) = store.relayed_offsets(&keys) else {
                    self.store = None;
                    return;
                };
                fences.insert(topic.clone(), read.into_iter().collect());
            }
            let relayed_to = fences[&topic]
                .get(&format!("{topic}:{partition}"))
                .copied()
                .unwrap_or(low)
                .clamp(low, high.max(low));
            lags.push(PartitionLag {
                topic,
                partition,
                high,
                relayed_to,
                lag: high - relayed_to,
            });
        }
        lags.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        *self
            .stats
            .partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = lags;
    }

    /// Publishes this relay's state to Redis for `conveyor relays`; best
    /// effort (a full or absent Redis only delays the next one).
    fn publish_status(&mut self) {
        let stats = &self.stats;
        let status = serde_json::json!({
            "id": self.relay_id,
            "updated_at": now_us() as f64 / 1e6,
            "relayed": stats.relayed.load(Ordering::Relaxed),
            "shadowed": stats.shadowed.load(Ordering::Relaxed),
            "dead_lettered": stats.dead_lettered.load(Ordering::Relaxed),
            "redis_errors": stats.redis_errors.load(Ordering::Relaxed),
            "held": stats.held.load(Ordering::Relaxed),
            "memory_guarded": stats.memory_guarded.load(Ordering::Relaxed) == 1,
            "depth_guarded": stats.depth_guarded.load(Ordering::Relaxed),
            "guard_engaged": stats.guard_engaged.load(Ordering::Relaxed),
            "controls": &*stats.controls.lock().unwrap_or_else(|e| e.into_inner()),
            "partitions": &*stats.partitions.lock().unwrap_or_else(|e| e.into_inner()),
        })
        .to_string();
        let (namespace, id) = (self.namespace.clone(), self.relay_id.clone());
        if let Some(store) = self.store() {
            if store
                .set_relay_status(&namespace, &id, Some(&status))
                .is_err()
            {
                self.store = None;
            }
        }
    }
}
