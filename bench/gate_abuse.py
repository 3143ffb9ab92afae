"""Hostile clients against the gate: at least 100,000 generated bad requests.

Run: `make bench-abuse` (or `.venv/bin/python bench/gate_abuse.py`).

A `conveyor gate` process (its own, so its memory can be read) takes
requests from a seeded generator: mutated bodies (bytes flipped, cut,
repeated, inserted), arguments nested up to 200,000 deep, numbers no float
holds, fields of the wrong type or out of range, batches empty, oversize or
spoiled by one job, bodies over the limit (announced and real), bytes that
are not UTF-8, broken HTTP framing, wrong methods and paths, and a share of
valid jobs. Alongside, slow clients trickle headers a byte at a time and
half-open ones announce a body and stop sending.

Pass: every request is answered (no connection dropped without an answer),
no 5xx but 503, every slow or half-open client is closed near its deadline,
and the gate's memory stays bounded. Prints a table of answers by status and
kind and writes it to bench/results/gate_abuse.md. Bounded in requests
(`--requests`) and in time (`--max-seconds`). Loopback only.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_topics import delete_new_topics_at_exit
from conveyor import _core
from conveyor.devservers import DevServers

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "gate_abuse.md"
JOB_TYPE = "abuse.job"
#: The gate's deadlines for this run, short so slow clients show quickly.
HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 2.0

Request = tuple[str, bytes]  # (kind, raw HTTP request)


def http(path: str, body: bytes, *, method: str = "POST", extra: str = "") -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nhost: gate\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


def valid_job(rng: random.Random) -> dict[str, Any]:
    job: dict[str, Any] = {
        "type": JOB_TYPE,
        "args": [rng.randrange(10**6), "x" * rng.randrange(50)],
    }
    if rng.random() < 0.3:
        job["kwargs"] = {"k": rng.random()}
    if rng.random() < 0.2:
        job["delay"] = rng.uniform(0, 60)
    return job


def nested(depth: int, rng: random.Random) -> str:
    if rng.random() < 0.5:
        return "[" * depth + "1" + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 5)):
        if not out:
            break
        at = rng.randrange(len(out))
        op = rng.randrange(5)
        if op == 0:
            out[at] = rng.randrange(256)
        elif op == 1:
            del out[at : at + rng.randint(1, 8)]
        elif op == 2:
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3:
            out[at:at] = out[at : at + rng.randint(1, 16)] * rng.randint(2, 50)
        else:
            del out[at:]
    return bytes(out)


def valid(rng: random.Random) -> bytes:
    return http("/v1/jobs", json.dumps(valid_job(rng)).encode())


def mutated(rng: random.Random) -> bytes:
    return http("/v1/jobs", mutate(json.dumps(valid_job(rng)).encode(), rng))


def deep(rng: random.Random) -> bytes:
    depth = rng.choice([64, 65, 100, 1000, 10_000, 200_000])
    return http("/v1/jobs", f'{{"type":"{JOB_TYPE}","args":[{nested(depth, rng)}]}}'.encode())


def numbers(rng: random.Random) -> bytes:
    number = rng.choice(["1e99999", "-1e400", "NaN", "Infinity", "1" + "0" * 400, "-0", "1e-99999"])
    return http("/v1/jobs", f'{{"type":"{JOB_TYPE}","args":[{number}]}}'.encode())


BAD_FIELDS: list[tuple[str, Any]] = [
    ("type", 42),
    ("type", None),
    ("type", "no such type"),
    ("type", "x" * 300),
    ("args", {"a": 1}),
    ("args", "text"),
    ("kwargs", [1, 2]),
    ("partition", -1),
    ("partition", 2**40),
    ("partition", 10_000),
    ("delay", 1e308),
    ("delay", -5),
    ("delay", "soon"),
    ("run_at", 1e308),
    ("run_at", -1),
    ("dedup_key", "k" * 100_000),
    ("trace_context", "not a traceparent"),
    ("surprise", True),
]


def shape(rng: random.Random) -> bytes:
    job = valid_job(rng)
    field, value = rng.choice(BAD_FIELDS)
    job[field] = value
    return http("/v1/jobs", json.dumps(job).encode())


def batch(rng: random.Random) -> bytes:
    spoiled = [valid_job(rng) for _ in range(20)]
    spoiled[rng.randrange(20)]["args"] = [float("inf")] if rng.random() < 0.5 else "x"
    jobs = rng.choice([[], [valid_job(rng) for _ in range(1001)], spoiled, {"not": "a list"}])
    return http("/v1/jobs/batch", json.dumps({"jobs": jobs}, allow_nan=True).encode())


def oversize(rng: random.Random) -> bytes:
    if rng.random() < 0.5:  # announced, never sent: refused from the header
        return (
            "POST /v1/jobs HTTP/1.1\r\nhost: gate\r\ncontent-type: application/json\r\n"
            f"content-length: {1 << 40}\r\n\r\n"
        ).encode()
    payload = "x" * ((1 << 20) + 10_000)  # over the default 1 MiB payload limit
    return http("/v1/jobs", f'{{"type":"{JOB_TYPE}","args":["{payload}"]}}'.encode())


def encoding(rng: random.Random) -> bytes:
    body = rng.choice(
        [
            b'{"type":"abuse.job","args":["\xff\xfe"]}',
            b"\xef\xbb\xbf" + json.dumps(valid_job(rng)).encode(),
            json.dumps(valid_job(rng)).encode("utf-16"),
            b'{"type":"abuse.job","args":["\x00"]}',
            bytes(rng.randrange(256) for _ in range(rng.randint(1, 200))),
        ]
    )
    return http("/v1/jobs", body)


def framing(rng: random.Random) -> bytes:
    body = json.dumps(valid_job(rng)).encode()
    chunked = (
        b"POST /v1/jobs HTTP/1.1\r\nhost: gate\r\ntransfer-encoding: chunked\r\n\r\n"
        + f"{len(body):x}\r\n".encode()
        + body
        + b"\r\n0\r\n\r\n"
    )
    return rng.choice(
        [
            http("/v1/jobs", body, method="GET"),
            http("/v1/nothing", body),
            http("/v1/jobs", body, extra="content-type: text/plain\r\n"),
            chunked,
            b"NOT HTTP AT ALL\r\n\r\n",
        ]
    )


#: Each kind of request with its share of the run.
KINDS: list[tuple[Callable[[random.Random], bytes], float]] = [
    (valid, 0.06),
    (mutated, 0.34),
    (deep, 0.05),
    (numbers, 0.08),
    (shape, 0.15),
    (batch, 0.10),
    (oversize, 0.02),
    (encoding, 0.10),
    (framing, 0.10),
]


def generate(rng: random.Random) -> Request:
    """One request of a random kind."""
    (make,) = rng.choices([k for k, _ in KINDS], weights=[w for _, w in KINDS])
    return make.__name__, make(rng)


class Connection:
    """One client connection that sends a raw request and reads one answer."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.sock: socket.socket | None = None
        self.buffer = b""

    def _open(self) -> socket.socket:
        if self.sock is None:
            self.sock = socket.create_connection(self.address, timeout=30)
            self.buffer = b""
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None

    def exchange(self, raw: bytes) -> int | None:
        """The status of the answer to `raw`, or None if the connection was
        closed or reset without one."""
        sock = self._open()
        # The gate may answer (413) and close before reading all of it.
        with contextlib.suppress(OSError):
            sock.sendall(raw)
        try:
            status, close = self._read_answer(sock)
        except OSError:
            status, close = None, True
        if close or status is None:
            self.close()
        return status

    def _read_answer(self, sock: socket.socket) -> tuple[int | None, bool]:
        while b"\r\n\r\n" not in self.buffer:
            chunk = sock.recv(65536)
            if not chunk:
                return None, True
            self.buffer += chunk
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
        }
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        self.buffer = rest[length:]
        # After a refusal the gate may close (it did not read the body), and
        # a request it could not frame leaves the connection unusable.
        return status, headers.get("connection", "").lower() == "close" or status >= 400


