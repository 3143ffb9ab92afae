"""Run inside a fresh virtualenv holding only the built wheel (no repository
on the path, no Rust toolchain): jobs end to end through the real Kafka and
Redis, an async handler timing out, and the CLI reading the dead letter.
Prints one JSON line; `tests/test_wheel.py` runs it with each Python.

    python wheel_check.py KAFKA_BOOTSTRAP REDIS_URL NAMESPACE
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import conveyor
from conveyor import _core


def main() -> None:
    bootstrap, redis_url, namespace = sys.argv[1:4]
    settings = conveyor.Settings(
        kafka_bootstrap=bootstrap, redis_url=redis_url, namespace=namespace
    )
    app = conveyor.Conveyor(settings)
    sums: list[int] = []

    @app.job("wheel.add")
    def add(a: int, b: int) -> None:
        sums.append(a + b)

    @app.job("wheel.slow", max_attempts=1, timeout_s=0.2)
    async def slow() -> None:
        await asyncio.sleep(5)

    app.ensure_topics()
    relay = _core.Relay(
        bootstrap,
        redis_url,
        [(settings.topic_for("default"), "default")],
        namespace=namespace,
        group_id=f"wheel-{namespace}",
    )
    worker = conveyor.Worker(app, threads=2)
    worker.start()
    dead: list[str] = []
    try:
        add.enqueue_many([(i, 1) for i in range(20)])
        slow.enqueue()
        app.flush()
        store = _core.RedisStore(redis_url)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (len(sums) < 20 or not dead):
            dead = [e or "" for _, _, e in store.dead_letters(namespace, "default", 10)]
            time.sleep(0.1)
    finally:
        worker.stop(grace_s=5)
        relay.stop()
        app.close()
    cli = Path(sys.executable).with_name("conveyor")
    env = {
        **os.environ,
        "CONVEYOR_KAFKA_BOOTSTRAP": bootstrap,
        "CONVEYOR_REDIS_URL": redis_url,
        "CONVEYOR_NAMESPACE": namespace,
    }
    listed = subprocess.run(
        [str(cli), "dead", "list", "default"], env=env, capture_output=True, text=True, check=False
    )
    print(
        json.dumps(
            {
                "python": list(sys.version_info[:2]),
                "extension": Path(_core.__file__).name,
                "sums": sorted(sums),
                "dead_errors": [json.loads(e).get("type") for e in dead if e],
                "cli_rc": listed.returncode,
                "cli_out": listed.stdout + listed.stderr,
            }
        )
    )


if __name__ == "__main__":
    main()
