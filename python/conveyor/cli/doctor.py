"""`conveyor doctor`: what a deployment needs, checked one by one, each
problem with the fix for it. Checks never change anything."""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from conveyor import _core
from conveyor.cli.config import masked_url
from conveyor.errors import ConveyorError
from conveyor.settings import Settings

#: Redis 7 runs the scripts' `#!lua` flags (refusing writes when full,
#: allowing the drain); older servers refuse the scripts.
REDIS_MIN = (7, 0)
#: Kafka 4 runs in KRaft mode on Java 17 (`conveyor dev up` only).
JAVA_NOTE = "needed only to run the local Kafka (conveyor dev up)"


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `doctor`."""
    doctor = commands.add_parser(
        "doctor",
        help="check Java, servers, versions, configuration and rights; print the fix for "
        "each problem (exit 1 if any)",
    )
    doctor.set_defaults(run=lambda args: report(diagnose()))


@dataclass(frozen=True)
class Finding:
    """One check's outcome: `ok`, `warn` (works, but look) or `fail`."""

    check: str
    status: str
    detail: str
    fix: str = ""


def diagnose() -> list[Finding]:
    """Every check, in order, with the settings from the environment."""
    findings = [_python()]
    try:
        settings = Settings.from_env()
    except ConveyorError as err:
        findings.append(Finding("configuration", "fail", str(err), "fix the variable named above"))
        return findings
    kafka = "no Kafka (Redis only)" if settings.redis_only else f"Kafka {settings.kafka_bootstrap}"
    shown = (
        f"namespace {settings.namespace or '(none)'}, queues {', '.join(settings.queues)}, "
        f"{kafka}, Redis {masked_url(settings.redis_url)}"
    )
    findings.append(Finding("configuration", "ok", shown))
    if not settings.redis_only:
        findings.append(_java())
        findings += list(_kafka(settings))
    findings += list(_redis(settings))
    return findings


def _python() -> Finding:
    version = ".".join(map(str, sys.version_info[:3]))
    return Finding("python", "ok", f"Python {version}, conveyor {_version()}")


def _version() -> str:
    from conveyor import __version__

    return __version__


def _java() -> Finding:
    from conveyor.devservers.kafka import require_java

    try:
        java = require_java()
    except ConveyorError as err:
        return Finding("java", "warn", f"{err} ({JAVA_NOTE})", str(err).split(". ", 1)[-1])
    return Finding("java", "ok", f"{java}; {JAVA_NOTE}")


def _kafka(settings: Settings) -> Iterator[Finding]:
    bootstrap = settings.kafka_bootstrap
    try:
        cluster_id, brokers, topics = _core.kafka_cluster_info(
            bootstrap, 5.0, list(settings.kafka_properties)
        )
    except ConveyorError as err:
        yield Finding("kafka", "fail", f"{bootstrap}: {err}", _unreachable(bootstrap, "Kafka"))
        return
    yield Finding("kafka", "ok", f"{bootstrap}: {len(brokers)} broker(s), cluster {cluster_id}")
    missing = [q for q in settings.queues if settings.topic_for(q) not in topics]
    if missing:
        yield Finding(
            "topics",
            "fail",
            f"no topic for queue(s) {', '.join(missing)}",
            f"conveyor topics create {' '.join(missing)}",
        )
    else:
        yield Finding("topics", "ok", f"a topic for each of {len(settings.queues)} queue(s)")


def _redis(settings: Settings) -> Iterator[Finding]:
    urls = dict.fromkeys([settings.redis_url, *(u for _, u in settings.queue_redis)])
    for url in urls:
        where = masked_url(url)
        try:
            store = _core.RedisStore(url, timeout_s=5.0)
            server = dict(store.server_info())
        except ConveyorError as err:
            yield Finding("redis", "fail", f"{where}: {err}", _unreachable(url, "Redis"))
            continue
        version = server.get("redis_version", "?")
        if _version_tuple(version) < REDIS_MIN:
            yield Finding(
                "redis",
                "fail",
                f"{where}: Redis {version}",
                "upgrade to Redis 7 or newer (Conveyor's scripts use Redis 7's flags)",
            )
        else:
            yield Finding("redis", "ok", f"{where}: Redis {version}")
        yield from _redis_rights(store, settings, where)


def _redis_rights(store: _core.RedisStore, settings: Settings, where: str) -> Iterator[Finding]:
    try:
        memory = dict(store.server_info("memory"))
        store.counts(settings.namespace, settings.queues[0])
    except ConveyorError as err:
        fix = "give this account its role's rights: conveyor acl prints them"
        yield Finding("redis rights", "fail", f"{where}: {err}", fix)
        return
    policy = memory.get("maxmemory_policy", "?")
    if policy != "noeviction":
        yield Finding(
            "redis memory",
            "fail",
            f"{where}: maxmemory-policy is {policy}: Redis may evict queued jobs",
            "CONFIG SET maxmemory-policy noeviction (and in redis.conf); the relay "
            "backs off before maxmemory instead",
        )
        return
    limit = int(memory.get("maxmemory", "0") or 0)
    if limit == 0:
        yield Finding(
            "redis memory",
            "warn",
            f"{where}: no maxmemory: the relay's memory guard is off",
            "set maxmemory so the relay stops writing before Redis runs out",
        )
    else:
        yield Finding("redis memory", "ok", f"{where}: noeviction, maxmemory {limit:,} bytes")


def _unreachable(address: str, what: str) -> str:
    """The fix for a server that did not answer: start it, or free its port."""
    host, port = _host_port(address)
    if host is None or port is None:
        return f"check the address of {what}"
    if not _loopback(host):
        return f"check that {what} runs at {host}:{port} and this machine may reach it"
    if _listening(host, port):
        return (
            f"port {port} answers, but not as {what}: another process holds it; "
            f"stop it, or point Conveyor at {what}'s real address"
        )
    return f"nothing listens on {host}:{port}: start the local servers with conveyor dev up"


def _host_port(address: str) -> tuple[str | None, int | None]:
    if "://" in address:
        parts = urlsplit(address)
        try:
            return parts.hostname, parts.port or 6379
        except ValueError:
            return None, None
    first = address.split(",", maxsplit=1)[0].strip()
    host, _, port = first.rpartition(":")
    return (host or None), (int(port) if port.isdigit() else None)


def _loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = [int(p) for p in text.split(".")[:2] if p.isdigit()]
    return tuple(parts) if parts else (0,)


def report(findings: list[Finding], out: Callable[[str], None] = print) -> int:
    """Prints each finding and its fix; 1 if any check failed, else 0."""
    for f in findings:
        out(f"{f.status:>4}  {f.check:<13} {f.detail}")
        if f.fix and f.status != "ok":
            out(f"      {'':<13} fix: {f.fix}")
    failed = sum(f.status == "fail" for f in findings)
    out(f"\n{failed} problem(s) found" if failed else "\nno problem found")
    return 1 if failed else 0
