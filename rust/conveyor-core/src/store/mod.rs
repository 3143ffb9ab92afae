//! Redis: the store and its rooms.
//!
//! [`RedisStore`] is one synchronous connection to a Redis server or cluster
//! ([`conn`]). Its methods live by role: connecting and reading the server
//! here, the queue state machine in [`queue`] (admission in [`admission`]),
//! the control plane (registry, routes, relay controls and statuses) in
//! [`control`]. Key names are in [`keys`]. Every state change is one script
//! from `scripts/` ([`scripts`]); reads that change nothing are plain commands.

pub mod admission;
pub mod canaries;
pub mod cancels;
pub mod conn;
mod control;
pub mod dead;
pub use control::{check_kafka_percent, Actor};
pub mod control_values;
pub mod history;
pub mod keys;
pub mod queue;
pub mod scripts;
mod settlement;
pub mod tally;
mod tls;

pub(crate) use tls::install_provider as install_tls_provider;

use std::time::Duration;

use redis::Cmd;

use crate::error::Result;
use conn::RedisConn;
use keys::QueueKeys;

/// A synchronous connection to one Redis server or one Redis Cluster.
pub struct RedisStore {
    conn: RedisConn,
    /// Whether this connection has loaded the scripts (see [`RedisStore::scripted`]).
    scripts_loaded: bool,
}

impl RedisStore {
    /// Connects to `url` (`redis://[:password@]host:port/db`, or
    /// `redis+cluster://[:password@]host:port[,host:port…]` for a cluster),
    /// bounding the connect and every reply by `timeout`.
    pub fn connect(url: &str, timeout: Duration) -> Result<Self> {
        Ok(Self {
            conn: RedisConn::open(url, timeout)?,
            scripts_loaded: false,
        })
    }

    /// Whether this store is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.conn.is_cluster()
    }

    /// The server's `INFO <section>` fields as `(name, value)`: proof it answered
    /// (on a cluster, one primary's).
    pub fn server_info(&mut self, section: &str) -> Result<Vec<(String, String)>> {
        let texts = self.conn.info(section)?;
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

    /// The next offset to relay per `<topic>:<partition>` of a queue.
    pub fn relayed_offsets(&mut self, keys: &QueueKeys) -> Result<Vec<(String, i64)>> {
        Ok(redis::cmd("HGETALL")
            .arg(keys.relayed())
            .query(&mut self.conn)?)
    }

    /// Each queue's fences, then its open-jobs counts (`keys::open_field`
    /// -> count), in one round trip. Each queue's two are read in that
    /// order (one node holds both, and runs a pipeline's commands in
    /// order): a batch landing in between only adds open jobs at or past
    /// the fences read, so a watermark computed from the two is never too
    /// high.
    pub fn recovery_readings(&mut self, queues: &[&QueueKeys]) -> Result<Vec<RecoveryReading>> {
        if queues.is_empty() {
            return Ok(Vec::new());
        }
        let mut commands = Vec::with_capacity(queues.len() * 2);
        for keys in queues {
            for key in [keys.relayed(), keys.open()] {
                let mut cmd = Cmd::new();
                cmd.arg("HGETALL").arg(key);
                commands.push(cmd);
            }
        }
        let replies: Vec<Vec<(String, i64)>> = self.conn.pipeline(commands)?;
        let mut replies = replies.into_iter();
        let mut readings = Vec::with_capacity(queues.len());
        while let (Some(fences), Some(open)) = (replies.next(), replies.next()) {
            readings.push((fences, open));
        }
        Ok(readings)
    }

    /// Moves a partition's fence from `from` back to `to`, if it still reads
    /// `from` (a relay that wrote meanwhile wins); true when moved. Only for
    /// a fence past the end of its partition's log: the topic was deleted
    /// and created again under its name, and its new records start low.
    pub fn reset_fence(
        &mut self,
        keys: &QueueKeys,
        field: &str,
        from: i64,
        to: i64,
    ) -> Result<bool> {
        let relayed = keys.relayed();
        let conn = match &mut self.conn {
            RedisConn::Server(conn) => conn,
            // A cluster connection cannot hold a WATCH; the value check in
            // one script-free step is the best it has.
            cluster => {
                let stored: Option<i64> =
                    redis::cmd("HGET").arg(&relayed).arg(field).query(cluster)?;
                if stored != Some(from) {
                    return Ok(false);
                }
                redis::cmd("HSET")
                    .arg(&relayed)
                    .arg(field)
                    .arg(to)
                    .exec(cluster)?;
                return Ok(true);
            }
        };
        redis::cmd("WATCH").arg(&relayed).exec(conn)?;
        let stored: Option<i64> = redis::cmd("HGET").arg(&relayed).arg(field).query(conn)?;
        if stored != Some(from) {
            redis::cmd("UNWATCH").exec(conn)?;
            return Ok(false);
        }
        let done: Option<()> = redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(&relayed)
            .arg(field)
            .arg(to)
            .ignore()
            .query(conn)?;
        Ok(done.is_some())
    }

    /// The store's generation: `fresh`, written now, unless it has one. A
    /// read first, so a full Redis (which refuses every write) still answers.
    pub fn generation(&mut self, namespace: &str, fresh: &str) -> Result<String> {
        let key = keys::generation_key(namespace)?;
        let now: Option<String> = redis::cmd("GET").arg(&key).query(&mut self.conn)?;
        if let Some(now) = now {
            return Ok(now);
        }
        let old: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(fresh)
            .arg("NX")
            .arg("GET")
            .query(&mut self.conn)?;
        Ok(old.unwrap_or_else(|| fresh.to_owned()))
    }

    /// The underlying connection, for plain commands.
    pub(crate) fn connection(&mut self) -> &mut RedisConn {
        &mut self.conn
    }

    /// The connection, for script calls: the scripts are loaded on the
    /// first. Pipelines send EVALSHA without retrying on NOSCRIPT, so all
    /// are loaded at once (on a cluster, SCRIPT LOAD goes to every primary).
    /// Not at connect: a read-only account (`conveyor queues` under the
    /// operator ACL role) has no right to load scripts and needs none.
    pub(crate) fn scripted(&mut self) -> Result<&mut RedisConn> {
        if !self.scripts_loaded {
            for script in scripts::ALL.iter() {
                script.load(&mut self.conn)?;
            }
            self.scripts_loaded = true;
        }
        Ok(&mut self.conn)
    }
}

/// A queue's fences (`"<topic>:<partition>"` -> next offset) and open-jobs
/// counts, from [`RedisStore::recovery_readings`].
pub type RecoveryReading = (Vec<(String, i64)>, Vec<(String, i64)>);

/// How full a node is: used/max, or 0 without a limit (so any node with a
/// limit ranks above every node without one).
fn fullness((used, max): (u64, u64)) -> f64 {
    if max == 0 {
        0.0
    } else {
        used as f64 / max as f64
    }
}
