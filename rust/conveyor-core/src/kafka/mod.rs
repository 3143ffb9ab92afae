//! Kafka's side: the client (configuration, metadata, topics, a bounded
//! partition reader), the job producer with its partition health and report
//! polling, poll timeouts librdkafka sleeps through, and the names of topics
//! and groups.

mod client;
mod delivery;
pub mod names;
mod options;
pub mod partitions;
pub mod poll_time;
pub mod producer;
pub mod report_polling;

pub use client::{
    cluster_info, create_missing_like, create_topic, create_topic_with, delete_topics, end_offsets,
    offsets_for_time, read_partition, ClusterInfo, KafkaConfig, Record, HEADER_ID,
    HEADER_TRACEPARENT, HEADER_TYPE, TOPIC_CONFIGS,
};
