//! Records that can never be relayed go to `<topic>.dead`, with the reason in
//! a header, before their offsets move on: they neither block their
//! partition nor vanish.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use super::stats::RelayStats;
use crate::error::{Error, Result};
use crate::kafka::names::dead_letter_topic;
use crate::kafka::KafkaConfig;

/// Header on a dead-lettered record: why it could not be relayed.
pub const HEADER_DEAD_REASON: &str = "cv-dead-reason";

/// A record to dead-letter: `(topic, value, reason)`.
pub(super) type Dead = (String, Vec<u8>, String);

/// The relay's dead-letter producer.
pub(super) struct DeadLetters {
    producer: ThreadedProducer<DefaultProducerContext>,
    stats: Arc<RelayStats>,
    stop: Arc<AtomicBool>,
}

impl DeadLetters {
    /// A producer waiting for every in-sync replica.
    pub fn new(kafka: &KafkaConfig, stats: Arc<RelayStats>, stop: Arc<AtomicBool>) -> Result<Self> {
        let producer = kafka
            .client_config()
            .set("acks", "all")
            .create()
            .map_err(Error::kafka("create dead-letter producer"))?;
        Ok(Self {
            producer,
            stats,
            stop,
        })
    }

    /// Sends and flushes `dead`, retrying until Kafka takes them or the
    /// relay stops.
    pub fn send(&self, dead: &[Dead]) {
        loop {
            let mut ok = true;
            for (topic, value, reason) in dead {
                let dead_topic = dead_letter_topic(topic);
                let record = BaseRecord::<(), [u8]>::to(&dead_topic)
                    .payload(value.as_slice())
                    .headers(OwnedHeaders::new().insert(Header {
                        key: HEADER_DEAD_REASON,
                        value: Some(reason.as_str()),
                    }));
                ok &= self.producer.send(record).is_ok();
            }
            if ok && self.producer.flush(Duration::from_secs(10)).is_ok() {
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

    /// Waits up to `timeout` for records in flight (at the relay's end).
    pub fn flush(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
    }
}
