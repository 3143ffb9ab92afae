//! The error records kept with failed jobs: built, and capped in size so
//! that failures cannot fill Redis.

use std::sync::atomic::Ordering;

use super::{Kept, WorkQueues};
use crate::envelope::Envelope;
use crate::store::queue::StoredResult;

/// Largest error record kept with a job (bytes); longer ones are cut.
pub const MAX_ERROR_BYTES: usize = 4096;
/// Largest error record of a dead job while Redis is nearly full.
pub const TIGHT_ERROR_BYTES: usize = 256;
/// Bytes of results a worker process keeps before it reads Redis' memory again.
pub const CHECK_AFTER_KEPT: u64 = 1 << 20;

impl WorkQueues {
    /// The result to keep for `env`'s waiters; none while Redis is nearly
    /// full: a result is a key per job (about 120 bytes even for an empty
    /// one), and jobs must keep finishing without growing a full Redis.
    /// Results are opt-in and may be large: past [`CHECK_AFTER_KEPT`] bytes
    /// kept, memory is read again before the next one, not at the keeper's
    /// next beat (a second of results can be many megabytes).
    pub(super) fn kept(&self, env: &Envelope, result: &Option<Kept>) -> Option<StoredResult> {
        let (value, ttl) = result.as_ref()?;
        let since = self
            .kept_since_check
            .fetch_add(value.len() as u64, Ordering::Relaxed);
        if since >= CHECK_AFTER_KEPT {
            // Best effort: on a Redis error the keeper's beat reads it later.
            let _ = self.check_memory();
        }
        if self.tight.load(Ordering::Relaxed) {
            return None;
        }
        Some(StoredResult {
            id: env.id.0,
            value: value.clone(),
            ttl_ms: ttl.as_millis().clamp(1, u64::MAX as u128) as u64,
        })
    }

    pub(super) fn error_cap(&self) -> usize {
        if self.tight.load(Ordering::Relaxed) {
            TIGHT_ERROR_BYTES
        } else {
            MAX_ERROR_BYTES
        }
    }
}

/// `error` (JSON text) cut to at most `cap` bytes: the traceback and message
/// of an error object are shortened (at char boundaries) and the original
/// length noted; anything else is replaced by a record of its start.
pub fn cap_error(error: String, cap: usize) -> String {
    if error.len() <= cap {
        return error;
    }
    let original = error.len();
    if let Ok(serde_json::Value::Object(mut record)) = serde_json::from_str(&error) {
        record.insert("truncated_from".into(), original.into());
        // Escapes make the text longer than its bytes: cut, measure, repeat.
        for field in ["traceback", "traceback", "message", "message", "message"] {
            let size = serde_json::Value::Object(record.clone()).to_string().len();
            if size <= cap {
                break;
            }
            if let Some(serde_json::Value::String(text)) = record.get_mut(field) {
                let keep = text.len().saturating_sub(size - cap + 8);
                let cut = (0..=keep)
                    .rev()
                    .find(|&i| text.is_char_boundary(i))
                    .unwrap_or(0);
                text.truncate(cut);
            }
        }
        let capped = serde_json::Value::Object(record).to_string();
        if capped.len() <= cap {
            return capped;
        }
    }
    let head = (0..=cap / 8)
        .rev()
        .find(|&i| error.is_char_boundary(i))
        .unwrap_or(0);
    serde_json::json!({
        "type": "ErrorRecordTooLarge",
        "message": &error[..head],
        "truncated_from": original,
    })
    .to_string()
}

/// The error record kept with a failed job, as JSON text.
pub fn error_json(kind: &str, message: &str) -> String {
    serde_json::json!({ "type": kind, "message": message }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_records_are_kept_as_they_are() {
        let record = error_json("ValueError", "bad");
        assert_eq!(cap_error(record.clone(), MAX_ERROR_BYTES), record);
    }

    #[test]
    fn long_records_are_cut_to_the_cap_and_stay_json_objects() {
        for text in ["x".repeat(100_000), "€\"\n".repeat(30_000)] {
            let record = serde_json::json!({
                "type": "E", "message": text, "traceback": text, "attempt": 3,
            })
            .to_string();
            for cap in [TIGHT_ERROR_BYTES, MAX_ERROR_BYTES] {
                let capped = cap_error(record.clone(), cap);
                assert!(capped.len() <= cap, "{} > {cap}", capped.len());
                let value: serde_json::Value = serde_json::from_str(&capped).unwrap();
                assert_eq!(value["type"], "E");
                assert_eq!(value["attempt"], 3);
                assert_eq!(value["truncated_from"], record.len());
            }
        }
    }

    #[test]
    fn records_that_are_not_objects_are_replaced_by_their_start() {
        let capped = cap_error("[".repeat(10_000), 512);
        assert!(capped.len() <= 512);
        let value: serde_json::Value = serde_json::from_str(&capped).unwrap();
        assert_eq!(value["type"], "ErrorRecordTooLarge");
    }
}
