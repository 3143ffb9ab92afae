//! The job producer: envelopes into Kafka with delivery tracked per batch.
//!
//! `send` only hands records to librdkafka (which batches and compresses them
//! on its own threads) and returns a [`Pending`] at once; the caller may wait
//! on it or not. Delivery reports arrive in librdkafka's callback (served by
//! the next send, or by the polling thread), which fills in the batch's slot
//! directly: no task or future per job. A failure nobody waited for is never
//! swallowed: when its `Pending` is dropped unobserved, the failure moves to
//! the producer, and the next [`JobProducer::flush`] reports it.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use std::fmt::Write as _;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, ProducerContext};
use rdkafka::ClientContext;

use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::id::JobId;
use crate::kafka::{KafkaConfig, HEADER_ID, HEADER_TRACEPARENT, HEADER_TYPE};
use crate::partitions::PartitionHealth;
use crate::report_polling::{Activity, PolledProducer, Reports};

/// How many failed job ids an error message lists before it only counts.
const FAILURE_SAMPLES: usize = 10;

/// Which acknowledgement a send waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// The partition leader wrote it (lowest latency; the original design's choice).
    Leader,
    /// Every in-sync replica wrote it.
    All,
}

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerOptions {
    /// Acknowledgement level.
    pub acks: Acks,
    /// How long a record may wait for the broker before its send fails.
    pub delivery_timeout: Duration,
    /// How long `send` may wait for room in the local queue before failing
    /// the records that do not fit (Kafka down or far too slow).
    pub enqueue_timeout: Duration,
    /// Which threads serve delivery reports.
    pub reports: Reports,
}

impl Default for ProducerOptions {
    fn default() -> Self {
        Self {
            acks: Acks::Leader,
            delivery_timeout: Duration::from_secs(30),
            enqueue_timeout: Duration::from_secs(5),
            reports: Reports::SendersFirst,
        }
    }
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Partition the broker wrote it to.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
}

/// A delivery failure: which job, and why.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The job that was not written.
    pub id: JobId,
    /// What Kafka (or the local queue) said.
    pub reason: String,
}

#[derive(Default)]
struct Unobserved {
    count: u64,
    samples: Vec<Failure>,
}

impl Unobserved {
    fn record(&mut self, failures: impl IntoIterator<Item = Failure>) {
        for failure in failures {
            self.count += 1;
            if self.samples.len() < FAILURE_SAMPLES {
                self.samples.push(failure);
            }
        }
    }
}

/// Batches awaiting reports, and the threads in `flush` waiting for none.
#[derive(Default)]
struct InFlight {
    batches: usize,
    flushers: usize,
}

struct Shared {
    unobserved: Mutex<Unobserved>,
    in_flight: Mutex<InFlight>,
    settled: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Which batch, and which slot in it, a record reports to; `tracked` when
/// the producer chose its partition (and so follows that partition's health).
struct SlotData {
    batch: Arc<Batch>,
    index: usize,
    tracked: bool,
}
type Slot = Box<SlotData>;
/// A record as handed to librdkafka.
type Record<'a> = BaseRecord<'a, str, [u8], Slot>;

/// librdkafka's callbacks land here.
struct Context {
    shared: Arc<Shared>,
    health: Arc<PartitionHealth>,
    activity: Arc<Activity>,
}

impl ClientContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = Slot;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let SlotData {
            batch,
            index,
            tracked,
        } = *opaque;
        let outcome = match result {
            Ok(message) => {
                if tracked {
                    self.health
                        .reported(message.topic(), message.partition(), true);
                }
                Ok(Delivered {
                    partition: message.partition(),
                    offset: message.offset(),
                })
            }
            Err((err, message)) => {
                if tracked {
                    self.health
                        .reported(message.topic(), message.partition(), false);
                }
                Err(err.to_string())
            }
        };
        batch.complete(index, outcome, &self.shared);
        self.activity.report_served();
    }
}

