//! One connection type for both kinds of Redis deployment: a single server
//! (`redis://…`, `rediss://…` with TLS) or a Redis Cluster
//! (`redis+cluster://…`, `rediss+cluster://…`); TLS options in [`super::tls`].
//!
//! Every key of one queue carries the queue's hash tag, so every script call
//! and every pipeline of one queue lands in one slot and stays atomic on a
//! cluster as on a server. What differs is handled here and in
//! [`crate::RedisStore`]: pipelines that span queues are split per node,
//! `INFO` is asked of every primary, and scripts are loaded on every primary.

use std::time::Duration;

use redis::cluster::{ClusterClient, ClusterConnection};
use redis::TlsMode;
use redis::{Client, Cmd, Connection, ConnectionLike, FromRedisValue, RedisResult, Value};

use crate::error::{Error, Result};

/// The URL scheme of a Redis Cluster: `redis+cluster://[[user]:password@]host:port[,host:port…]`
/// (the seed nodes; the others are found from them).
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// [`CLUSTER_SCHEME`] over TLS.
pub const TLS_CLUSTER_SCHEME: &str = "rediss+cluster://";

/// A connection to a Redis server or to a Redis Cluster.
pub enum RedisConn {
    /// One server.
    Server(Connection),
    /// A cluster: commands are routed by their keys' slots. (Boxed: the
    /// cluster connection is far larger than a server's.)
    Cluster(Box<ClusterConnection>),
}

impl RedisConn {
    /// Opens `url`, bounding the connect and every reply by `timeout`.
    pub fn open(url: &str, timeout: Duration) -> Result<Self> {
        let (url, certs) = super::tls::split(url)?;
        let cluster = url
            .strip_prefix(CLUSTER_SCHEME)
            .map(|rest| (rest, false))
            .or_else(|| {
                url.strip_prefix(TLS_CLUSTER_SCHEME)
                    .map(|rest| (rest, true))
            });
        match cluster {
            None => {
                let client = match certs {
                    Some(certs) => Client::build_with_tls(url.as_str(), certs)?,
                    None => Client::open(url.as_str())?,
                };
                let conn = client.get_connection_with_timeout(timeout)?;
                conn.set_read_timeout(Some(timeout))?;
                conn.set_write_timeout(Some(timeout))?;
                Ok(Self::Server(conn))
            }
            Some((rest, tls)) => {
                let mut builder = ClusterClient::builder(seed_nodes(rest, tls)?)
                    .connection_timeout(timeout)
                    .response_timeout(timeout);
                if tls {
                    builder = builder.tls(TlsMode::Secure);
                }
                if let Some(certs) = certs {
                    builder = builder.certs(certs);
                }
                let conn = builder.build()?.get_connection()?;
                Ok(Self::Cluster(Box::new(conn)))
            }
        }
    }

    /// Whether this is a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// Sends `commands` pipelined and returns their replies in order. On a
    /// cluster each command goes to the node of its keys' slot.
    pub fn pipeline<T: FromRedisValue>(&mut self, commands: Vec<Cmd>) -> Result<T> {
        match self {
            Self::Server(conn) => {
                let mut pipe = redis::pipe();
                for cmd in commands {
                    pipe.add_command(cmd);
                }
                Ok(pipe.query(conn)?)
            }
            Self::Cluster(conn) => {
                let mut pipe = redis::cluster::cluster_pipe();
                for cmd in commands {
                    pipe.add_command(cmd);
                }
                Ok(pipe.query(conn)?)
            }
        }
    }

    /// The text of `INFO <section>` from the server, or from every primary
    /// of a cluster.
    pub fn info(&mut self, section: &str) -> Result<Vec<String>> {
        let value: Value = redis::cmd("INFO").arg(section).query(self)?;
        match value {
            // A cluster answers with one reply per node, keyed by address.
            Value::Map(replies) => replies.into_iter().map(|(_, reply)| text(reply)).collect(),
            single => Ok(vec![text(single)?]),
        }
    }
}

fn text(value: Value) -> Result<String> {
    Ok(String::from_redis_value(value).map_err(redis::RedisError::from)?)
}

/// `redis://…` (`rediss://…` with `tls`) URLs of the seed nodes in the part
/// of a cluster URL after the scheme; credentials given once apply to every
/// node.
fn seed_nodes(rest: &str, tls: bool) -> Result<Vec<String>> {
    let scheme = if tls { "rediss" } else { "redis" };
    let rest = rest.trim_end_matches('/');
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|host| format!("{scheme}://{auth}{host}"))
        .collect();
    let well_formed = hosts.split(',').all(|h| {
        h.trim()
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    });
    if nodes.is_empty() || !well_formed {
        return Err(Error::Config(format!(
            "a Redis Cluster URL is {CLUSTER_SCHEME}[[user]:password@]host:port[,host:port...], \
             with no database number"
        )));
    }
    Ok(nodes)
}

impl ConnectionLike for RedisConn {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        match self {
            Self::Server(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        match self {
            Self::Server(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Server(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }

    fn check_connection(&mut self) -> bool {
        match self {
            Self::Server(c) => c.check_connection(),
            Self::Cluster(c) => c.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            Self::Server(c) => c.is_open(),
            Self::Cluster(c) => c.is_open(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_name_their_seed_nodes() {
        assert_eq!(
            seed_nodes("127.0.0.1:7000,127.0.0.1:7001/", false).unwrap(),
            ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]
        );
        assert_eq!(
            seed_nodes(":s3cret@a:1,b:2", true).unwrap(),
            ["rediss://:s3cret@a:1", "rediss://:s3cret@b:2"]
        );
        for bad in ["", "a", "a:port", "a:1/0", ":1", "a:1,"] {
            assert!(seed_nodes(bad, false).is_err(), "{bad:?} accepted");
        }
    }
}
