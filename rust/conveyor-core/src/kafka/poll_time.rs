//! Poll timeouts that librdkafka sleeps through instead of spinning.
//!
//! rdkafka-rs hands librdkafka the time left of a poll in whole milliseconds,
//! rounded down, and polls again until its own deadline: the last fraction
//! of a millisecond of every timed poll is spent in zero-timeout polls, a
//! busy wait. An idle client's report thread, polling 100 ms at a time,
//! burned 0.85% of a core that way (`bench/idle_cpu.py`). librdkafka fixed
//! the same rounding in its own main loop (confluentinc/librdkafka#4671);
//! rdkafka 0.39's poll loops still have it.

use std::time::Duration;

/// How far past a whole millisecond a poll's deadline lies: about the delay
/// with which a sleeping thread wakes (Linux's default timer slack is 50 us),
/// so that when librdkafka's wait of whole milliseconds ends the deadline has
/// passed, or all but a few microseconds of it.
const PAST_WHOLE_MS: Duration = Duration::from_micros(100);

/// A timeout of at least `d` that librdkafka waits out in one sleep: `d`
/// rounded up to whole milliseconds, plus [`PAST_WHOLE_MS`]. Zero stays zero
/// (a poll that only takes what is there).
pub fn sleepable(d: Duration) -> Duration {
    if d.is_zero() {
        return d;
    }
    let whole_ms = d.as_nanos().div_ceil(1_000_000);
    Duration::from_millis(u64::try_from(whole_ms).unwrap_or(u64::MAX)) + PAST_WHOLE_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_ends_just_past_a_whole_millisecond_never_before_the_one_asked() {
        assert_eq!(sleepable(Duration::ZERO), Duration::ZERO);
        assert_eq!(
            sleepable(Duration::from_millis(100)),
            Duration::from_micros(100_100)
        );
        assert_eq!(
            sleepable(Duration::from_micros(1_500)),
            Duration::from_micros(2_100)
        );
        assert_eq!(
            sleepable(Duration::from_nanos(1)),
            Duration::from_micros(1_100)
        );
        // What rdkafka hands librdkafka on the first poll, a moment later,
        // is the whole milliseconds: the wait covers all but the slack.
        let first = sleepable(Duration::from_millis(100)) - Duration::from_micros(20);
        assert_eq!(first.as_millis(), 100);
    }
}