/// What [`JobProducer::try_send`] did.
pub enum TrySend {
    /// Handed to librdkafka. `refresh_due`: the topic's partition list is
    /// due for a re-read; call [`JobProducer::refresh_partitions`] where
    /// blocking is fine (this caller is the only one told).
    Sent {
        /// The acknowledgements to wait for.
        pending: Pending,
        /// Whether to refresh the partition list.
        refresh_due: bool,
    },
    /// Nothing was sent: the topic's partitions were never read. Call
    /// [`JobProducer::send`] where blocking is fine.
    NeedsMetadata,
}

fn encode_all(envelopes: &[Envelope]) -> Result<Vec<Vec<u8>>> {
    envelopes.iter().map(Envelope::encode).collect()
}

/// How many of `envelopes` the producer places: jobs without a dedup key or
/// a pinned partition go to one healthy partition per call (as librdkafka's
/// sticky partitioner would).
fn free_records(envelopes: &[Envelope], partition: Option<i32>) -> u64 {
    match partition {
        None => envelopes.iter().filter(|e| e.dedup_key.is_none()).count() as u64,
        Some(_) => 0,
    }
}

/// A producer of envelopes. Cheap to clone; clones share one librdkafka client.
#[derive(Clone)]
pub struct JobProducer {
    inner: Arc<PolledProducer<Context>>,
    options: ProducerOptions,
    shared: Arc<Shared>,
    health: Arc<PartitionHealth>,
}

impl JobProducer {
    /// Creates a producer. User properties in `config` win over our defaults.
    pub fn new(config: &KafkaConfig, options: ProducerOptions) -> Result<Self> {
        let mut client = config.client_config();
        client
            .set(
                "message.timeout.ms",
                options.delivery_timeout.as_millis().to_string(),
            )
            .set(
                "acks",
                match options.acks {
                    Acks::Leader => "1",
                    Acks::All => "all",
                },
            )
            // Idempotence needs acks=all; with leader acks, retries may duplicate,
            // which the relay's dedup and at-least-once workers absorb.
            .set(
                "enable.idempotence",
                (options.acks == Acks::All).to_string(),
            )
            .set("compression.type", "lz4")
            .set("linger.ms", "2");
        for (key, value) in &config.properties {
            client.set(key, value);
        }
        let shared = Arc::new(Shared {
            unobserved: Mutex::new(Unobserved::default()),
            in_flight: Mutex::new(InFlight::default()),
            settled: Condvar::new(),
        });
        let health = Arc::new(PartitionHealth::default());
        let activity = Arc::new(Activity::default());
        let context = Context {
            shared: Arc::clone(&shared),
            health: Arc::clone(&health),
            activity: Arc::clone(&activity),
        };
        let base: BaseProducer<Context> = client
            .create_with_context(context)
            .map_err(Error::kafka("create producer"))?;
        Ok(Self {
            inner: Arc::new(PolledProducer::start(base, activity, options.reports)?),
            options,
            shared,
            health,
        })
    }

    /// Fails fast with [`Error::UnknownTopic`] when `topic` does not exist,
    /// instead of letting every record time out. Checked once per topic.
    pub fn check_topic(&self, topic: &str) -> Result<()> {
        let pick = self.health.pick(topic, 0);
        if pick.known {
            if pick.stale {
                self.refresh_partitions(topic);
            }
            return Ok(());
        }
        self.read_topic(topic)
    }

