"""Applying `conveyor acl` to a test Redis the way docs/security.md says:
the printed rules piped into redis-cli, then each account switched on with
a password."""

from __future__ import annotations

import subprocess

from conveyor.acl import ROLES
from tests.helpers.cli import conveyor as run_cli

PASSWORD = "acl-test-password"


def apply_roles(
    port: int, namespace: str, tls: list[str] | None = None, query: str = ""
) -> dict[str, str]:
    """Creates the `<namespace>-<role>` accounts on the Redis at `port`
    (`tls`: redis-cli's TLS options); role -> URL of its account (`rediss`
    with `query` appended when `tls`)."""
    prefix = f"{namespace}-"
    printed = run_cli("acl", "--user-prefix", prefix, env={"CONVEYOR_NAMESPACE": namespace})
    assert printed.returncode == 0, printed.stderr
    enable = "".join(f"ACL SETUSER {prefix}{role} on >{PASSWORD}\n" for role in ROLES)
    applied = subprocess.run(
        ["redis-cli", *(tls or []), "-p", str(port)],
        input=printed.stdout + enable,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert set(applied.stdout.split()) == {"OK"}, applied.stdout + applied.stderr
    scheme = "rediss" if tls else "redis"
    return {
        role: f"{scheme}://{prefix}{role}:{PASSWORD}@127.0.0.1:{port}/0{query}" for role in ROLES
    }


def drop_roles(port: int, namespace: str, tls: list[str] | None = None) -> None:
    """Deletes the accounts `apply_roles` made."""
    users = " ".join(f"{namespace}-{role}" for role in ROLES)
    subprocess.run(
        ["redis-cli", *(tls or []), "-p", str(port)],
        input=f"ACL DELUSER {users}\n",
        text=True,
        check=True,
        capture_output=True,
        timeout=30,
    )
