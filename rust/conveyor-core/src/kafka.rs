//! Kafka plumbing: cluster metadata, deliberate topic creation, a producer of
//! envelopes, and a bounded reader of one partition.
//!
//! How an envelope rides in a Kafka record (see `docs/envelope.md`): the value
//! is the whole encoded envelope; the key is the dedup key when there is one
//! (so duplicates land on one partition); headers `cv-id` and `cv-type` copy
//! the id and job type, and `traceparent` the trace context, for tools that
//! route or inspect without decoding. The value is authoritative.

use std::time::Duration;

use futures::future::join_all;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::runtime::block_on;

/// Header carrying the job id (text form).
pub const HEADER_ID: &str = "cv-id";
/// Header carrying the job type.
pub const HEADER_TYPE: &str = "cv-type";
/// Header carrying the W3C trace context.
pub const HEADER_TRACEPARENT: &str = "traceparent";

/// Where Kafka is and how to talk to it.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]`.
    pub bootstrap_servers: String,
    /// Extra librdkafka properties (SASL, TLS, tuning), applied last.
    pub properties: Vec<(String, String)>,
}

impl KafkaConfig {
    /// A config for these bootstrap servers and nothing else.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            properties: Vec::new(),
        }
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}

/// What a broker said about its cluster.
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    /// The cluster id the brokers report.
    pub cluster_id: Option<String>,
    /// `(node id, host, port)` of each live broker.
    pub brokers: Vec<(i32, String, i32)>,
    /// Names of the topics the cluster holds (internal ones included).
    pub topics: Vec<String>,
}

/// Asks the cluster for its metadata: the proof that a broker really serves.
pub fn cluster_info(config: &KafkaConfig, timeout: Duration) -> Result<ClusterInfo> {
    let consumer: BaseConsumer = config
        .client_config()
        .create()
        .map_err(Error::kafka("connect"))?;
    let metadata = consumer
        .fetch_metadata(None, timeout)
        .map_err(Error::kafka("metadata"))?;
    let brokers = metadata
        .brokers()
        .iter()
        .map(|b| (b.id(), b.host().to_owned(), b.port()))
        .collect();
    let topics = metadata
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .collect();
    Ok(ClusterInfo {
        cluster_id: consumer.client().fetch_cluster_id(timeout),
        brokers,
        topics,
    })
}

/// Topic settings Conveyor always sets. The broker stamps each record with
/// the time it appended it, so a record's timestamp is the job's "in Kafka"
/// stage, not the producer's clock.
pub const TOPIC_CONFIGS: &[(&str, &str)] = &[("message.timestamp.type", "LogAppendTime")];