    /// Reads `topic`'s partitions for the first time.
    fn read_topic(&self, topic: &str) -> Result<()> {
        let metadata = self
            .inner
            .client()
            .fetch_metadata(Some(topic), self.options.enqueue_timeout)
            .map_err(Error::kafka("metadata"))?;
        let found = metadata.topics().iter().find(|t| t.name() == topic);
        match found {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                self.health.set_led(topic, led_partitions(t));
                Ok(())
            }
            _ => Err(Error::UnknownTopic(topic.to_owned())),
        }
    }

    /// Re-reads which partitions of `topic` have a leader (a metadata round
    /// trip). A failed read keeps the old list: sending goes on.
    pub fn refresh_partitions(&self, topic: &str) {
        let metadata = self
            .inner
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(1));
        if let Ok(metadata) = metadata {
            if let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) {
                self.health.set_led(topic, led_partitions(t));
            }
        }
    }

    /// Hands `envelopes` to librdkafka for `topic` and returns at once.
    /// Encoding errors fail the call before anything is sent. May block: for
    /// a metadata round trip the first time a topic is used and every
    /// [`REFRESH`](crate::partitions::REFRESH), and for room in librdkafka's
    /// queue while Kafka is down (up to the enqueue timeout).
    pub fn send(
        &self,
        topic: &str,
        envelopes: &[Envelope],
        partition: Option<i32>,
    ) -> Result<Pending> {
        let encoded = encode_all(envelopes)?;
        let free = free_records(envelopes, partition);
        let mut pick = self.health.pick(topic, free);
        if !pick.known {
            self.read_topic(topic)?;
            pick = self.health.pick(topic, free);
        } else if pick.stale {
            self.refresh_partitions(topic);
        }
        Ok(self.enqueue_all(topic, envelopes, &encoded, partition, pick.partition, None))
    }

    /// [`JobProducer::send`] for callers on an async runtime (the gate): it
    /// never blocks. Handing a send to a blocking thread cost the gate half
    /// its CPU in thread wakeups, so the round trips are left to the caller
    /// (see [`TrySend`]), and a full local queue fails the records at once
    /// (Kafka is down or far behind: the gate answers 503) instead of waiting
    /// for room.
    pub fn try_send(
        &self,
        topic: &str,
        envelopes: &[Envelope],
        partition: Option<i32>,
    ) -> Result<TrySend> {
        let encoded = encode_all(envelopes)?;
        let pick = self.health.pick(topic, free_records(envelopes, partition));
        if !pick.known {
            return Ok(TrySend::NeedsMetadata);
        }
        // An elapsed deadline: no waiting for room.
        let no_wait = Some(Instant::now());
        let pending = self.enqueue_all(
            topic,
            envelopes,
            &encoded,
            partition,
            pick.partition,
            no_wait,
        );
        Ok(TrySend::Sent {
            pending,
            refresh_due: pick.stale,
        })
    }

    /// Enqueues every record; a record librdkafka refuses (after waiting for
    /// room until `deadline`, set at the first full queue when `None`)
    /// completes with its error.
    fn enqueue_all(
        &self,
        topic: &str,
        envelopes: &[Envelope],
        encoded: &[Vec<u8>],
        partition: Option<i32>,
        chosen: Option<i32>,
        mut deadline: Option<Instant>,
    ) -> Pending {
        let batch = Arc::new(Batch::new(envelopes.iter().map(|e| e.id).collect()));
        if !envelopes.is_empty() {
            lock(&self.shared.in_flight).batches += 1;
        }
        let mut id_text = String::with_capacity(26);
        for (index, (env, value)) in envelopes.iter().zip(encoded).enumerate() {
            id_text.clear();
            let _ = write!(id_text, "{}", env.id);
            let mut headers = OwnedHeaders::new_with_capacity(3)
                .insert(Header {
                    key: HEADER_ID,
                    value: Some(id_text.as_str()),
                })
                .insert(Header {
                    key: HEADER_TYPE,
                    value: Some(env.job_type.as_str()),
                });
            if let Some(trace) = &env.trace_context {
                headers = headers.insert(Header {
                    key: HEADER_TRACEPARENT,
                    value: Some(trace.as_str()),
                });
            }
            let tracked = chosen.is_some() && env.dedup_key.is_none();
            let mut record = BaseRecord::<str, [u8], _>::with_opaque_to(
                topic,
                Box::new(SlotData {
                    batch: Arc::clone(&batch),
                    index,
                    tracked,
                }),
            )
            .payload(value.as_slice())
            .headers(headers);
            if let Some(key) = &env.dedup_key {
                record = record.key(key.as_str());
            }
            if let Some(p) = partition.or(chosen.filter(|_| tracked)) {
                record = record.partition(p);
            }
            if let Err((err, record)) = self.enqueue_record(record, &mut deadline) {
                let slot = *record.delivery_opaque;
                if slot.tracked {
                    if let Some(p) = chosen {
                        self.health.reported(topic, p, false);
                    }
                }
                slot.batch
                    .complete(slot.index, Err(err.to_string()), &self.shared);
            }
        }
        // Serve the delivery reports already waiting, here: librdkafka then
        // frees its records on the thread that allocated them, which glibc's
        // malloc handles far better than frees from another thread
        // (docs/enqueue.md, report_polling.rs).
        self.inner.serve_waiting(envelopes.len() <= 1);
        Pending {
            batch,
            shared: Arc::clone(&self.shared),
        }
    }

    /// Puts one record on librdkafka's local queue, waiting for room until
    /// `deadline` (the queue is full only when Kafka is down or too slow).
    #[allow(clippy::result_large_err)]
    fn enqueue_record<'a>(
        &self,
        mut record: Record<'a>,
        deadline: &mut Option<Instant>,
    ) -> std::result::Result<(), (KafkaError, Record<'a>)> {
        loop {
            match self.inner.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now()
                        < *deadline.get_or_insert_with(|| {
                            Instant::now() + self.options.enqueue_timeout
                        }) =>
                {
                    record = back;
                    // Room comes from served delivery reports: serve them.
                    self.inner.poll(Duration::from_micros(200));
                }
                Err(failed) => return Err(failed),
            }
        }
    }

    /// Delivers everything pending, then reports failures nobody waited for.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        self.inner.flush(timeout).map_err(Error::kafka("flush"))?;
        let mut in_flight = lock(&self.shared.in_flight);
        in_flight.flushers += 1;
        while in_flight.batches > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                in_flight.flushers -= 1;
                return Err(Error::Timeout(format!(
                    "{} batches still awaiting delivery reports",
                    in_flight.batches
                )));
            }
            in_flight = self
                .shared
                .settled
                .wait_timeout(in_flight, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        in_flight.flushers -= 1;
        drop(in_flight);
        let unobserved = std::mem::take(&mut *lock(&self.shared.unobserved));
        if unobserved.count > 0 {
            return Err(delivery_error(unobserved.count, &unobserved.samples));
        }
        Ok(())
    }
}

