//! The Lua scripts, embedded at build time: one per queue state change,
//! named `<what>-<key count>.lua`, each opening with a header of its KEYS,
//! ARGV and return codes (see docs/redis.md for the table).

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
    "admit-7.lua",
    "Admits new jobs into a queue (relay and direct path)."
);
script!(FETCH, "fetch-6.lua", "Leases a batch of jobs to a worker.");
script!(SETTLE, "settle-11.lua", "Records how leased jobs ended.");
script!(HEARTBEAT, "heartbeat-2.lua", "Extends a worker's leases.");
script!(
    RELEASE,
    "release-5.lua",
    "Gives unstarted leased jobs back."
);
script!(REAP, "reap-5.lua", "Returns the jobs of expired leases.");
script!(
    REPLAY_DEAD,
    "replay_dead-4.lua",
    "Moves dead letters back to ready."
);
script!(
    PURGE_DEAD,
    "purge_dead-3.lua",
    "Forgets dead-lettered jobs that died before a time."
);
script!(
    FORGET_DEAD,
    "forget_dead-3.lua",
    "Deletes chosen dead letters, by envelope."
);
script!(
    CANCEL,
    "cancel-1.lua",
    "Asks for a job to be cancelled, by id."
);
script!(
    TALLY,
    "tally-1.lua",
    "Adds jobs a producer had acknowledged to a minute's counts."
);
script!(
    PERIODIC,
    "periodic-3.lua",
    "Enqueues one occurrence of a periodic job once."
);

/// Every script, to load them all when a connection opens.
pub(crate) static ALL: LazyLock<[&'static Script; 14]> = LazyLock::new(|| {
    [
        &ADMIT,
        &FETCH,
        &SETTLE,
        &HEARTBEAT,
        &RELEASE,
        &REAP,
        &REPLAY_DEAD,
        &PURGE_DEAD,
        &FORGET_DEAD,
        &PERIODIC,
        &CANCEL,
        &CONTROL,
        &PUBLISH_REGISTRY,
        &TALLY,
    ]
});

/// Sets or clears a relay control or a job type's route. See
/// `scripts/control-2.lua`.
pub static CONTROL: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/control-2.lua")));

/// Records job types in the registry. See `scripts/publish_registry-1.lua`.
pub static PUBLISH_REGISTRY: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/publish_registry-1.lua")));

