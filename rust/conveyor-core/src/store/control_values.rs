//! What a control-plane value in Redis may be: relay controls, run-time
//! routes and registry entries. The one place these rules are written:
//! the CLI's writes are refused by them, and every reader (relays, the gate,
//! producers through the binding) ignores a value they refuse, with the
//! reason, instead of acting on it. Anyone with write access to Redis can
//! put anything in these hashes; a typo or a stray tool must not pause a
//! queue, shadow it or turn double writes on.

use serde_json::Value;

use crate::error::Result;

/// One relay control, read from its `(field, value)` pair.
#[derive(Debug, Clone, PartialEq)]
pub enum RelayControl {
    /// A topic's rate, jobs per second across all relays.
    Rate(String, f64),
    /// A topic is not written into Redis.
    Paused(String),
    /// A topic's jobs are read, counted and dropped.
    Shadow(String),
}

/// Reads one field of the relay control hash, or says why it is not one:
/// `rate:<topic>` -> a positive finite number, `paused:<topic>` and
/// `shadow:<topic>` -> `1`, topics named as Kafka allows.
pub fn check_relay_control(field: &str, value: &str) -> Result<RelayControl, String> {
    let (kind, topic) = field
        .split_once(':')
        .ok_or_else(|| format!("{field:?} is not '<kind>:<topic>'"))?;
    check_topic(topic).map_err(|reason| format!("{field:?}: {reason}"))?;
    let topic = topic.to_owned();
    match kind {
        "rate" => match value.parse::<f64>() {
            Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(RelayControl::Rate(topic, rate)),
            _ => Err(format!(
                "{field:?}: a rate is a positive number of jobs/s, not {value:?}"
            )),
        },
        "paused" | "shadow" if value != "1" => Err(format!(
            "{field:?}: the value is \"1\" when set, not {value:?}"
        )),
        "paused" => Ok(RelayControl::Paused(topic)),
        "shadow" => Ok(RelayControl::Shadow(topic)),
        _ => Err(format!(
            "{field:?}: a relay control is 'rate', 'paused' or 'shadow', not {kind:?}"
        )),
    }
}

/// Reads a run-time route (`{"kafka_percent": 0..100, "double_write":
/// bool}`) of `job_type`, or says why it is not one.
pub fn check_route(job_type: &str, text: &str) -> Result<(f64, bool), String> {
    let why = |reason: String| format!("route of {job_type:?} ({text:?}): {reason}");
    crate::envelope::validate_job_type(job_type).map_err(|e| why(e.to_string()))?;
    let value: Value = serde_json::from_str(text).map_err(|e| why(e.to_string()))?;
    let object = value
        .as_object()
        .ok_or_else(|| why("not a JSON object".to_owned()))?;
    if let Some(other) = object
        .keys()
        .find(|k| !matches!(k.as_str(), "kafka_percent" | "double_write"))
    {
        return Err(why(format!("unknown field {other:?}")));
    }
    let percent = object
        .get("kafka_percent")
        .and_then(Value::as_f64)
        .ok_or_else(|| why("kafka_percent is a number from 0 to 100".to_owned()))?;
    super::check_kafka_percent(percent).map_err(|e| why(e.to_string()))?;
    let double_write = match object.get("double_write") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(why("double_write is true or false".to_owned())),
    };
    Ok((percent, double_write))
}

/// Reads the queue of a registry entry (`{"queue": …, …}`) of `job_type`,
/// or says why the entry cannot be used.
pub fn check_registry_entry(job_type: &str, options: &str) -> Result<String, String> {
    let why = |reason: String| format!("registry entry of {job_type:?}: {reason}");
    crate::envelope::validate_job_type(job_type).map_err(|e| why(e.to_string()))?;
    let value: Value = serde_json::from_str(options).map_err(|e| why(e.to_string()))?;
    let queue = value
        .get("queue")
        .and_then(Value::as_str)
        .ok_or_else(|| why("no \"queue\" name".to_owned()))?;
    super::keys::validate_name("queue", queue).map_err(|e| why(e.to_string()))?;
    Ok(queue.to_owned())
}

/// A Kafka topic name: 1 to 249 of letters, digits, `.`, `_` and `-`.
fn check_topic(topic: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if topic.is_empty() || topic.len() > 249 || !topic.chars().all(allowed) {
        return Err(format!("{topic:?} is not a Kafka topic name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_controls_take_only_what_they_mean() {
        assert_eq!(
            check_relay_control("rate:t.q", "2.5"),
            Ok(RelayControl::Rate("t.q".into(), 2.5))
        );
        assert_eq!(
            check_relay_control("paused:t.q", "1"),
            Ok(RelayControl::Paused("t.q".into()))
        );
        assert_eq!(
            check_relay_control("shadow:t.q", "1"),
            Ok(RelayControl::Shadow("t.q".into()))
        );
        for (field, value) in [
            ("rate:t.q", "-3"),
            ("rate:t.q", "NaN"),
            ("rate:t.q", "inf"),
            ("rate:t.q", "fast"),
            ("paused:t.q", "0"),
            ("shadow:t.q", "yes"),
            ("shadow:t q", "1"),
            ("shadow:", "1"),
            ("drop:t.q", "1"),
            ("paused", "1"),
        ] {
            let refused = check_relay_control(field, value);
            assert!(refused.is_err(), "{field}={value}: {refused:?}");
        }
    }

    #[test]
    fn routes_are_a_percentage_and_a_flag() {
        assert_eq!(
            check_route("a.b", r#"{"kafka_percent": 25, "double_write": true}"#),
            Ok((25.0, true))
        );
        assert_eq!(
            check_route("a.b", r#"{"kafka_percent": 0}"#),
            Ok((0.0, false))
        );
        for text in [
            "",
            "[]",
            r#"{"kafka_percent": "50"}"#,
            r#"{"kafka_percent": 101}"#,
            r#"{"kafka_percent": -1}"#,
            r#"{"kafka_percent": 50, "double_write": "false"}"#,
            r#"{"kafka_percent": 50, "drop": true}"#,
        ] {
            assert!(check_route("a.b", text).is_err(), "{text}");
        }
        assert!(check_route("", r#"{"kafka_percent": 50}"#).is_err());
    }

    #[test]
    fn registry_entries_name_a_valid_queue() {
        assert_eq!(
            check_registry_entry("a.b", r#"{"queue": "orders", "max_attempts": 3}"#),
            Ok("orders".to_owned())
        );
        for options in [
            "{",
            "{}",
            r#"{"queue": 7}"#,
            r#"{"queue": "../x"}"#,
            r#"{"queue": ""}"#,
        ] {
            assert!(check_registry_entry("a.b", options).is_err(), "{options}");
        }
    }
}
