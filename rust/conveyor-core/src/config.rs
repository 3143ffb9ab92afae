//! Settings given as plain values (from Python, the CLI or the environment)
//! turned into typed ones, with a clear [`Error::Config`] instead of a panic
//! for anything out of range.

use std::time::Duration;

use crate::error::{Error, Result};

/// `seconds` as a [`Duration`]; negative, NaN, infinite or overflowing
/// numbers are a configuration error naming the setting (`what`).
pub fn duration(what: &str, seconds: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(seconds).map_err(|_| {
        Error::Config(format!(
            "{what} must be a number of seconds from 0 up, not {seconds}"
        ))
    })
}

/// Like [`duration`], but zero is refused too.
pub fn positive_duration(what: &str, seconds: f64) -> Result<Duration> {
    let d = duration(what, seconds)?;
    if d.is_zero() {
        return Err(Error::Config(format!(
            "{what} must be a positive number of seconds, not {seconds}"
        )));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_never_panic_and_name_the_setting() {
        assert_eq!(duration("t", 1.5).unwrap(), Duration::from_millis(1500));
        assert_eq!(duration("t", 0.0).unwrap(), Duration::ZERO);
        for bad in [-1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300] {
            let err = duration("timeout_s", bad).unwrap_err();
            assert_eq!(err.code(), "config");
            assert!(err.to_string().contains("timeout_s"), "{err}");
        }
        assert!(positive_duration("lease_s", 0.0).is_err());
        assert!(positive_duration("lease_s", 0.001).is_ok());
    }
}