def slow_client(address: tuple[str, int], half_open: bool) -> float:
    """Seconds until the gate closed a client that trickles its headers (or
    announces a body and stops sending); -1 if it was never closed."""
    sock = socket.create_connection(address, timeout=30)
    began = time.monotonic()
    try:
        if half_open:
            sock.sendall(b"POST /v1/jobs HTTP/1.1\r\nhost: g\r\ncontent-length: 500\r\n\r\n{")
            while sock.recv(65536):
                pass
        else:
            sock.settimeout(0.5)
            for byte in b"POST /v1/jobs HTTP/1.1\r\nhost: gate\r\n" + b"x-pad: " + b"a" * 200:
                sock.sendall(bytes([byte]))
                try:
                    if sock.recv(65536) == b"":
                        break
                except TimeoutError:
                    continue
            else:
                return -1.0
        return time.monotonic() - began
    except OSError:
        return time.monotonic() - began
    finally:
        sock.close()


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+)", status)
    return int(match.group(1)) if match else 0


@dataclass
class Tally:
    """What the run saw, filled by the client threads."""

    counts: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    slow: list[tuple[str, float]] = field(default_factory=list)
    memory: list[int] = field(default_factory=list)
    sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def start_gate(servers: DevServers) -> tuple[subprocess.Popen[str], tuple[str, int]]:
    """A `conveyor gate` process for a fresh topic, and its address."""
    queue = f"bench-abuse-{uuid.uuid4().hex[:6]}"
    _core.kafka_create_topic(servers.kafka.bootstrap, f"conveyor.{queue}", 3)
    command = [sys.executable, "-m", "conveyor", "gate", "--bind", "127.0.0.1:0"]
    command += ["--route", f"{JOB_TYPE}={queue}", "--no-registry"]
    command += ["--header-timeout", str(HEADER_TIMEOUT_S), "--body-timeout", str(BODY_TIMEOUT_S)]
    gate = subprocess.Popen(
        command,
        env={**os.environ, "CONVEYOR_KAFKA_BOOTSTRAP": servers.kafka.bootstrap},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert gate.stdout is not None
    line = gate.stdout.readline()
    found = re.search(r"http://([\d.]+):(\d+)", line)
    if not found:
        gate.kill()
        raise SystemExit(f"the gate did not start: {line!r}")
    return gate, (found.group(1), int(found.group(2)))


def sender(args: argparse.Namespace, address: tuple[str, int], seed: int, tally: Tally) -> None:
    """Sends generated requests until the run has sent `--requests`."""
    rng = random.Random(seed)
    conn = Connection(address)
    local: collections.Counter[tuple[str, str]] = collections.Counter()
    deadline = time.monotonic() + args.max_seconds
    while time.monotonic() < deadline:
        with tally.lock:
            if tally.sent >= args.requests:
                break
            tally.sent += 1
        kind, raw = generate(rng)
        status = conn.exchange(raw)
        local[(kind, "dropped" if status is None else str(status))] += 1
    conn.close()
    with tally.lock:
        tally.counts.update(local)


def slow(args: argparse.Namespace, address: tuple[str, int], kind: str, tally: Tally) -> None:
    """Runs `--slow-rounds` slow or half-open clients one after another."""
    for _ in range(args.slow_rounds):
        took = slow_client(address, half_open=kind == "half-open")
        with tally.lock:
            tally.slow.append((kind, took))


def run(args: argparse.Namespace) -> int:
    servers = DevServers.default()
    servers.up()
    delete_new_topics_at_exit(servers.kafka.bootstrap)
    gate, address = start_gate(servers)
    tally = Tally(memory=[rss_kib(gate.pid)])
    threads = [
        threading.Thread(target=sender, args=(args, address, args.seed + i, tally))
        for i in range(args.threads)
    ]
    threads += [
        threading.Thread(target=slow, args=(args, address, kind, tally))
        for kind in ("slow headers", "half-open")
        for _ in range(4)
    ]
    began = last = time.monotonic()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(0.5)
        tally.memory.append(rss_kib(gate.pid))
        if time.monotonic() - last >= 5:
            last = time.monotonic()
            print(f"  {tally.sent:,} requests sent, gate RSS {tally.memory[-1] / 1024:.1f} MiB")
    took = time.monotonic() - began
    alive = gate.poll() is None
    gate.terminate()
    gate.wait(timeout=30)
    return report(args, tally, took, alive)


def report(args: argparse.Namespace, tally: Tally, took: float, alive: bool) -> int:
    """Prints and writes the table and the verdicts; 0 if every one passed."""
    counts, slow_results, memory = tally.counts, tally.slow, tally.memory
    memory_start = memory[0]
    total = sum(counts.values())
    statuses = sorted({s for _, s in counts})
    kinds = sorted({k for k, _ in counts})
    lines = [
        f"{total:,} requests in {took:.0f} s ({total / took:,.0f}/s), seed {args.seed}, "
        f"{args.threads} client threads; gate deadlines {HEADER_TIMEOUT_S} s (headers), "
        f"{BODY_TIMEOUT_S} s (body)",
        "",
        "| kind | " + " | ".join(statuses) + " | total |",
        "|---|" + "---:|" * (len(statuses) + 1),
    ]
    for kind in kinds:
        row = [counts[(kind, s)] for s in statuses]
        lines.append(f"| {kind} | " + " | ".join(f"{n:,}" for n in row) + f" | {sum(row):,} |")
    by_status = collections.Counter({s: sum(counts[(k, s)] for k in kinds) for s in statuses})
    lines.append(
        "| **all** | "
        + " | ".join(f"**{by_status[s]:,}**" for s in statuses)
        + f" | **{total:,}** |"
    )
    lines.append("")
    for kind in ("slow headers", "half-open"):
        times = [t for k, t in slow_results if k == kind]
        never = sum(1 for t in times if t < 0)
        if times:
            closed = [t for t in times if t >= 0]
            lines.append(
                f"{kind}: {len(times)} clients, closed by the gate after "
                f"{min(closed, default=0):.1f}-{max(closed, default=0):.1f} s, {never} never closed"
            )
    lines.append(
        f"gate memory (RSS): {memory_start / 1024:.1f} MiB at start, peak "
        f"{max(memory) / 1024:.1f} MiB, {memory[-1] / 1024:.1f} MiB at the end"
    )
    bad_5xx = {s: n for s, n in by_status.items() if s.startswith("5") and s != "503"}
    dropped = by_status.get("dropped", 0)
    slow_limit = max(HEADER_TIMEOUT_S, BODY_TIMEOUT_S) + 3
    slow_late = [t for _, t in slow_results if t < 0 or t > slow_limit]
    verdicts = [
        (total >= args.requests, f"at least {args.requests:,} requests sent"),
        (not bad_5xx, f"no 5xx but 503 ({bad_5xx or 'none'})"),
        (dropped == 0, f"no connection dropped without an answer ({dropped})"),
        (
            not slow_late,
            f"every slow client closed within {slow_limit:.0f} s ({len(slow_late)} late)",
        ),
        (max(memory) < memory_start + 256 * 1024, "gate memory within 256 MiB of its start"),
        (alive, "the gate process survived"),
    ]
    lines.append("")
    lines += [f"- {'PASS' if ok else 'FAIL'}: {text}" for ok, text in verdicts]
    text = "\n".join(lines)
    print("\n" + text)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(f"# Gate under hostile clients (`make bench-abuse`)\n\n{text}\n")
    return 0 if all(ok for ok, _ in verdicts) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--requests", type=int, default=100_000, help="bad and good requests to send"
    )
    parser.add_argument("--threads", type=int, default=8, help="client threads")
    parser.add_argument("--slow-rounds", type=int, default=5, help="slow clients per slow thread")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=600.0, help="stop after this long")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
