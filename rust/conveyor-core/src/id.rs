//! Job ids: 128 bits, sortable by creation time (the ULID layout).
//!
//! The first 48 bits are milliseconds since the Unix epoch, the other 80 are
//! random. Within one millisecond a process increments the random part, so
//! ids from one producer sort in creation order; across processes, 80 random
//! bits make a collision negligible. The text form is ULID's 26-character
//! Crockford base32, which sorts the same way as the bytes.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const RANDOM_MASK: u128 = (1 << 80) - 1;

/// A job's unique id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub [u8; 16]);

/// Bumped by [`after_fork`] in a forked child.
static FORKS: AtomicU64 = AtomicU64::new(0);

/// Last id handed out, and in which fork generation: a forked child must not
/// continue its parent's sequence, or both would issue the same next id.
static LAST: Mutex<Option<(u64, u128)>> = Mutex::new(None);

/// Call in a forked child before it makes ids (the Python package does, from
/// `os.register_at_fork`). The child starts a sequence of its own, and its
/// random generator, a copy of the parent's, is reseeded: otherwise both
/// processes would draw the same "random" bits. (Asking the pid per id
/// instead cost a system call, 5% of a single enqueue.)
pub fn after_fork() {
    FORKS.fetch_add(1, Ordering::Relaxed);
    // With no OS randomness the copy keeps running; the new generation still
    // stops the child from counting up from the parent's last id.
    let _ = rand::rng().reseed();
}

impl JobId {
    /// A fresh id for now.
    pub fn generate() -> JobId {
        Self::generate_at(now_ms())
    }

    /// A fresh id made at `ms` since the epoch (a caller that already read
    /// the clock passes it on).
    pub fn generate_at(ms: u64) -> JobId {
        let generation = FORKS.load(Ordering::Relaxed);
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        let value = next_value(*last, generation, ms, rand::random::<u128>());
        *last = Some((generation, value));
        JobId(value.to_be_bytes())
    }

    /// Milliseconds since the Unix epoch when this id was made.
    pub fn timestamp_ms(&self) -> u64 {
        (u128::from_be_bytes(self.0) >> 80) as u64
    }

    /// Parses the 26-character text form (case-insensitive).
    pub fn parse(text: &str) -> Result<JobId> {
        let bytes = text.as_bytes();
        if bytes.len() != 26 {
            return Err(Error::InvalidJob(format!(
                "job id must be 26 characters of Crockford base32, got {} characters",
                bytes.len()
            )));
        }
        let mut value: u128 = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let digit = decode_digit(b).ok_or_else(|| {
                Error::InvalidJob(format!("job id has an invalid character at {i}: {text:?}"))
            })?;
            // 26 digits carry 130 bits; the first may only use the low 3.
            if i == 0 && digit > 7 {
                return Err(Error::InvalidJob(format!("job id out of range: {text:?}")));
            }
            value = (value << 5) | digit as u128;
        }
        Ok(JobId(value.to_be_bytes()))
    }
}

/// The id after `last` for fork generation `generation` at `ms`, with
/// `random` as fresh bits.
fn next_value(last: Option<(u64, u128)>, generation: u64, ms: u64, random: u128) -> u128 {
    match last {
        // Same (or a clock that stepped back) millisecond: keep order by
        // counting up from the previous id.
        Some((last_gen, prev)) if last_gen == generation && (prev >> 80) as u64 >= ms => {
            prev.wrapping_add(1)
        }
        _ => ((ms as u128) << 80) | (random & RANDOM_MASK),
    }
}

fn decode_digit(b: u8) -> Option<u8> {
    let upper = b.to_ascii_uppercase();
    CROCKFORD.iter().position(|&c| c == upper).map(|p| p as u8)
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut value = u128::from_be_bytes(self.0);
        let mut out = [0u8; 26];
        for slot in out.iter_mut().rev() {
            *slot = CROCKFORD[(value & 31) as usize];
            value >>= 5;
        }
        // CROCKFORD is ASCII, so this cannot fail.
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({self})")
    }
}

/// A fresh name for this process, `<host>-<pid>-<random>`: workers and
/// relays publish status under it.
pub fn new_process_id() -> String {
    use rand::Rng;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned());
    let suffix: u32 = rand::rng().random();
    format!("{host}-{}-{suffix:08x}", std::process::id())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    now_us() / 1000
}

/// Microseconds since the Unix epoch: the unit of every timestamp in an envelope.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_one_process_sort_in_creation_order() {
        let ids: Vec<JobId> = (0..10_000).map(|_| JobId::generate()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let texts: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        assert!(texts.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn text_form_round_trips() {
        let id = JobId::generate();
        let text = id.to_string();
        assert_eq!(text.len(), 26);
        assert_eq!(JobId::parse(&text).unwrap(), id);
        assert_eq!(JobId::parse(&text.to_lowercase()).unwrap(), id);
    }

    #[test]
    fn timestamp_is_the_creation_millisecond() {
        let value = next_value(None, 1, 1_700_000_000_123, u128::MAX);
        assert_eq!(JobId(value.to_be_bytes()).timestamp_ms(), 1_700_000_000_123);
        let before = now_ms();
        let id = JobId::generate();
        assert!(id.timestamp_ms() >= before && id.timestamp_ms() <= now_ms());
    }

    #[test]
    fn same_millisecond_counts_up_but_a_forked_child_starts_afresh() {
        let first = next_value(None, 7, 1_000, 5);
        assert_eq!(next_value(Some((7, first)), 7, 1_000, 99), first + 1);
        let child = next_value(Some((7, first)), 8, 1_000, 99);
        assert_eq!(child, (1_000u128 << 80) | 99);
    }

    #[test]
    fn parse_rejects_bad_text() {
        assert!(JobId::parse("short").is_err());
        assert!(JobId::parse("8ZZZZZZZZZZZZZZZZZZZZZZZZZ").is_err());
        assert!(JobId::parse("0123456789ABCDEFGHJKMNPQRU").is_err());
        assert!(JobId::parse("7ZZZZZZZZZZZZZZZZZZZZZZZZZ").is_ok());
    }
}