/// Creates a topic on purpose, with a chosen partition count and replication,
/// and waits until every partition has a leader so the first write does not
/// stall. Returns `false` when it already existed (its settings are left alone).
pub fn create_topic(
    config: &KafkaConfig,
    name: &str,
    partitions: i32,
    replication: i32,
    timeout: Duration,
) -> Result<bool> {
    let deadline = std::time::Instant::now() + timeout;
    let admin: AdminClient<DefaultClientContext> = config
        .client_config()
        .create()
        .map_err(Error::kafka("connect"))?;
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replication));
    for (key, value) in TOPIC_CONFIGS {
        topic = topic.set(key, value);
    }
    let options = AdminOptions::new().operation_timeout(Some(timeout));
    let results =
        block_on(admin.create_topics([&topic], &options)).map_err(Error::kafka("create topic"))?;
    let created = match results.into_iter().next() {
        Some(Ok(_)) => true,
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => false,
        Some(Err((_, code))) => {
            return Err(Error::Kafka {
                op: "create topic",
                source: rdkafka::error::KafkaError::AdminOp(code),
            })
        }
        None => return Err(Error::Timeout(format!("no answer creating topic {name}"))),
    };
    loop {
        let metadata = admin
            .inner()
            .fetch_metadata(Some(name), Duration::from_secs(1))
            .map_err(Error::kafka("metadata"))?;
        let led = metadata
            .topics()
            .iter()
            .find(|t| t.name() == name)
            .is_some_and(|t| {
                t.error().is_none()
                    && t.partitions().len() as i32 >= partitions
                    && t.partitions().iter().all(|p| p.leader() >= 0)
            });
        if led {
            return Ok(created);
        }
        if std::time::Instant::now() > deadline {
            return Err(Error::Timeout(format!(
                "topic {name} was created but its partitions have no leader yet"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
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

/// A producer of envelopes. Cheap to share: clones use one librdkafka client.
#[derive(Clone)]
pub struct JobProducer {
    inner: FutureProducer,
    delivery_timeout: Duration,
}

impl JobProducer {
    /// Creates a producer; `delivery_timeout` bounds how long a record may wait
    /// for the broker before its send fails (librdkafka's default is 5 minutes).
    pub fn new(config: &KafkaConfig, delivery_timeout: Duration) -> Result<Self> {
        let mut client = config.client_config();
        client
            .set(
                "message.timeout.ms",
                delivery_timeout.as_millis().to_string(),
            )
            .set("enable.idempotence", "true")
            .set("compression.type", "lz4")
            .set("linger.ms", "2");
        // User properties win over our defaults.
        for (key, value) in &config.properties {
            client.set(key, value);
        }
        let inner = client.create().map_err(Error::kafka("create producer"))?;
        Ok(Self {
            inner,
            delivery_timeout,
        })
    }

    /// Sends a batch of envelopes to `topic` and waits for every broker
    /// acknowledgement. Results are in input order; one failure does not hide
    /// the others. Encoding errors fail the whole call before anything is sent.
    pub fn send_batch(
        &self,
        topic: &str,
        envelopes: &[Envelope],
        partition: Option<i32>,
    ) -> Result<Vec<Result<Delivered>>> {
        let encoded = envelopes
            .iter()
            .map(Envelope::encode)
            .collect::<Result<Vec<_>>>()?;
        let ids: Vec<String> = envelopes.iter().map(|e| e.id.to_string()).collect();
        let sends = envelopes
            .iter()
            .zip(&encoded)
            .zip(&ids)
            .map(|((env, value), id)| {
                let mut headers = OwnedHeaders::new_with_capacity(3)
                    .insert(Header {
                        key: HEADER_ID,
                        value: Some(id.as_str()),
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
                let mut record = FutureRecord::<str, [u8]>::to(topic)
                    .payload(value.as_slice())
                    .headers(headers);
                if let Some(key) = &env.dedup_key {
                    record = record.key(key.as_str());
                }
                if let Some(p) = partition {
                    record = record.partition(p);
                }
                self.inner.send(record, self.delivery_timeout)
            });
        let results = block_on(join_all(sends));
        Ok(results
            .into_iter()
            .map(|r| match r {
                Ok(delivery) => Ok(Delivered {
                    partition: delivery.partition,
                    offset: delivery.offset,
                }),
                Err((source, _)) => Err(Error::Kafka {
                    op: "produce",
                    source,
                }),
            })
            .collect())
    }

    /// Waits until everything queued in this producer is delivered or failed.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.inner.flush(timeout).map_err(Error::kafka("flush"))
    }
}

/// A record read back from Kafka.
#[derive(Debug, Clone)]
pub struct Record {
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Broker or producer timestamp in milliseconds, when known.
    pub timestamp_ms: Option<i64>,
    /// The record key.
    pub key: Option<Vec<u8>>,
    /// The record value: an encoded envelope.
    pub value: Vec<u8>,
    /// Headers in order, as `(name, value)`.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Reads up to `max` records of one partition from `from_offset`, stopping
/// early at `timeout`. For inspection and tests; the relay consumes as a group.
pub fn read_partition(
    config: &KafkaConfig,
    topic: &str,
    partition: i32,
    from_offset: i64,
    max: usize,
    timeout: Duration,
) -> Result<Vec<Record>> {
    let consumer: BaseConsumer = config
        .client_config()
        .set("group.id", "conveyor-inspect")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(Error::kafka("create consumer"))?;
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, Offset::Offset(from_offset))
        .map_err(Error::kafka("assign"))?;
    consumer
        .assign(&assignment)
        .map_err(Error::kafka("assign"))?;
    let deadline = std::time::Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < max {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        let Some(polled) = consumer.poll(left.min(Duration::from_millis(100))) else {
            continue;
        };
        let message = polled.map_err(Error::kafka("consume"))?;
        let headers = message
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        out.push(Record {
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().unwrap_or_default().to_vec(),
            headers,
        });
    }
    Ok(out)
}
