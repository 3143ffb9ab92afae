//! Kafka plumbing: cluster metadata, deliberate topic creation, and a bounded
//! reader of one partition. The producer is in `producer.rs`.
//!
//! How an envelope rides in a Kafka record (see `docs/envelope.md`): the value
//! is the whole encoded envelope; the key is the dedup key when there is one
//! (so duplicates land on one partition); headers `cv-id` and `cv-type` copy
//! the id and job type, and `traceparent` the trace context, for tools that
//! route or inspect without decoding. The value is authoritative.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

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

    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        // Topics are created on purpose; a metadata request must never create one.
        config.set("allow.auto.create.topics", "false");
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

/// Replication of topics created without a choice: three copies where the
/// cluster has three brokers or more (every broker otherwise), so that an
/// acknowledged job survives losing a broker.
pub const DEFAULT_REPLICATION: i32 = 3;

/// In-sync copies a write needs before it is acknowledged (with `acks=all`),
/// set on topics of three copies or more: losing one broker then loses no
/// acknowledged job and stops no writes.
const MIN_INSYNC_REPLICAS: &str = "2";

/// Creates a topic on purpose, with a chosen partition count and replication
/// (`None`: [`DEFAULT_REPLICATION`], or every broker of a smaller cluster),
/// and waits until every partition has a leader so the first write does not
/// stall. Topics of three copies or more take `min.insync.replicas=2`.
/// Returns `false` when it already existed (its settings are left alone).
pub fn create_topic(
    config: &KafkaConfig,
    name: &str,
    partitions: i32,
    replication: Option<i32>,
    timeout: Duration,
) -> Result<bool> {
    create_topic_with(config, name, partitions, replication, &[], timeout)
}

/// [`create_topic`] with topic configs of the caller's besides Conveyor's
/// (tests make topics that refuse writes this way).
pub fn create_topic_with(
    config: &KafkaConfig,
    name: &str,
    partitions: i32,
    replication: Option<i32>,
    configs: &[(String, String)],
    timeout: Duration,
) -> Result<bool> {
    let deadline = std::time::Instant::now() + timeout;
    let admin: AdminClient<DefaultClientContext> = config
        .client_config()
        .create()
        .map_err(Error::kafka("connect"))?;
    let replication = match replication {
        Some(n) => n,
        None => {
            let brokers = admin
                .inner()
                .fetch_metadata(None, timeout)
                .map_err(Error::kafka("metadata"))?
                .brokers()
                .len() as i32;
            brokers.clamp(1, DEFAULT_REPLICATION)
        }
    };
    let topic = new_topic(name, partitions, replication, configs);
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
                    // An existing topic keeps the partitions it has.
                && (!created || t.partitions().len() as i32 >= partitions)
                && !t.partitions().is_empty()
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

/// A topic as Conveyor creates it: its configs, and `min.insync.replicas=2`
/// from three copies up; `configs` are the caller's, applied last.
fn new_topic<'a>(
    name: &'a str,
    partitions: i32,
    replication: i32,
    configs: &'a [(String, String)],
) -> NewTopic<'a> {
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replication));
    for (key, value) in TOPIC_CONFIGS {
        topic = topic.set(key, value);
    }
    if replication >= DEFAULT_REPLICATION {
        topic = topic.set("min.insync.replicas", MIN_INSYNC_REPLICAS);
    }
    for (key, value) in configs {
        topic = topic.set(key, value);
    }
    topic
}

