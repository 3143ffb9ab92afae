//! Names in Kafka, written once: the topic of a queue, the dead-letter topic
//! of a topic, and the relays' consumer group. Python asks the binding for
//! these (`conveyor._core.queue_topic`, ...) rather than spelling them again.

/// The topic that carries `queue`: `<prefix>[<namespace>.]<queue>`.
pub fn queue_topic(prefix: &str, namespace: &str, queue: &str) -> String {
    if namespace.is_empty() {
        format!("{prefix}{queue}")
    } else {
        format!("{prefix}{namespace}.{queue}")
    }
}

/// Where records of `topic` that can never be relayed go.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dead")
}

/// The consumer group every relay of a namespace joins.
pub fn relay_group(namespace: &str) -> String {
    if namespace.is_empty() {
        "conveyor-relay".to_owned()
    } else {
        format!("conveyor-relay.{namespace}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(queue_topic("conveyor.", "", "billing"), "conveyor.billing");
        assert_eq!(
            queue_topic("conveyor.", "ns", "billing"),
            "conveyor.ns.billing"
        );
        assert_eq!(
            dead_letter_topic("conveyor.billing"),
            "conveyor.billing.dead"
        );
        assert_eq!(relay_group(""), "conveyor-relay");
    }
}
