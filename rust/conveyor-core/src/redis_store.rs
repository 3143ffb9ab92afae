//! Redis plumbing: connections and the Lua scripts that change queue state.
//!
//! Every state change is one script from `scripts/` (named `<what>-<key count>.lua`,
//! each opening with a header of its KEYS, ARGV and return codes). Reads that
//! change nothing are plain commands.

use std::time::Duration;

use crate::error::Result;
use crate::keys::{registry_key, relay_control_key, relay_status_key, routes_key, QueueKeys};
use crate::redis_conn::RedisConn;

/// The scripts, embedded at build time.
pub mod scripts {
    use std::sync::LazyLock;

    use redis::Script;

    macro_rules! script {
        ($name:ident, $file:literal, $doc:literal) => {
            #[doc = concat!($doc, " See `scripts/", $file, "`.")]
            pub static $name: LazyLock<Script> =
                LazyLock::new(|| Script::new(include_str!(concat!("scripts/", $file))));
        };
    }

    script!(
        ADMIT,
        "admit-6.lua",
        "Admits new jobs into a queue (relay and direct path)."
    );
    script!(FETCH, "fetch-5.lua", "Leases a batch of jobs to a worker.");
    script!(SETTLE, "settle-7.lua", "Records how leased jobs ended.");
    script!(HEARTBEAT, "heartbeat-1.lua", "Extends a worker's leases.");
    script!(
        RELEASE,
        "release-4.lua",
        "Gives unstarted leased jobs back."
    );
    script!(REAP, "reap-4.lua", "Returns the jobs of expired leases.");
    script!(
        REPLAY_DEAD,
        "replay_dead-2.lua",
        "Moves dead letters back to ready."
    );
    script!(
        PERIODIC,
        "periodic-3.lua",
        "Enqueues one occurrence of a periodic job once."
    );

    /// Every script, to load them all when a connection opens.
    pub(crate) static ALL: LazyLock<[&'static Script; 10]> = LazyLock::new(|| {
        [
            &ADMIT,
            &FETCH,
            &SETTLE,
            &HEARTBEAT,
            &RELEASE,
            &REAP,
            &REPLAY_DEAD,
            &PERIODIC,
            &CONTROL,
            &PUBLISH_REGISTRY,
        ]
    });

    /// Sets or clears a relay control or a job type's route. See
    /// `scripts/control-1.lua`.
    pub static CONTROL: LazyLock<Script> =
        LazyLock::new(|| Script::new(include_str!("scripts/control-1.lua")));

    /// Records job types in the registry. See `scripts/publish_registry-1.lua`.
    pub static PUBLISH_REGISTRY: LazyLock<Script> =
        LazyLock::new(|| Script::new(include_str!("scripts/publish_registry-1.lua")));
}

/// A synchronous connection to one Redis server or one Redis Cluster.
pub struct RedisStore {
    conn: RedisConn,
}

impl RedisStore {
    /// Connects to `url` (`redis://[:password@]host:port/db`, or
    /// `redis+cluster://[:password@]host:port[,host:port…]` for a cluster),
    /// bounding the connect and every reply by `timeout`.
    pub fn connect(url: &str, timeout: Duration) -> Result<Self> {
        let mut conn = RedisConn::open(url, timeout)?;
        // Pipelines and prepared commands send EVALSHA without retrying on
        // NOSCRIPT: load every script with the connection (on a cluster,
        // SCRIPT LOAD goes to every primary).
        for script in scripts::ALL.iter() {
            script.load(&mut conn)?;
        }
        Ok(Self { conn })
    }

    /// Whether this store is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.conn.is_cluster()
    }

    /// The server's `INFO server` fields as `(name, value)`: proof it answered
    /// (on a cluster, one primary's).
    pub fn server_info(&mut self) -> Result<Vec<(String, String)>> {
        let texts = self.conn.info("server")?;
        Ok(texts
            .first()
            .map(String::as_str)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect())
    }

    /// `(used_memory, maxmemory)` in bytes; `maxmemory` 0 means no limit. On a
    /// cluster, those of the primary nearest its limit (the fullest when none
    /// has one): the guards then hold writes back before any node refuses.
    pub fn memory(&mut self) -> Result<(u64, u64)> {
        let texts = self.conn.info("memory")?;
        let nodes = texts.iter().map(|text| {
            let field = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            (field("used_memory"), field("maxmemory"))
        });
        Ok(nodes
            .max_by(|a, b| fullness(*a).total_cmp(&fullness(*b)).then(a.0.cmp(&b.0)))
            .unwrap_or((0, 0)))
    }

    /// How many jobs a queue's ready list holds.
    pub fn ready_len(&mut self, keys: &QueueKeys) -> Result<u64> {
        Ok(redis::cmd("LLEN").arg(keys.ready()).query(&mut self.conn)?)
    }

    /// Reads up to `count` envelopes from the head of a ready list without
    /// taking them.
    pub fn peek_ready(&mut self, keys: &QueueKeys, count: usize) -> Result<Vec<Vec<u8>>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        Ok(redis::cmd("LRANGE")
            .arg(keys.ready())
            .arg(0)
            .arg(count as i64 - 1)
            .query(&mut self.conn)?)
    }

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

    /// Deletes every key of a queue, leases included (tests and `dev` resets).
    pub fn purge(&mut self, keys: &QueueKeys) -> Result<()> {
        let tokens: Vec<String> = redis::cmd("ZRANGE")
            .arg(keys.leases())
            .arg(0)
            .arg(-1)
            .query(&mut self.conn)?;
        let mut del = redis::cmd("DEL");
        del.arg(&keys.all()[..]);
        for token in tokens {
            del.arg(keys.lease(&token));
        }
        del.exec(&mut self.conn)?;
        Ok(())
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
            return Err(crate::Error::InvalidJob(format!(
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
                if !(0.0..=100.0).contains(&percent) {
                    return Err(crate::Error::InvalidJob(format!(
                        "kafka_percent must be 0 to 100, not {percent}"
                    )));
                }
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

    /// The next offset to relay per `<topic>:<partition>` of a queue.
    pub fn relayed_offsets(&mut self, keys: &QueueKeys) -> Result<Vec<(String, i64)>> {
        Ok(redis::cmd("HGETALL")
            .arg(keys.relayed())
            .query(&mut self.conn)?)
    }

    /// The underlying connection, for the relay's pipelines.
    pub(crate) fn connection(&mut self) -> &mut RedisConn {
        &mut self.conn
    }
}

/// How full a node is: used/max, or 0 without a limit (so any node with a
/// limit ranks above every node without one).
fn fullness((used, max): (u64, u64)) -> f64 {
    if max == 0 {
        0.0
    } else {
        used as f64 / max as f64
    }
}
