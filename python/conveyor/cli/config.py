"""`config`: the effective configuration, from the environment, with every
secret masked: what an operator checks before asking why a component does
not connect, and can paste into a ticket. `acl`: the Redis ACL rules of each
component's role (`conveyor.acl`)."""

from __future__ import annotations

import argparse
import dataclasses
import os
from urllib.parse import urlsplit, urlunsplit

#: librdkafka properties whose values are secrets.
SECRET_PROPERTIES = frozenset(
    {
        "sasl.password",
        "ssl.key.password",
        "ssl.keystore.password",
        "ssl.key.pem",
        "sasl.oauthbearer.client.secret",
    }
)
MASK = "***"


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `config`."""
    config = commands.add_parser("config", help="print the effective configuration, secrets masked")
    config.set_defaults(run=_config)
    acl = commands.add_parser(
        "acl",
        help="Redis ACL rules per component (pipe into redis-cli; passwords are yours to add)",
    )
    acl.add_argument(
        "--user-prefix", default="conveyor-", help="account names are PREFIX<role> (conveyor-)"
    )
    acl.set_defaults(run=_acl)


def masked_url(url: str) -> str:
    """`url` with its password (if any) replaced by `***`; every host kept
    (a cluster URL lists several)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK  # not a URL we can read: show nothing of it
    if "@" not in parts.netloc:
        return url
    credentials, hosts = parts.netloc.rsplit("@", 1)
    user, has_password, _ = credentials.partition(":")
    if not has_password:
        return url
    netloc = f"{user}:{MASK}@{hosts}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def effective() -> list[tuple[str, str]]:
    """`(name, value)` of every setting in force, secrets masked."""
    from conveyor.settings import Settings

    settings = Settings.from_env()
    rows: list[tuple[str, str]] = []
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if field.name == "redis_url":
            shown = masked_url(value)
        elif field.name == "queue_redis":
            shown = " ".join(f"{q}={masked_url(u)}" for q, u in value) or "(none)"
        elif field.name == "kafka_properties":
            shown = (
                " ".join(f"{k}={MASK if k in SECRET_PROPERTIES else v}" for k, v in value)
                or "(none)"
            )
        else:
            shown = str(value)
        rows.append((field.name, shown))
    rows.append(
        (
            "gate token (CONVEYOR_GATE_TOKEN)",
            "set" if os.environ.get("CONVEYOR_GATE_TOKEN") else "not set",
        )
    )
    rows.append(
        (
            "gate token file (CONVEYOR_GATE_TOKENS_FILE)",
            os.environ.get("CONVEYOR_GATE_TOKENS_FILE", "(none)"),
        )
    )
    return rows


def _config(args: argparse.Namespace) -> int:
    rows = effective()
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


def _acl(args: argparse.Namespace) -> int:
    import sys

    from conveyor.acl import ROLES, setuser_lines
    from conveyor.settings import Settings

    namespace = Settings.from_env().namespace
    lines = setuser_lines(namespace, args.user_prefix)
    for (name, role), line in zip(ROLES.items(), lines, strict=True):
        print(f"# {args.user_prefix}{name}: {role.doc}", file=sys.stderr)
        print(line)
    print(
        f"# then, per account: ACL SETUSER {args.user_prefix}<role> on >PASSWORD "
        "(applying the rules again keeps passwords)",
        file=sys.stderr,
    )
    return 0
