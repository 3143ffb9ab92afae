"""`conveyor dashboard`: serves the web dashboard (`conveyor.dashboard`)."""

from __future__ import annotations

import argparse

#: Where the token is read from; without it, one is made for this run.
TOKEN_ENV = "CONVEYOR_DASHBOARD_TOKEN"


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `dashboard`."""
    dashboard = commands.add_parser(
        "dashboard", help="serve the web dashboard (token from CONVEYOR_DASHBOARD_TOKEN)"
    )
    dashboard.add_argument("queues", nargs="*", help="queues (default: configured and registry)")
    dashboard.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    dashboard.add_argument("--port", type=int, default=8300, help="port (default 8300)")
    dashboard.add_argument(
        "--read-only", action="store_true", help="show, but refuse replay, delete and steering"
    )
    dashboard.add_argument(
        "--insecure",
        action="store_true",
        help="serve an address other than loopback over plain HTTP (put a TLS proxy in front: "
        "anyone on the path reads the token and jobs)",
    )
    dashboard.set_defaults(run=_dashboard)


def _dashboard(args: argparse.Namespace) -> int:
    import os
    import secrets
    import sys

    from conveyor.cli.stopping import stop_on_signals
    from conveyor.dashboard import Dashboard
    from conveyor.settings import Settings

    token = os.environ.get(TOKEN_ENV, "")
    made = not token
    if made:
        # Printed once to the terminal that started it, as Jupyter does; a
        # deployment sets its own in the environment and it is never shown.
        token = secrets.token_urlsafe(24)
    stop = stop_on_signals()
    dashboard = Dashboard(
        Settings.from_env(),
        token,
        address=(args.host, args.port),
        queues=args.queues or None,
        read_only=args.read_only,
        insecure=args.insecure,
    )
    dashboard.start()
    mode = " (read-only)" if args.read_only else ""
    where = f"http://{dashboard.address}/"
    if made:
        print(f"dashboard{mode}: open {where}#token={token}", file=sys.stderr, flush=True)
    else:
        print(f"dashboard{mode}: open {where}#token=<{TOKEN_ENV}>", file=sys.stderr, flush=True)
    stop.wait()
    dashboard.stop()
    return 0
