//! Records that can never be relayed go to `<topic>.dead`, with the reason in
//! a header, before their offsets move on: they neither block their
//! partition nor vanish.
//!
//! A record counts as dead-lettered only when Kafka acknowledged it. One
//! Kafka refuses for good (too large for the topic, no permission, no such
//! topic) or does not take within [`BUDGET`] (a topic that cannot take
//! writes) is counted as `dead_letter_failed`, its topic, partition and
//! offset kept in the relay's status, and the relay moves on: the record is
//! still in its job topic at that offset, for as long as Kafka retains it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::ClientContext;

use super::stats::{lock, RelayStats};
use crate::error::{Error, Result};
use crate::kafka::names::dead_letter_topic;
use crate::kafka::KafkaConfig;

/// Header on a dead-lettered record: why it could not be relayed.
pub const HEADER_DEAD_REASON: &str = "cv-dead-reason";

/// Longest one batch of dead letters may hold the relay up.
pub const BUDGET: Duration = Duration::from_secs(10);

/// Most refused dead letters the relay's status lists.
const FAILURES_KEPT: usize = 100;

/// A record to dead-letter, and where it sits in its job topic.
pub(super) struct Dead {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub value: Vec<u8>,
    pub reason: String,
}

/// How one dead letter's delivery ended: acknowledged, or refused (and
/// whether trying again could help).
type Outcome = std::result::Result<(), (bool, String)>;

#[derive(Default)]
struct Outcomes {
    results: Mutex<Vec<Option<Outcome>>>,
    arrived: Condvar,
}

impl Outcomes {
    fn set(&self, index: usize, outcome: Outcome) {
        lock(&self.results)[index] = Some(outcome);
        self.arrived.notify_all();
    }

    /// Waits until every outcome arrived or `deadline` passed.
    fn wait(&self, deadline: Instant) -> Vec<Option<Outcome>> {
        let mut results = lock(&self.results);
        while results.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            results = self
                .arrived
                .wait_timeout(results, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        results.clone()
    }
}

/// librdkafka's delivery reports land here, one per record.
struct Reports;

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<(Arc<Outcomes>, usize)>;

    fn delivery(&self, result: &DeliveryResult<'_>, slot: Self::DeliveryOpaque) {
        let (outcomes, index) = *slot;
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((err, _)) => Err((retriable(err), err.to_string())),
        };
        outcomes.set(index, outcome);
    }
}

/// Whether Kafka might take the record if asked again.
fn retriable(err: &KafkaError) -> bool {
    !matches!(
        err.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::InvalidRecord
        )
    )
}

/// The relay's dead-letter producer. Its reports are served by `send`
/// (which waits for them) and by the reader's `serve` once a second, not by
/// a polling thread of its own: rdkafka's polls end in a busy wait for the
/// last fraction of a millisecond of their timeout, and a thread polling an
/// idle producer all the time was a quarter of an idle relay's CPU.
pub(super) struct DeadLetters {
    producer: BaseProducer<Reports>,
    stats: Arc<RelayStats>,
    stop: Arc<AtomicBool>,
}

impl DeadLetters {
    /// A producer waiting for every in-sync replica.
    pub fn new(kafka: &KafkaConfig, stats: Arc<RelayStats>, stop: Arc<AtomicBool>) -> Result<Self> {
        let producer = kafka
            .client_config()
            .set("acks", "all")
            .set("message.timeout.ms", BUDGET.as_millis().to_string())
            .create_with_context(Reports)
            .map_err(Error::kafka("create dead-letter producer"))?;
        Ok(Self {
            producer,
            stats,
            stop,
        })
    }

    /// Sends `dead`, trying again what Kafka may still take, for at most
    /// [`BUDGET`]; counts what Kafka acknowledged as dead-lettered and the
    /// rest as failed (with their offsets in the status).
    pub fn send(&self, dead: &[Dead]) {
        let deadline = Instant::now() + BUDGET;
        let mut pending: Vec<usize> = (0..dead.len()).collect();
        let mut last_reason: Vec<String> = vec![String::new(); dead.len()];
        loop {
            let outcomes = Arc::new(Outcomes {
                results: Mutex::new(vec![None; pending.len()]),
                arrived: Condvar::new(),
            });
            for (slot, &i) in pending.iter().enumerate() {
                let d = &dead[i];
                let dead_topic = dead_letter_topic(&d.topic);
                let record = BaseRecord::with_opaque_to(
                    &dead_topic,
                    Box::new((Arc::clone(&outcomes), slot)),
                )
                .payload(d.value.as_slice())
                .key(&[][..] as &[u8])
                .headers(OwnedHeaders::new().insert(Header {
                    key: HEADER_DEAD_REASON,
                    value: Some(d.reason.as_str()),
                }));
                if let Err((err, _)) = self.producer.send::<[u8], [u8]>(record) {
                    outcomes.set(slot, Err((retriable(&err), err.to_string())));
                }
            }
            let _ = self
                .producer
                .flush(deadline.saturating_duration_since(Instant::now()));
            let results = outcomes.wait(deadline);
            let mut again = Vec::new();
            for (slot, &i) in pending.iter().enumerate() {
                match &results[slot] {
                    Some(Ok(())) => {
                        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Err((false, reason))) => self.failed(&dead[i], reason),
                    Some(Err((true, reason))) => {
                        last_reason[i] = reason.clone();
                        again.push(i);
                    }
                    None => {
                        last_reason[i] = "no delivery report".to_owned();
                        again.push(i);
                    }
                }
            }
            if again.is_empty() {
                return;
            }
            if Instant::now() >= deadline || self.stop.load(Ordering::Relaxed) {
                for i in again {
                    let why = format!("not acknowledged within {BUDGET:?}: {}", last_reason[i]);
                    self.failed(&dead[i], &why);
                }
                return;
            }
            pending = again;
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn failed(&self, dead: &Dead, reason: &str) {
        self.stats
            .dead_letter_failed
            .fetch_add(1, Ordering::Relaxed);
        let mut kept = lock(&self.stats.dead_letter_failures);
        if kept.len() >= FAILURES_KEPT {
            kept.pop_front();
        }
        kept.push_back(format!(
            "{}[{}]@{}: {} (dead-letter topic refused it: {reason})",
            dead.topic, dead.partition, dead.offset, dead.reason
        ));
    }

    /// Waits up to `timeout` for records in flight (at the relay's end).
    pub fn flush(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
    }

    /// Serves the events librdkafka queued meanwhile (errors, logs), without
    /// waiting, so that they do not pile up while nothing is dead-lettered.
    pub fn serve(&self) {
        self.producer.poll(Duration::ZERO);
    }
}

/// The refused dead letters a status shows, newest last.
pub(super) type Failures = Mutex<VecDeque<String>>;
