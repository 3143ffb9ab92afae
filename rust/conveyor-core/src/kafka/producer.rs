//! The job producer: envelopes into Kafka with delivery tracked per batch.
//!
//! `send` only hands records to librdkafka (which batches and compresses them
//! on its own threads) and returns a [`Pending`] at once; the caller may wait
//! on it or not. Delivery reports arrive in librdkafka's callback (served by
//! the next send, or by the polling thread), which fills in the batch's slot
//! directly: no task or future per job. A failure nobody waited for is never
//! swallowed: when its `Pending` is dropped unobserved, the failure moves to
//! the producer, and the next [`JobProducer::flush`] reports it.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use std::fmt::Write as _;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, ProducerContext};
use rdkafka::ClientContext;

use super::client::{KafkaConfig, HEADER_ID, HEADER_TRACEPARENT, HEADER_TYPE};
use super::partitions::PartitionHealth;
use super::report_polling::{Activity, PolledProducer};
use crate::envelope::{Envelope, Stage, StageStamp};
use crate::error::{Error, Result};

use super::delivery::{delivery_error, lock, Batch, InFlight, Shared, Unobserved};
pub use super::delivery::{Delivered, Failure, Pending};
pub use super::options::{Acks, ProducerOptions};
pub(crate) use super::partitions::check_partition;

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
    pub(super) shared: Arc<Shared>,
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
            .set(
                "linger.ms",
                format!("{}", options.linger.as_secs_f64() * 1000.0),
            );
        for (key, value) in &config.properties {
            client.set(key, value);
        }
        let shared = Arc::new(Shared {
            unobserved: Mutex::new(Unobserved::default()),
            in_flight: Mutex::new(InFlight::default()),
            settled: Condvar::new(),
            failed: Condvar::new(),
            sent: Mutex::new(Default::default()),
            tallying: Default::default(),
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

    /// How many partitions `topic` has, if its metadata was read already
    /// (no round trip; see [`JobProducer::check_topic`] for one).
    pub fn partition_count(&self, topic: &str) -> Option<i32> {
        let pick = self.health.pick(topic, 0);
        pick.known.then_some(pick.partitions)
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
                self.health
                    .set_led(topic, led_partitions(t), t.partitions().len() as i32);
                Ok(())
            }
            _ => Err(Error::UnknownTopic(topic.to_owned())),
        }
    }

    /// How many brokers answer this producer's client now (a metadata round
    /// trip on its existing connections), for readiness probes.
    pub fn broker_count(&self, timeout: Duration) -> Result<usize> {
        let metadata = self
            .inner
            .client()
            .fetch_metadata(None, timeout)
            .map_err(Error::kafka("metadata"))?;
        Ok(metadata.brokers().len())
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
                self.health
                    .set_led(topic, led_partitions(t), t.partitions().len() as i32);
            }
        }
    }

    /// Hands `envelopes` to librdkafka for `topic` and returns at once.
    /// Encoding errors fail the call before anything is sent. May block: for
    /// a metadata round trip the first time a topic is used and every
    /// [`REFRESH`](super::partitions::REFRESH), and for room in librdkafka's
    /// queue while Kafka is down (up to the enqueue timeout).
    pub fn send(
        &self,
        topic: &str,
        envelopes: &[Envelope],
        partition: Option<i32>,
    ) -> Result<Pending> {
        let encoded = encode_all(envelopes)?;
        self.send_encoded(topic, envelopes, &encoded, partition)
    }

    /// [`JobProducer::send`] for jobs also written straight into Redis (a
    /// double write): each record carries a [`Stage::DoubleWritten`] stamp,
    /// which a relay in shadow mode looks for.
    pub fn send_double_written(&self, topic: &str, envelopes: &[Envelope]) -> Result<Pending> {
        let now = crate::id::now_us();
        let marked: Vec<Envelope> = envelopes
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e.stages.push(StageStamp {
                    code: Stage::DoubleWritten as u8,
                    at_us: now,
                });
                e
            })
            .collect();
        let encoded = encode_all(&marked)?;
        self.send_encoded(topic, &marked, &encoded, None)
    }

    fn send_encoded(
        &self,
        topic: &str,
        envelopes: &[Envelope],
        encoded: &[Vec<u8>],
        partition: Option<i32>,
    ) -> Result<Pending> {
        let free = free_records(envelopes, partition);
        let mut pick = self.health.pick(topic, free);
        if !pick.known {
            self.read_topic(topic)?;
            pick = self.health.pick(topic, free);
        } else if pick.stale {
            self.refresh_partitions(topic);
        }
        check_partition(topic, partition, pick.partitions)?;
        Ok(self.enqueue_all(topic, envelopes, encoded, partition, pick.partition, None))
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
        check_partition(topic, partition, pick.partitions)?;
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
        // Double-written jobs are not tallied as sent: a relay in shadow
        // mode drops them by design.
        let double_written = envelopes.iter().any(|e| {
            e.stages
                .iter()
                .any(|s| s.code == Stage::DoubleWritten as u8)
        });
        let tally = (!double_written).then(|| Arc::from(topic));
        let batch = Arc::new(Batch::new(envelopes.iter().map(|e| e.id).collect(), tally));
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
        let mut unobserved = lock(&self.shared.unobserved);
        let (count, samples) = (unobserved.count, std::mem::take(&mut unobserved.samples));
        unobserved.count = 0;
        drop(unobserved);
        if count > 0 {
            return Err(delivery_error(count, &samples));
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
