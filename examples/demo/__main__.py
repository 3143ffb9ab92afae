"""`python -m examples.demo [--jobs N] [--keep-servers] [--redis-only]` from the checkout."""

from __future__ import annotations

import argparse
import sys

from conveyor.errors import ConveyorError
from examples.demo.pipeline import run


def main() -> int:
    """Parses the options and runs the demo."""
    parser = argparse.ArgumentParser(prog="python -m examples.demo", description=__doc__)
    parser.add_argument(
        "--jobs", type=int, default=20_000, help="how many jobs to send (default 20,000)"
    )
    parser.add_argument(
        "--keep-servers", action="store_true", help="leave Kafka and Redis running afterwards"
    )
    parser.add_argument(
        "--redis-only",
        action="store_true",
        help="Redis alone (CONVEYOR_REDIS_ONLY=on): no Kafka, gate or relay",
    )
    args = parser.parse_args()
    try:
        return run(jobs=args.jobs, keep_servers=args.keep_servers, redis_only=args.redis_only)
    except ConveyorError as err:
        print(f"demo: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