/// Creates each `(name, like)` topic that does not exist yet, with one
/// partition and as many copies as topic `like` (a dead-letter topic takes
/// its job topic's; the default where `like` is missing), in one request,
/// and waits until each has a leader. Returns how many it created. One
/// client and one metadata request for all: topic by topic, a relay of 50
/// queues took 12 s to start (bench/scale_bench.py).
pub fn create_missing_like(
    config: &KafkaConfig,
    pairs: &[(String, String)],
    timeout: Duration,
) -> Result<usize> {
    let deadline = std::time::Instant::now() + timeout;
    let admin: AdminClient<DefaultClientContext> = config
        .client_config()
        .create()
        .map_err(Error::kafka("connect"))?;
    let metadata = admin
        .inner()
        .fetch_metadata(None, timeout)
        .map_err(Error::kafka("metadata"))?;
    let fallback = (metadata.brokers().len() as i32).clamp(1, DEFAULT_REPLICATION);
    let find = |name: &str| metadata.topics().iter().find(|t| t.name() == name);
    let topics: Vec<NewTopic<'_>> = pairs
        .iter()
        .filter(|(name, _)| find(name).is_none_or(|t| t.error().is_some()))
        .map(|(name, like)| {
            let copies = find(like)
                .and_then(|t| t.partitions().first())
                .map_or(fallback, |p| p.replicas().len() as i32);
            new_topic(name, 1, copies, &[])
        })
        .collect();
    if topics.is_empty() {
        return Ok(0);
    }
    let options = AdminOptions::new().operation_timeout(Some(timeout));
    let results = block_on(admin.create_topics(topics.iter(), &options))
        .map_err(Error::kafka("create topic"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(Error::Kafka {
                    op: "create topic",
                    source: rdkafka::error::KafkaError::AdminOp(code),
                })
            }
        }
    }
    let names: Vec<&str> = topics.iter().map(|t| t.name).collect();
    loop {
        let metadata = admin
            .inner()
            .fetch_metadata(None, Duration::from_secs(1))
            .map_err(Error::kafka("metadata"))?;
        let led = |name: &&str| {
            metadata.topics().iter().any(|t| {
                t.name() == *name
                    && t.error().is_none()
                    && !t.partitions().is_empty()
                    && t.partitions().iter().all(|p| p.leader() >= 0)
            })
        };
        if names.iter().all(led) {
            return Ok(names.len());
        }
        if std::time::Instant::now() > deadline {
            return Err(Error::Timeout(format!(
                "{} topic(s) were created but not every partition has a leader yet",
                names.len()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Deletes `names` (benchmarks clean up after themselves: every partition a
/// broker keeps costs it CPU, which skews the next measurement). A topic
/// already gone is not an error. Returns how many were deleted.
pub fn delete_topics(config: &KafkaConfig, names: &[&str], timeout: Duration) -> Result<usize> {
    if names.is_empty() {
        return Ok(0);
    }
    let admin: AdminClient<DefaultClientContext> = config
        .client_config()
        .create()
        .map_err(Error::kafka("connect"))?;
    let options = AdminOptions::new().operation_timeout(Some(timeout));
    let results =
        block_on(admin.delete_topics(names, &options)).map_err(Error::kafka("delete topics"))?;
    let mut deleted = 0;
    for result in results {
        match result {
            Ok(_) => deleted += 1,
            Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((_, code)) => {
                return Err(Error::Kafka {
                    op: "delete topics",
                    source: rdkafka::error::KafkaError::AdminOp(code),
                })
            }
        }
    }
    Ok(deleted)
}

/// The end offset (the offset the next record will get) of each partition of `topic`.
pub fn end_offsets(
    config: &KafkaConfig,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<(i32, i64)>> {
    let consumer: BaseConsumer = config
        .client_config()
        .create()
        .map_err(Error::kafka("connect"))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(Error::kafka("metadata"))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
        .ok_or_else(|| Error::UnknownTopic(topic.to_owned()))?;
    partitions
        .into_iter()
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, timeout)
                .map(|(_, high)| (p, high))
                .map_err(Error::kafka("watermarks"))
        })
        .collect()
}

/// `(partition, offset)` of each partition of `topic`: the first record
/// appended at or after `at_ms` (ms since the epoch), or the partition's end
/// when there is none. Where an operator's replay of a time range starts.
pub fn offsets_for_time(
    config: &KafkaConfig,
    topic: &str,
    at_ms: i64,
    timeout: Duration,
) -> Result<Vec<(i32, i64)>> {
    let ends = end_offsets(config, topic, timeout)?;
    let consumer: BaseConsumer = config
        .client_config()
        .create()
        .map_err(Error::kafka("connect"))?;
    let mut asked = TopicPartitionList::new();
    for (partition, _) in &ends {
        asked
            .add_partition_offset(topic, *partition, Offset::Offset(at_ms))
            .map_err(Error::kafka("offsets for time"))?;
    }
    let found = consumer
        .offsets_for_times(asked, timeout)
        .map_err(Error::kafka("offsets for time"))?;
    Ok(ends
        .into_iter()
        .map(|(partition, end)| {
            let offset = found
                .find_partition(topic, partition)
                .and_then(|p| match p.offset() {
                    Offset::Offset(o) if o >= 0 => Some(o),
                    _ => None,
                })
                .unwrap_or(end);
            (partition, offset)
        })
        .collect())
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
