//! Who may send what through the gate: bearer tokens, each limited to job
//! types and queues (its scope) and to a request rate, replaceable while
//! the gate runs (a token file reloaded on change or on SIGHUP).
//!
//! Every token is compared with the one given, in constant time, before any
//! answer, so the time taken says nothing about which token came close. The
//! scope is checked on the job type's *name* before the gate looks it up:
//! a token not allowed a type is refused with 403 whether the type exists or
//! not, so a 401 or 403 never reveals which types exist.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

/// One bearer token and what it may do.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// Names the token in logs and errors (never the secret itself).
    pub name: String,
    /// The secret, sent as `Authorization: Bearer <token>`.
    pub token: String,
    /// Job types it may send: exact names, or prefixes ending in `*`
    /// (`billing.*`); empty: any.
    pub types: Vec<String>,
    /// Queues its jobs may go to; empty: any.
    pub queues: Vec<String>,
    /// Whether it may read `/metrics` (when metrics are protected).
    pub metrics: bool,
    /// Most requests per second (`None`: no limit).
    pub rate: Option<f64>,
}

impl Grant {
    /// Whether the scope admits a job type by its name alone.
    pub fn allows_type(&self, job_type: &str) -> bool {
        self.types.is_empty()
            || self
                .types
                .iter()
                .any(|pattern| match pattern.strip_suffix('*') {
                    Some(prefix) => job_type.starts_with(prefix),
                    None => pattern == job_type,
                })
    }

    /// Whether the scope admits jobs into `queue` (`None`: the type is not
    /// known, so neither is its queue).
    pub fn allows_queue(&self, queue: Option<&str>) -> bool {
        self.queues.is_empty() || queue.is_some_and(|q| self.queues.iter().any(|a| a == q))
    }
}

/// A grant in force, with its rate bucket.
pub(super) struct Granted {
    pub grant: Grant,
    bucket: Mutex<(f64, Instant)>,
}

impl Granted {
    /// Takes one request from the rate; false when over it.
    pub fn take(&self) -> bool {
        let Some(rate) = self.grant.rate else {
            return true;
        };
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // A second's worth may be saved up: short bursts pass, floods do not.
        let tokens =
            (bucket.0 + rate * now.duration_since(bucket.1).as_secs_f64()).min(rate.max(1.0));
        if tokens >= 1.0 {
            *bucket = (tokens - 1.0, now);
            true
        } else {
            *bucket = (tokens, now);
            false
        }
    }
}

/// The grants in force.
pub(super) struct Access {
    grants: RwLock<Arc<Vec<Arc<Granted>>>>,
}

/// Why a request was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Denied {
    /// No token, or none that matches: 401.
    Unauthenticated,
    /// Over its token's rate: 429.
    RateLimited,
}

impl Access {
    /// Access under `grants` (none: the gate is open to anyone who reaches it).
    pub fn new(grants: Vec<Grant>) -> Self {
        let access = Self {
            grants: RwLock::new(Arc::new(Vec::new())),
        };
        access.replace(grants);
        access
    }

    /// Puts new grants in force; requests already let in finish under the
    /// old ones. Rate buckets start full.
    pub fn replace(&self, grants: Vec<Grant>) {
        let now = Instant::now();
        let granted = grants
            .into_iter()
            .map(|grant| {
                let full = grant.rate.unwrap_or(0.0).max(1.0);
                Arc::new(Granted {
                    grant,
                    bucket: Mutex::new((full, now)),
                })
            })
            .collect();
        *self.grants.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(granted);
    }

