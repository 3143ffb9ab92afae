//! The control plane in Redis: the job type registry, run-time routes,
//! relay controls (rates, pauses, shadow mode) and relay statuses.

use super::scripts;
use super::RedisStore;
use crate::error::{Error, Result};
use crate::store::keys::{
    history_key, registry_key, relay_control_key, relay_status_key, routes_key, HISTORY_LEN,
};

/// Who changed a control and from where, as the caller tells it: written
/// into the control's history with the old and the new value.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    /// User names (the operating system's, the Redis account's).
    pub who: String,
    /// Where from (a host name).
    pub origin: String,
}

impl RedisStore {
    /// Publishes job types (`(name, JSON options)`) to the registry; returns
    /// how many types it holds afterwards.
    pub fn publish_registry(
        &mut self,
        namespace: &str,
        entries: &[(String, String)],
    ) -> Result<u64> {
        let mut invocation = scripts::PUBLISH_REGISTRY.key(registry_key(namespace)?);
        for (name, options) in entries {
            crate::envelope::validate_job_type(name)?;
            invocation.arg(name).arg(options);
        }
        Ok(invocation.invoke(self.scripted()?)?)
    }

    /// Every published job type as `(name, JSON options)`.
    pub fn read_registry(&mut self, namespace: &str) -> Result<Vec<(String, String)>> {
        Ok(redis::cmd("HGETALL")
            .arg(registry_key(namespace)?)
            .query(&mut self.conn)?)
    }

    /// Sets (`Some`) or clears (`None`) a relay control field for `topic`:
    /// `kind` is `"rate"` (jobs per second), `"paused"` or `"shadow"`; the
    /// change is recorded with `actor`. Returns the value before (`None`
    /// when clear).
    pub fn set_relay_control(
        &mut self,
        namespace: &str,
        kind: &str,
        topic: &str,
        value: Option<&str>,
        actor: &Actor,
    ) -> Result<Option<String>> {
        let field = format!("{kind}:{topic}");
        // Cleared fields are checked as if set, for their kind and topic.
        super::control_values::check_relay_control(&field, value.unwrap_or("1"))
            .map_err(Error::InvalidJob)?;
        self.control(
            &relay_control_key(namespace)?,
            &field,
            value.unwrap_or(""),
            actor,
        )
    }

    /// Sets or clears one field of a control hash and records the change
    /// (see `scripts/control-2.lua`); the value before.
    fn control(
        &mut self,
        key: &str,
        field: &str,
        value: &str,
        actor: &Actor,
    ) -> Result<Option<String>> {
        let old: String = scripts::CONTROL
            .key(key)
            .key(history_key(key))
            .arg(field)
            .arg(value)
            .arg(&actor.who)
            .arg(&actor.origin)
            .arg(HISTORY_LEN)
            .invoke(self.scripted()?)?;
        Ok(Some(old).filter(|old| !old.is_empty()))
    }

    /// A control hash's recorded changes, newest first, as JSON texts;
    /// `routes` picks the routes' history, else the relay controls'.
    pub fn control_history(&mut self, namespace: &str, routes: bool) -> Result<Vec<String>> {
        let key = if routes {
            routes_key(namespace)?
        } else {
            relay_control_key(namespace)?
        };
        Ok(redis::cmd("LRANGE")
            .arg(history_key(&key))
            .arg(0)
            .arg(-1)
            .query(&mut self.conn)?)
    }

    /// Sets a job type's route (`Some((kafka_percent, double_write))`) or
    /// clears it (`None`: the producers' own configuration applies again).
    /// The change is recorded with `actor`; returns the route before (its
    /// JSON, `None` when none was set).
    pub fn set_route(
        &mut self,
        namespace: &str,
        job_type: &str,
        route: Option<(f64, bool)>,
        actor: &Actor,
    ) -> Result<Option<String>> {
        crate::envelope::validate_job_type(job_type)?;
        let value = match route {
            None => String::new(),
            Some((percent, double_write)) => {
                check_kafka_percent(percent)?;
                serde_json::json!({"kafka_percent": percent, "double_write": double_write})
                    .to_string()
            }
        };
        self.control(&routes_key(namespace)?, job_type, &value, actor)
    }

    /// Every route set at run time, as `(job type, JSON)`.
    pub fn routes(&mut self, namespace: &str) -> Result<Vec<(String, String)>> {
        Ok(redis::cmd("HGETALL")
            .arg(routes_key(namespace)?)
            .query(&mut self.conn)?)
    }

    /// Publishes (`Some`) or removes (`None`) one relay's status JSON. A plain
    /// command, not a script: it is a report, not queue state.
    pub fn set_relay_status(
        &mut self,
        namespace: &str,
        relay_id: &str,
        status: Option<&str>,
    ) -> Result<()> {
        let key = relay_status_key(namespace)?;
        let mut cmd = match status {
            Some(_) => redis::cmd("HSET"),
            None => redis::cmd("HDEL"),
        };
        cmd.arg(key).arg(relay_id);
        if let Some(json) = status {
            cmd.arg(json);
        }
        cmd.exec(&mut self.conn)?;
        Ok(())
    }

    /// Every published relay status of a namespace as `(relay id, JSON)`.
    pub fn relay_statuses(&mut self, namespace: &str) -> Result<Vec<(String, String)>> {
        Ok(redis::cmd("HGETALL")
            .arg(relay_status_key(namespace)?)
            .query(&mut self.conn)?)
    }

    /// Every relay control of a namespace as `(field, value)`.
    pub fn relay_controls(&mut self, namespace: &str) -> Result<Vec<(String, String)>> {
        Ok(redis::cmd("HGETALL")
            .arg(relay_control_key(namespace)?)
            .query(&mut self.conn)?)
    }
}

/// Checks a route's share of jobs through Kafka: 0 to 100 (the one rule;
/// Python's `Route` asks the binding for it too).
pub fn check_kafka_percent(percent: f64) -> Result<()> {
    if !(0.0..=100.0).contains(&percent) {
        return Err(Error::InvalidJob(format!(
            "kafka_percent must be 0 to 100, not {percent}"
        )));
    }
    Ok(())
}
