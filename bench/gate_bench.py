"""The gate against the same endpoint in Python (uvicorn + a minimal ASGI app).

Run: `make bench-gate` (or `.venv/bin/python bench/gate_bench.py`).
Needs `wrk` (apt-get install wrk) for the saturation rate and `oha`
(cargo install oha) for latency at fixed offered rates: load generators
that are not ours. Everything runs on this machine over loopback: the broker,
the server under test and the load generator share 2 cores, so read the
ratios, not the absolute numbers. Every load run is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from bench_topics import delete_new_topics_at_exit
from conveyor import _core
from conveyor.devservers import DevServers

BODY = json.dumps({"type": "notify.push", "args": [42, "You have 3 new messages"]})
HERE = Path(__file__).resolve().parent


def _wait_http(address: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(
                f"http://{address}/v1/jobs", data=BODY.encode(), method="POST"
            )
            with urllib.request.urlopen(req, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"server at {address} did not answer")


def wrk_rate(address: str, seconds: int, connections: int) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            f'wrk.method = "POST"\nwrk.body = {json.dumps(BODY)}\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "-s",
            script.name,
            f"http://{address}/v1/jobs",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    ).stdout
    os.unlink(script.name)
    if "Non-2xx" in out:
        raise SystemExit(f"non-2xx answers under load:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def oha_latency(address: str, rate: int, seconds: int) -> tuple[float, float, float, float]:
    """(p50 ms, p99 ms, success ratio, achieved req/s) offering `rate` requests/s."""
    out = subprocess.run(
        [
            "oha",
            "-z",
            f"{seconds}s",
            "-q",
            str(rate),
            "-c",
            "64",
            "-m",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            BODY,
            "--no-tui",
            "--output-format",
            "json",
            f"http://{address}/v1/jobs",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    ).stdout
    report = json.loads(out)
    pct = report["latencyPercentiles"]
    codes = report.get("statusCodeDistribution", {})
    ok = codes.get("200", 0) / max(1, sum(codes.values()))
    return pct["p50"] * 1000, pct["p99"] * 1000, ok, report["summary"]["requestsPerSec"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="length of each load run")
    parser.add_argument("--rates", default="2000,10000", help="fixed offered rates, req/s")
    args = parser.parse_args()
    for tool in ("wrk", "oha"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed: apt-get install wrk / cargo install oha")
    servers = DevServers.default()
    servers.up()
    delete_new_topics_at_exit(servers.kafka.bootstrap)
    bootstrap = servers.kafka.bootstrap
    topic = f"conveyor.bench-gate-{uuid.uuid4().hex[:6]}"
    _core.kafka_create_topic(bootstrap, topic, 3)

    gate = _core.Gate(
        "127.0.0.1:0",
        bootstrap,
        topic_prefix="conveyor.",
        routes={"notify.push": topic.removeprefix("conveyor.")},
    )
    env = {
        **os.environ,
        "CONVEYOR_KAFKA_BOOTSTRAP": bootstrap,
        "BENCH_TOPIC": topic,
        "PYTHONPATH": str(HERE),
    }
    asgi = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "asgi_gate:app",
            "--host",
            "127.0.0.1",
            "--port",
            "18099",
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=env,
        cwd=HERE,
    )
    rates = [int(r) for r in args.rates.split(",")]
    rows = []
    try:
        targets = {
            "Conveyor gate (Rust, axum)": gate.address,
            "Python ASGI (uvicorn), same producer": "127.0.0.1:18099",
        }
        for name, address in targets.items():
            _wait_http(address)
            print(f"measuring {name} ...", flush=True)
            rate = wrk_rate(address, args.seconds, 64)
            lat = [oha_latency(address, r, args.seconds) for r in rates]
            rows.append((name, rate, lat))
    finally:
        asgi.terminate()
        asgi.wait(10)
        gate.stop()
    print(
        f"\nPOST /v1/jobs, one job each, acknowledged by Kafka (leader) before the answer; "
        f"{args.seconds}s per run, 2 cores shared by broker, server and load generator"
    )
    head = (
        "| server | max req/s (wrk, 64 conns) | "
        + " | ".join(f"p50 / p99 ms at {r:,}/s offered (achieved), oha" for r in rates)
        + " |"
    )
    print(head)
    print("|---|---:|" + "---:|" * len(rates))
    for name, rate, lat in rows:
        cells = " | ".join(
            f"{p50:.2f} / {p99:.2f} ({done:,.0f}/s" + ("" if ok == 1 else f", {ok:.0%} ok") + ")"
            for p50, p99, ok, done in lat
        )
        print(f"| {name} | {rate:,.0f} | {cells} |")
    print(f"\nratio of max rates: {rows[0][1] / rows[1][1]:.1f}x")


if __name__ == "__main__":
    main()