    fn current(&self) -> Arc<Vec<Arc<Granted>>> {
        Arc::clone(&self.grants.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The grant of the bearer token given (`None` when the gate is open).
    pub fn admit(&self, bearer: Option<&str>) -> Result<Option<Arc<Granted>>, Denied> {
        let grants = self.current();
        if grants.is_empty() {
            return Ok(None);
        }
        let given = bearer.unwrap_or("").as_bytes();
        // Every token is compared, matched or not: no early exit.
        let mut found = None;
        for granted in grants.iter() {
            if constant_time_eq(given, granted.grant.token.as_bytes()) && !given.is_empty() {
                found = Some(Arc::clone(granted));
            }
        }
        let granted = found.ok_or(Denied::Unauthenticated)?;
        if granted.take() {
            Ok(Some(granted))
        } else {
            Err(Denied::RateLimited)
        }
    }
}

/// Refuses grants the gate cannot enforce: an empty token (it would match a
/// missing header), a name or token given twice, a rate that is not a
/// positive number.
pub fn validate_grants(grants: &[Grant]) -> crate::error::Result<()> {
    let bad = |why: String| Err(crate::error::Error::Config(why));
    for (i, g) in grants.iter().enumerate() {
        if g.token.is_empty() {
            return bad(format!("token {:?} is empty", g.name));
        }
        if g.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return bad(format!(
                "token {:?}: rate must be a positive number of requests/s",
                g.name
            ));
        }
        if grants[..i]
            .iter()
            .any(|o| o.name == g.name || o.token == g.token)
        {
            return bad(format!(
                "token {:?} is given twice (by name or by secret)",
                g.name
            ));
        }
    }
    Ok(())
}

/// Compares two byte strings in time that depends only on their lengths.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(token: &str, types: &[&str], queues: &[&str], rate: Option<f64>) -> Grant {
        Grant {
            name: format!("{token}-name"),
            token: token.to_owned(),
            types: types.iter().map(|s| (*s).to_owned()).collect(),
            queues: queues.iter().map(|s| (*s).to_owned()).collect(),
            metrics: false,
            rate,
        }
    }

    #[test]
    fn an_open_gate_admits_anyone_and_a_closed_one_only_its_tokens() {
        assert!(Access::new(vec![]).admit(None).unwrap().is_none());
        let access = Access::new(vec![grant("a", &[], &[], None), grant("b", &[], &[], None)]);
        assert_eq!(access.admit(None).err(), Some(Denied::Unauthenticated));
        assert_eq!(access.admit(Some("")).err(), Some(Denied::Unauthenticated));
        assert_eq!(access.admit(Some("c")).err(), Some(Denied::Unauthenticated));
        assert_eq!(
            access.admit(Some("b")).unwrap().unwrap().grant.name,
            "b-name"
        );
        access.replace(vec![grant("c", &[], &[], None)]);
        assert_eq!(access.admit(Some("b")).err(), Some(Denied::Unauthenticated));
        assert!(access.admit(Some("c")).is_ok());
    }

    #[test]
    fn scopes_admit_types_by_name_and_queues_only_when_known() {
        let g = grant("t", &["billing.*", "notify.push"], &["billing"], None);
        assert!(g.allows_type("billing.charge"));
        assert!(g.allows_type("notify.push"));
        assert!(!g.allows_type("notify.pushy"));
        assert!(!g.allows_type("other.x"));
        assert!(g.allows_queue(Some("billing")));
        assert!(!g.allows_queue(Some("default")));
        assert!(
            !g.allows_queue(None),
            "an unknown type's queue is not known"
        );
        assert!(grant("t", &[], &[], None).allows_queue(None));
    }

    #[test]
    fn a_token_over_its_rate_is_refused_until_it_refills() {
        let access = Access::new(vec![grant("r", &[], &[], Some(3.0))]);
        let admitted = (0..10).filter(|_| access.admit(Some("r")).is_ok()).count();
        assert_eq!(admitted, 3, "a second's worth, then refused");
        std::thread::sleep(std::time::Duration::from_millis(400));
        assert!(access.admit(Some("r")).is_ok(), "refilled");
    }

    #[test]
    fn grants_the_gate_cannot_enforce_are_refused() {
        assert!(validate_grants(&[grant("a", &[], &[], Some(5.0))]).is_ok());
        assert!(validate_grants(&[grant("", &[], &[], None)]).is_err());
        assert!(validate_grants(&[grant("a", &[], &[], Some(0.0))]).is_err());
        assert!(validate_grants(&[grant("a", &[], &[], Some(f64::NAN))]).is_err());
        assert!(
            validate_grants(&[grant("a", &[], &[], None), grant("a", &[], &[], None)]).is_err()
        );
    }

    #[test]
    fn equal_bytes_compare_equal_and_nothing_else_does() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
