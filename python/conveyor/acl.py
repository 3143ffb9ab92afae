"""Redis ACL roles: the least each component needs, written once.

Redis 7 checks a user's rights on every command, the ones a Lua script
sends included, and on every key a command names. So a role lists the
scripts it runs (and, through `SCRIPT_COMMANDS`, the commands inside them),
the plain commands it sends, and the keys it reads or writes. `conveyor acl`
prints them as `ACL SETUSER` lines for `redis-cli`; docs/security.md shows how
to apply them, and `tests/test_acl.py` runs every component under its role
(and holds `SCRIPT_COMMANDS` to the scripts' sources).

What the roles keep apart: only `admin` writes the control plane (routes,
relay pauses, rates and shadow mode, the change history), so a leaked worker,
relay, gate or producer password cannot reroute job types, drop a queue or
pause relaying. `operator` reads everything and changes nothing, and has no
right to load scripts. Queue keys are shared by producers (direct path),
relays and workers: each of them can write any queue of its namespace.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The Redis commands each script calls (`redis.call`), by script file name.
SCRIPT_COMMANDS: dict[str, frozenset[str]] = {
    "admit-7.lua": frozenset(
        {"expire", "hget", "hincrby", "hset", "hsetnx", "ltrim", "rpush", "time", "zadd"}
    ),
    "control-2.lua": frozenset({"hdel", "hget", "hset", "lpush", "ltrim", "time"}),
    "fetch-6.lua": frozenset(
        {"exists", "hset", "llen", "lpop", "lpush", "ltrim", "rpush", "time", "zadd"}
        | {"zcard", "zrangebyscore", "zrem", "zscore"}
    ),
    "cancel-1.lua": frozenset({"time", "zadd", "zremrangebyrank", "zremrangebyscore"}),
    "forget_dead-3.lua": frozenset({"hdel", "hincrby", "zrem"}),
    "heartbeat-2.lua": frozenset({"hset", "time", "zadd", "zscore"}),
    "periodic-3.lua": frozenset({"hget", "hset", "ltrim", "rpush"}),
    "publish_registry-1.lua": frozenset({"hlen", "hset"}),
    "purge_dead-3.lua": frozenset(
        {"hdel", "hincrby", "time", "zcard", "zrange", "zrangebyscore", "zrem"}
    ),
    "reap-5.lua": frozenset(
        {"del", "hdel", "hget", "hgetall", "hincrby", "lpush", "ltrim", "rpush", "time"}
        | {"zrem", "zscore"}
    ),
    "release-5.lua": frozenset({"exists", "hdel", "hget", "lpush", "ltrim", "rpush", "zrem"}),
    "replay_dead-4.lua": frozenset({"hget", "hset", "ltrim", "rpush", "zrem", "zscore"}),
    "tally-1.lua": frozenset({"expire", "hincrby"}),
    "settle-11.lua": frozenset(
        {"append", "del", "expire", "hdel", "hget", "hgetall", "hincrby", "hkeys", "hset"}
        | {"set", "strlen", "time", "zadd", "zrem"}
    ),
}

#: Every account may learn a cluster's layout (redis-rs asks on connect).
_CLUSTER = ("cluster|slots", "cluster|shards", "cluster|nodes")
#: Reading the state of queues, jobs, relays and controls (`conveyor
#: queues`, `job`, `dead`, `relays`, `route`, `controls --history`).
_READS = ("get", "hgetall", "hget", "hvals", "llen", "zcard", "zrange", "lrange")


@dataclass(frozen=True)
class Role:
    """One Redis account's rights, relative to a namespace's key prefix."""

    #: What runs under it.
    doc: str
    #: Script files it runs (each needs `evalsha` and `script|load`).
    scripts: tuple[str, ...] = ()
    #: Plain commands it sends.
    commands: tuple[str, ...] = ()
    #: Keys it reads and writes, as patterns of the namespace-less names
    #: (`cv:` becomes `cv:<ns>:` in a namespace).
    keys: tuple[str, ...] = ()
    #: Keys it only reads.
    read_keys: tuple[str, ...] = ()

    def commands_needed(self) -> list[str]:
        """Every command the role sends, those inside its scripts included."""
        needed = set(self.commands) | set(_CLUSTER)
        if self.scripts:
            needed |= {"evalsha", "script|load"}
        for script in self.scripts:
            needed |= SCRIPT_COMMANDS[script]
        return sorted(needed)

    def rules(self, namespace: str = "") -> str:
        """The role as `ACL SETUSER` rules. No `reset`: applying them again
        keeps the account's passwords and on/off state."""
        prefix = f"cv:{namespace}:" if namespace else "cv:"
        parts = ["resetkeys", "resetchannels", "-@all"]
        parts += [f"+{command}" for command in self.commands_needed()]
        parts += [f"~{p.replace('cv:', prefix, 1)}" for p in self.keys]
        parts += [f"%R~{p.replace('cv:', prefix, 1)}" for p in self.read_keys]
        return " ".join(parts)


