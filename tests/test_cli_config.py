"""`conveyor config` prints what is in force with every secret masked; no
secret given in the environment shows in an error, `--help` or a running
component's process title."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.cli import main
from tests.helpers.cli import conveyor as conveyor_cli


def test_the_effective_configuration_shows_no_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {
        "CONVEYOR_REDIS_URL": "rediss://app:redis-pw-123@10.0.0.5:6380/0?ca_file=/etc/ca.pem",
        "CONVEYOR_QUEUE_REDIS": "billing=redis+cluster://:cluster-pw-456@a:1,b:2",
        "CONVEYOR_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "CONVEYOR_KAFKA_SASL_USERNAME": "svc",
        "CONVEYOR_KAFKA_SASL_PASSWORD": "kafka-pw-789",
        "CONVEYOR_GATE_TOKEN": "gate-token-000",
        "CONVEYOR_NAMESPACE": "prod",
    }
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    for secret in ("redis-pw-123", "cluster-pw-456", "kafka-pw-789", "gate-token-000"):
        assert secret not in out
    assert "rediss://app:***@10.0.0.5:6380/0?ca_file=/etc/ca.pem" in out
    assert "billing=redis+cluster://:***@a:1,b:2" in out
    assert "sasl.password=***" in out
    assert "sasl.username=svc" in out
    assert "prod" in out
    token_line = next(
        x for x in out.splitlines() if x.startswith("gate token (CONVEYOR_GATE_TOKEN)")
    )
    assert token_line.endswith(" set"), "says it is set, never what it is"
    assert "not set" not in token_line


SECRETS = {
    "CONVEYOR_REDIS_URL": "redis://app:redis-pw-123@127.0.0.1:1/0",
    "CONVEYOR_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "CONVEYOR_KAFKA_SASL_USERNAME": "svc",
    "CONVEYOR_KAFKA_SASL_PASSWORD": "kafka-pw-789",
    "CONVEYOR_KAFKA_BOOTSTRAP": "127.0.0.1:1",
    "CONVEYOR_GATE_TOKEN": "gate-token-000",
}


def _no_secret(text: str) -> None:
    for secret in ("redis-pw-123", "kafka-pw-789", "gate-token-000"):
        assert secret not in text, text


def test_secrets_stay_out_of_errors_help_and_process_titles() -> None:
    # An error naming the Redis it could not reach names no password.
    failed = conveyor_cli("queues", env=SECRETS)
    assert failed.returncode == 2
    assert "Connection refused" in failed.stderr
    _no_secret(failed.stdout + failed.stderr)
    for command in ([], ["gate"], ["relay"], ["worker"], ["controls"], ["acl"], ["config"]):
        helped = conveyor_cli(*command, "--help", env=SECRETS)
        assert helped.returncode == 0, helped.stderr
        _no_secret(helped.stdout)
    # A running gate: its process title and command line carry no secret.
    gate = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "gate", "--bind", "127.0.0.1:0", "--no-registry"],
        env={**os.environ, **SECRETS},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert gate.stdout is not None
        first = gate.stdout.readline()
        assert "gate serving on" in first, first
        proc = Path(f"/proc/{gate.pid}")
        _no_secret((proc / "cmdline").read_bytes().decode(errors="replace"))
        _no_secret((proc / "comm").read_text())
    finally:
        gate.send_signal(signal.SIGTERM)
        rest, _ = gate.communicate(timeout=30)
    _no_secret(first + rest)