fn led_partitions(topic: &rdkafka::metadata::MetadataTopic) -> Vec<i32> {
    topic
        .partitions()
        .iter()
        .filter(|p| p.leader() >= 0 && p.error().is_none())
        .map(|p| p.id())
        .collect()
}

fn failures<'a>(
    ids: &'a [JobId],
    results: &'a [std::result::Result<Delivered, String>],
) -> impl Iterator<Item = Failure> + 'a {
    ids.iter().zip(results).filter_map(|(id, r)| {
        r.as_ref().err().map(|reason| Failure {
            id: *id,
            reason: reason.clone(),
        })
    })
}

fn delivery_error(count: u64, samples: &[Failure]) -> Error {
    let listed: Vec<String> = samples
        .iter()
        .map(|f| format!("{} ({})", f.id, f.reason))
        .collect();
    Error::Delivery(format!(
        "{count} job(s) were not written to Kafka: {}{}",
        listed.join(", "),
        if count as usize > samples.len() {
            ", …"
        } else {
            ""
        }
    ))
}

type Outcome = std::result::Result<Delivered, String>;

struct BatchInner {
    results: Vec<Option<Outcome>>,
    remaining: usize,
    observed: bool,
    abandoned: bool,
    /// Threads blocked in [`Pending::wait`]: a settling batch signals its
    /// condvar only when there are some (a signal is a system call, and
    /// most single sends are never waited on one by one).
    waiters: u32,
}

/// One `send` call's jobs and their delivery outcomes as they arrive.
struct Batch {
    ids: Vec<JobId>,
    inner: Mutex<BatchInner>,
    ready: Condvar,
    /// Wakes an async waiter; holds a permit if the batch settles first.
    settled: tokio::sync::Notify,
}

