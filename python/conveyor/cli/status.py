"""`conveyor status`: the pipeline at a glance, for a tired operator: each
queue's jobs by state and what ended, the relays (live, lag, guards), and a
list of what needs looking at (exit 1 when it is not empty). What it shows
is gathered by `conveyor.overview`, which the dashboard serves too."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conveyor.overview import Overview


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `status`."""
    status = commands.add_parser(
        "status", help="queues, relays and what needs attention, at a glance (exit 1 if any)"
    )
    status.add_argument("queues", nargs="*", help="queues (default: configured and registry)")
    status.set_defaults(run=_status)


def _status(args: argparse.Namespace) -> int:
    from conveyor import overview
    from conveyor.lookup import registry_queues
    from conveyor.settings import Settings

    settings = Settings.from_env()
    names = args.queues or sorted({*settings.queues, *registry_queues(settings)})
    view = overview.gather(settings, names)
    _print(view)
    return 1 if view.attention else 0


def _print(view: Overview) -> None:
    print("queues")
    header = ("queue", "queued", "scheduled", "leases", "dead", "done", "retried", "cancelled")
    print("  " + "  ".join(f"{h:>10}" for h in header))
    for q in view.queues:
        row = [q.name] + [str(q.depth[k]) for k in ("queued", "scheduled", "leases", "dead")]
        row += [str(q.ended[k]) for k in ("done", "retried", "cancelled")]
        print("  " + "  ".join(f"{c:>10}" for c in row))

    from conveyor.tallies import HOPS

    print("\njobs per hop, enqueued in the last hour")
    print("  " + "  ".join(f"{h:>10}" for h in ("queue", *HOPS)))
    for hops in view.hops:
        row = [hops.queue] + [str(hops.totals.get(h, 0)) for h in HOPS]
        line = "  " + "  ".join(f"{c:>10}" for c in row)
        print(line + (f"  (not compared: {hops.unchecked})" if hops.unchecked else ""))

    for c in view.canaries:
        print(
            f"\ncanaries {c.queue}: {len(c.arrived)} of {c.partitions} partitions, last "
            f"arrived {c.last_arrived_s:.1f}s ago, slowest {c.slowest_s * 1000:.0f} ms end to end"
        )

    print(f"\nrelays: {len(view.relays)} live")
    for s in view.relays:
        lag = sum(p["lag"] for p in s["partitions"])
        guards = []
        if s["memory_guarded"]:
            guards.append("memory guard ON")
        if s["depth_guarded"]:
            guards.append(f"depth guard on {s['depth_guarded']} queues")
        controls = s["controls"]
        guards += [f"paused {t}" for t in controls["paused"]]
        guards += [f"throttled {t} to {r:g}/s" for t, r in controls["rates"]]
        print(
            f"  {s['id']}: {len(s['partitions'])} partitions, lag {lag}, "
            f"{s['relayed']} relayed, {s['redis_errors']} Redis errors"
            + (f"; {', '.join(guards)}" if guards else "")
        )
    for topic, lag in sorted(view.lag_by_topic.items()):
        print(f"  lag {topic}: {lag}")
    if view.relays_gone:
        print(f"  ({view.relays_gone} relays reported earlier and stopped)")

    print("\nneeds attention" if view.attention else "\nnothing needs attention")
    for line in view.attention:
        print(f"  - {line}")
