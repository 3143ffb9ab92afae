//! The control plane in Redis: the job type registry, run-time routes,
//! relay controls (rates, pauses, shadow mode) and relay statuses.

use super::scripts;
use super::RedisStore;
use crate::error::{Error, Result};
use crate::store::keys::{registry_key, relay_control_key, relay_status_key, routes_key};

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
        Ok(invocation.invoke(&mut self.conn)?)
    }

    /// Every published job type as `(name, JSON options)`.
    pub fn read_registry(&mut self, namespace: &str) -> Result<Vec<(String, String)>> {
        Ok(redis::cmd("HGETALL")
            .arg(registry_key(namespace)?)
            .query(&mut self.conn)?)
    }

    /// Sets (`Some`) or clears (`None`) a relay control field for `topic`:
    /// `kind` is `"rate"` (jobs per second), `"paused"` or `"shadow"`.
    pub fn set_relay_control(
        &mut self,
        namespace: &str,
        kind: &str,
        topic: &str,
        value: Option<&str>,
    ) -> Result<()> {
        if !matches!(kind, "rate" | "paused" | "shadow") {
            return Err(Error::InvalidJob(format!(
                "relay control must be 'rate', 'paused' or 'shadow', not {kind:?}"
            )));
        }
        let _: i64 = scripts::CONTROL
            .key(relay_control_key(namespace)?)
            .arg(format!("{kind}:{topic}"))
            .arg(value.unwrap_or(""))
            .invoke(&mut self.conn)?;
        Ok(())
    }

    /// Sets a job type's route (`Some((kafka_percent, double_write))`) or
    /// clears it (`None`: the producers' own configuration applies again).
    pub fn set_route(
        &mut self,
        namespace: &str,
        job_type: &str,
        route: Option<(f64, bool)>,
    ) -> Result<()> {
        crate::envelope::validate_job_type(job_type)?;
        let value = match route {
            None => String::new(),
            Some((percent, double_write)) => {
                check_kafka_percent(percent)?;
                serde_json::json!({"kafka_percent": percent, "double_write": double_write})
                    .to_string()
            }
        };
        let _: i64 = scripts::CONTROL
            .key(routes_key(namespace)?)
            .arg(job_type)
            .arg(value)
            .invoke(&mut self.conn)?;
        Ok(())
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
