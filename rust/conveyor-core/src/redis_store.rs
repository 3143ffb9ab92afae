//! Redis plumbing: connections and the Lua scripts that change queue state.
//!
//! Every state change is one script from `scripts/` (named `<what>-<key count>.lua`,
//! each opening with a header of its KEYS, ARGV and return codes). Reads that
//! change nothing are plain commands.

use std::time::Duration;

use redis::{Client, Connection};

use crate::error::Result;
use crate::keys::{registry_key, relay_control_key, QueueKeys};

/// The scripts, embedded at build time.
pub mod scripts {
    use std::sync::LazyLock;

    use redis::Script;

    /// Appends envelopes to a ready list. See `scripts/push_ready-1.lua`.
    pub static PUSH_READY: LazyLock<Script> =
        LazyLock::new(|| Script::new(include_str!("scripts/push_ready-1.lua")));

    /// Appends a relayed batch exactly once. See `scripts/relay_batch-2.lua`.
    pub static RELAY_BATCH: LazyLock<Script> =
        LazyLock::new(|| Script::new(include_str!("scripts/relay_batch-2.lua")));

    /// Sets or clears a relay control. See `scripts/relay_control-1.lua`.
    pub static RELAY_CONTROL: LazyLock<Script> =
        LazyLock::new(|| Script::new(include_str!("scripts/relay_control-1.lua")));

    /// Records job types in the registry. See `scripts/publish_registry-1.lua`.
    pub static PUBLISH_REGISTRY: LazyLock<Script> =
        LazyLock::new(|| Script::new(include_str!("scripts/publish_registry-1.lua")));
}

/// A synchronous connection to one Redis server.
pub struct RedisStore {
    conn: Connection,
}

impl RedisStore {
    /// Connects to `url` (`redis://[:password@]host:port/db`), bounding the
    /// connect and every reply by `timeout`.
    pub fn connect(url: &str, timeout: Duration) -> Result<Self> {
        let client = Client::open(url)?;
        let conn = client.get_connection_with_timeout(timeout)?;
        conn.set_read_timeout(Some(timeout))?;
        conn.set_write_timeout(Some(timeout))?;
        Ok(Self { conn })
    }

    /// The server's `INFO server` fields as `(name, value)`: proof it answered.
    pub fn server_info(&mut self) -> Result<Vec<(String, String)>> {
        let text: String = redis::cmd("INFO").arg("server").query(&mut self.conn)?;
        Ok(text
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect())
    }

    /// Appends encoded envelopes to a queue's ready list in one atomic step;
    /// returns the list's new length.
    pub fn push_ready(&mut self, keys: &QueueKeys, envelopes: &[Vec<u8>]) -> Result<u64> {
        if envelopes.is_empty() {
            return self.ready_len(keys);
        }
        let mut invocation = scripts::PUSH_READY.key(keys.ready());
        for env in envelopes {
            invocation.arg(env.as_slice());
        }
        Ok(invocation.invoke(&mut self.conn)?)
    }

    /// `(used_memory, maxmemory)` in bytes; `maxmemory` 0 means no limit.
    pub fn memory(&mut self) -> Result<(u64, u64)> {
        let text: String = redis::cmd("INFO").arg("memory").query(&mut self.conn)?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok((field("used_memory"), field("maxmemory")))
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

    /// Deletes every key of a queue (tests and `dev` resets).
    pub fn purge(&mut self, keys: &QueueKeys) -> Result<()> {
        redis::cmd("DEL")
            .arg(keys.ready())
            .arg(keys.relayed())
            .exec(&mut self.conn)?;
        Ok(())
    }

    /// Appends one partition's relayed records exactly once (the relay's
    /// script, callable alone for tools and tests): records below the offset
    /// Redis holds for `topic:partition` are skipped. Returns `(pushed, skipped)`.
    pub fn relay_batch(
        &mut self,
        keys: &QueueKeys,
        topic_partition: &str,
        next_offset: i64,
        records: &[(i64, Vec<u8>)],
    ) -> Result<(u64, u64)> {
        let mut invocation = scripts::RELAY_BATCH.key(keys.ready());
        invocation
            .key(keys.relayed())
            .arg(topic_partition)
            .arg(next_offset);
        for (offset, envelope) in records {
            invocation.arg(*offset).arg(envelope.as_slice());
        }
        Ok(invocation.invoke(&mut self.conn)?)
    }

    /// Sets (`Some`) or clears (`None`) a relay control field for `topic`:
    /// `kind` is `"rate"` (jobs per second) or `"paused"`.
    pub fn set_relay_control(
        &mut self,
        namespace: &str,
        kind: &str,
        topic: &str,
        value: Option<&str>,
    ) -> Result<()> {
        if !matches!(kind, "rate" | "paused") {
            return Err(crate::Error::InvalidJob(format!(
                "relay control must be 'rate' or 'paused', not {kind:?}"
            )));
        }
        let _: i64 = scripts::RELAY_CONTROL
            .key(relay_control_key(namespace)?)
            .arg(format!("{kind}:{topic}"))
            .arg(value.unwrap_or(""))
            .invoke(&mut self.conn)?;
        Ok(())
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
    pub(crate) fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }
}