impl Batch {
    fn new(ids: Vec<JobId>) -> Self {
        let n = ids.len();
        Self {
            ids,
            inner: Mutex::new(BatchInner {
                results: vec![None; n],
                remaining: n,
                observed: false,
                abandoned: false,
                waiters: 0,
            }),
            ready: Condvar::new(),
            settled: tokio::sync::Notify::new(),
        }
    }

    fn complete(&self, index: usize, outcome: Outcome, shared: &Shared) {
        let mut inner = lock(&self.inner);
        if inner.results[index].replace(outcome).is_some() {
            return; // a second report for one record: keep the count honest
        }
        inner.remaining -= 1;
        if inner.remaining > 0 {
            return;
        }
        if inner.abandoned {
            let results = outcomes(&inner.results);
            lock(&shared.unobserved).record(failures(&self.ids, &results));
        }
        let waited = inner.waiters > 0;
        drop(inner);
        if waited {
            self.ready.notify_all();
        }
        self.settled.notify_one();
        let mut in_flight = lock(&shared.in_flight);
        in_flight.batches -= 1;
        let flushing = in_flight.flushers > 0;
        drop(in_flight);
        if flushing {
            shared.settled.notify_all();
        }
    }
}

fn outcomes(slots: &[Option<Outcome>]) -> Vec<Outcome> {
    slots
        .iter()
        .map(|s| {
            s.clone()
                .unwrap_or_else(|| Err("no delivery report".to_owned()))
        })
        .collect()
}

/// A batch handed to the producer, awaiting its broker acknowledgements.
pub struct Pending {
    batch: Arc<Batch>,
    shared: Arc<Shared>,
}

impl Pending {
    /// The ids of the batch's jobs, in send order.
    pub fn ids(&self) -> &[JobId] {
        &self.batch.ids
    }

    /// Whether every record has been acknowledged or has failed.
    pub fn is_done(&self) -> bool {
        lock(&self.batch.inner).remaining == 0
    }

    /// Waits for every acknowledgement (`None`: as long as it takes, which the
    /// delivery timeout bounds). Returns where each job landed, or
    /// [`Error::Delivery`] naming the jobs that were not written.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<Vec<Delivered>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut inner = lock(&self.batch.inner);
        inner.waiters += 1;
        while inner.remaining > 0 {
            inner = match deadline {
                None => self
                    .batch
                    .ready
                    .wait(inner)
                    .unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        inner.waiters -= 1;
                        return Err(Error::Timeout(format!(
                            "{} of {} job(s) still awaiting Kafka's acknowledgement",
                            inner.remaining,
                            self.batch.ids.len()
                        )));
                    }
                    self.batch
                        .ready
                        .wait_timeout(inner, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
        inner.waiters -= 1;
        inner.observed = true;
        let results = outcomes(&inner.results);
        let failed: Vec<Failure> = failures(&self.batch.ids, &results).collect();
        if failed.is_empty() {
            Ok(results.into_iter().filter_map(|r| r.ok()).collect())
        } else {
            let samples = &failed[..failed.len().min(FAILURE_SAMPLES)];
            Err(delivery_error(failed.len() as u64, samples))
        }
    }
}

impl Pending {
    /// [`Pending::wait`] for async callers (the gate): the same outcome,
    /// without blocking a runtime thread.
    pub async fn wait_async(&self, timeout: Duration) -> Result<Vec<Delivered>> {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.is_done() {
            if tokio::time::timeout_at(deadline, self.batch.settled.notified())
                .await
                .is_err()
            {
                return Err(Error::Timeout(format!(
                    "{} job(s) not acknowledged by Kafka within {timeout:?}",
                    self.batch.ids.len()
                )));
            }
        }
        self.wait(Some(Duration::ZERO))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut inner = lock(&self.batch.inner);
        if inner.remaining > 0 {
            inner.abandoned = true;
        } else if !inner.observed {
            let results = outcomes(&inner.results);
            lock(&self.shared.unobserved).record(failures(&self.batch.ids, &results));
        }
    }
}