#: Queue keys all carry the queue's hash tag: `cv:[<ns>:]{<queue>}:...`.
_QUEUES = "cv:{*"
#: Each queue's counts per hop (`cv:[<ns>:]{<queue>}:tally:<minute>`).
_TALLIES = "cv:{*}:tally:*"
#: The control hashes' histories: `{cv:[<ns>:]routes}:history`, ...
_HISTORIES = "{cv:*}:history"

ROLES: dict[str, Role] = {
    "producer": Role(
        doc="services enqueuing with the Python client: the run-time routes, "
        "the direct path into queues, results (handle.result()), looking up "
        "and cancelling jobs (app.lookup, app.cancel)",
        scripts=("admit-7.lua", "cancel-1.lua", "tally-1.lua"),
        commands=_READS,
        keys=(_QUEUES,),
        read_keys=("cv:routes",),
    ),
    "gate": Role(
        doc="the HTTP gate: reads the job type registry, and queues for job "
        "lookups (GET /v1/jobs/{id}); writes only the counts of jobs it sent "
        "(tallies)",
        scripts=("tally-1.lua",),
        commands=("hgetall", "get", "hget", "hvals", "zrange", "lrange"),
        keys=(_TALLIES,),
        read_keys=("cv:registry", _QUEUES),
    ),
    "relay": Role(
        doc="relays: admit into queues, fences and open-job counts, their "
        "status, the store's generation; read their controls",
        scripts=("admit-7.lua",),
        commands=(
            *("info", "get", "set", "llen", "rpush", "ltrim", "expire"),
            *("hgetall", "hmget", "hget", "hset", "hdel", "hincrby"),
            *("watch", "unwatch", "multi", "exec"),
        ),
        keys=(_QUEUES, "cv:relay:status", "cv:generation"),
        read_keys=("cv:relay:control",),
    ),
    "worker": Role(
        doc="workers: lease, settle, retry and schedule jobs, publish the "
        "registry at start, enqueue follow-up jobs (as a producer)",
        scripts=(
            *("fetch-6.lua", "settle-11.lua", "heartbeat-2.lua", "release-5.lua"),
            *("reap-5.lua", "periodic-3.lua", "purge_dead-3.lua"),
            *("admit-7.lua", "publish_registry-1.lua", "tally-1.lua"),
        ),
        commands=("time", "blpop", "zrangebyscore", "hgetall", "info", "zcard", "zmscore"),
        keys=(_QUEUES, "cv:registry"),
        read_keys=("cv:routes",),
    ),
    "operator": Role(
        doc="people and dashboards that look: queues, dead letters, relays, "
        "routes, control history; no change, no script",
        commands=_READS,
        read_keys=("cv:*", _HISTORIES),
    ),
    "admin": Role(
        doc="people who steer: everything `operator` reads, plus pause, "
        "resume, throttle, shadow, route, replay from Kafka, replay or purge "
        "dead letters, and cancel jobs",
        scripts=(
            *("control-2.lua", "replay_dead-4.lua", "purge_dead-3.lua", "admit-7.lua"),
            *("cancel-1.lua", "forget_dead-3.lua", "tally-1.lua"),
        ),
        commands=(*_READS, "time"),
        keys=("cv:*", _HISTORIES),
    ),
}


def setuser_lines(namespace: str = "", user_prefix: str = "conveyor-") -> list[str]:
    """One `ACL SETUSER` command per role, user names `<user_prefix><role>`."""
    return [
        f"ACL SETUSER {user_prefix}{name} {role.rules(namespace)}" for name, role in ROLES.items()
    ]
