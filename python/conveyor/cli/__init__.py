"""The `conveyor` command line: one module per command group, each adding
its commands to the parser (`add_commands`) with their handlers.

| module | commands |
|---|---|
| `servers` | `dev`, `topics` |
| `gate` | `gate` |
| `relay` | `relay`, `relays` |
| `controls` | `throttle`, `pause`, `resume`, `shadow`, `route`, `controls` |
| `worker` | `worker`, `queues`, `job`, `dead` |
| `replay` | `replay` |
| `config` | `config`, `acl` |
| `doctor` | `doctor` |
| `status` | `status` |
| `dashboard` | `dashboard` |
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from conveyor.cli import (
    config,
    controls,
    dashboard,
    doctor,
    gate,
    relay,
    replay,
    servers,
    status,
    worker,
)
from conveyor.errors import ConveyorError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="conveyor", description="Conveyor: a durable job queue, Kafka in front of Redis."
    )
    from conveyor import __version__

    parser.add_argument("--version", action="version", version=f"conveyor {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in (
        *(servers, gate, relay, controls, worker, status, dashboard, replay, config),
        doctor,
    ):
        group.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `conveyor` command."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ConveyorError as err:
        print(f"conveyor: {err}", file=sys.stderr)
        if "NoPerm" in str(err):
            print(
                "conveyor: the Redis account of this command lacks that right; "
                "`conveyor acl` prints each role's (pause, route and the like need 'admin')",
                file=sys.stderr,
            )
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
