"""`conveyor config` prints what is in force with every secret masked."""

from __future__ import annotations

import pytest

from conveyor.cli import main


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