/// A script call: the script, its keys and its arguments. Like redis-rs's
/// `ScriptInvocation`, and besides run on its own it can go into a pipeline
/// with another call ([`Call::packed`]): a worker settles a batch and leases
/// the next in one round trip.
pub(crate) struct Call {
    script: &'static Script,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Call {
    /// A call of `script` with no keys or arguments yet.
    pub(crate) fn new(script: &'static Script) -> Self {
        Call {
            script,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }

    /// Adds a key (`KEYS[n]`).
    pub(crate) fn key<T: redis::ToRedisArgs>(&mut self, key: T) -> &mut Self {
        key.write_redis_args(&mut self.keys);
        self
    }

    /// Adds an argument (`ARGV[n]`).
    pub(crate) fn arg<T: redis::ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    /// Appends this call's `EVALSHA` to `out`, the bytes of a pipeline.
    pub(crate) fn packed(&self, out: &mut Vec<u8>) {
        let mut cmd = redis::Cmd::with_capacity(
            3 + self.keys.len() + self.args.len(),
            self.keys
                .iter()
                .chain(&self.args)
                .map(Vec::len)
                .sum::<usize>()
                + 64,
        );
        cmd.arg("EVALSHA")
            .arg(self.script.get_hash())
            .arg(self.keys.len())
            .arg(&self.keys)
            .arg(&self.args);
        cmd.write_packed_command(out);
    }

    /// Runs the call; a server that lost its scripts (a restart, `SCRIPT
    /// FLUSH`) is given this one again and asked once more.
    pub(crate) fn invoke<T: redis::FromRedisValue>(
        &self,
        conn: &mut dyn redis::ConnectionLike,
    ) -> redis::RedisResult<T> {
        let mut packed = Vec::new();
        self.packed(&mut packed);
        match self.reply(conn.req_packed_command(&packed)?) {
            Err(err) if is_no_script(&err) => {
                self.script.load(conn)?;
                self.reply(conn.req_packed_command(&packed)?)
            }
            reply => reply,
        }
    }

    /// This call's reply as `T`, or the error the server answered with.
    pub(crate) fn reply<T: redis::FromRedisValue>(
        &self,
        value: redis::Value,
    ) -> redis::RedisResult<T> {
        Ok(redis::from_redis_value(value.extract_error()?)?)
    }
}

/// Whether `err` says the server does not have the script called.
pub(crate) fn is_no_script(err: &redis::RedisError) -> bool {
    err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

#[cfg(test)]
mod tests {
    use crate::envelope::{ATTEMPT_OFFSET, ID_LEN, ID_OFFSET};

    /// Every script's source, by file name.
    const SOURCES: [(&str, &str); 12] = [
        ("admit-7.lua", include_str!("scripts/admit-7.lua")),
        ("fetch-6.lua", include_str!("scripts/fetch-6.lua")),
        ("settle-11.lua", include_str!("scripts/settle-11.lua")),
        ("heartbeat-2.lua", include_str!("scripts/heartbeat-2.lua")),
        ("release-5.lua", include_str!("scripts/release-5.lua")),
        ("reap-5.lua", include_str!("scripts/reap-5.lua")),
        (
            "replay_dead-4.lua",
            include_str!("scripts/replay_dead-4.lua"),
        ),
        ("periodic-3.lua", include_str!("scripts/periodic-3.lua")),
        ("cancel-1.lua", include_str!("scripts/cancel-1.lua")),
        ("purge_dead-3.lua", include_str!("scripts/purge_dead-3.lua")),
        ("control-2.lua", include_str!("scripts/control-2.lua")),
        (
            "publish_registry-1.lua",
            include_str!("scripts/publish_registry-1.lua"),
        ),
    ];

    /// The numbers after `local <names> = ` in a script, if it sets them.
    fn local_numbers(source: &str, names: &str) -> Option<Vec<usize>> {
        let prefix = format!("local {names} = ");
        let line = source.lines().find_map(|l| l.strip_prefix(&prefix))?;
        Some(
            line.split(',')
                .map(|n| n.trim().parse().expect("a number"))
                .collect(),
        )
    }

    #[test]
    fn scripts_name_the_envelope_offsets_the_codec_uses() {
        let mut checked = 0;
        for (name, source) in SOURCES {
            if let Some(id) = local_numbers(source, "ID_FIRST, ID_LAST") {
                assert_eq!(id, [ID_OFFSET + 1, ID_OFFSET + ID_LEN], "{name}");
                checked += 1;
            }
            if let Some(attempt) = local_numbers(source, "ATTEMPT_FIRST") {
                assert_eq!(attempt, [ATTEMPT_OFFSET + 1], "{name}");
                checked += 1;
            }
            // An envelope is only ever cut at a named offset (or its start).
            for (at, _) in source.match_indices("(envelope, ") {
                let next = &source[at + "(envelope, ".len()..];
                assert!(
                    next.starts_with("1,") || next.starts_with(|c: char| c.is_ascii_uppercase()),
                    "{name}: envelope cut at a bare number: {}",
                    &next[..next.len().min(20)]
                );
            }
        }
        assert_eq!(
            checked, 4,
            "admit, fetch and purge_dead name the id; reap the attempt (replay_dead is \
             given its envelopes made in Rust)"
        );
    }

    #[test]
    fn admit_counts_open_jobs_in_blocks_of_the_size_the_relay_reads() {
        let (_, source) = SOURCES[0];
        let block = local_numbers(source, "OPEN_BLOCK").expect("admit sets OPEN_BLOCK");
        assert_eq!(block, [crate::store::keys::OPEN_BLOCK as usize]);
    }

    #[test]
    fn scripts_refuse_arguments_with_the_shared_code() {
        let mut refusals = 0;
        for (name, source) in SOURCES {
            for (at, _) in source.match_indices("redis.error_reply(") {
                let rest = &source[at + "redis.error_reply(".len()..];
                let expected = format!("'{} ", crate::error::SCRIPT_ARGS_CODE);
                assert!(
                    rest.starts_with(&expected),
                    "{name}: {}",
                    &rest[..rest.len().min(40)]
                );
                refusals += 1;
            }
        }
        assert!(
            refusals >= 4,
            "fetch, settle and replay_dead refuse bad arguments"
        );
    }
}
