"""The one conversion: every failure of the native module reaches Python as a
`conveyor.errors` class chosen by its stable code; bad settings are a
`ConfigError` naming the setting, never a bare `ValueError` or a panic."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from conveyor import _core, errors
from conveyor.errors import ConfigError
from tests.helpers.cli import conveyor as conveyor_cli

NOWHERE = "127.0.0.1:1"  # nothing is contacted: each call fails on its settings first
BAD_SECONDS = [-1.0, math.nan, math.inf, 1e300]


def test_every_native_error_code_has_its_own_python_class() -> None:
    classes = {
        cls.code: cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.ConveyorError)
    }
    for code in _core.ERROR_CODES:
        assert code in classes, f"no exception class for native code {code!r}"
        built = errors._from_core(code, "x")
        assert type(built) is classes[code]


@pytest.mark.parametrize("seconds", BAD_SECONDS)
def test_durations_out_of_range_are_config_errors_not_panics(seconds: float) -> None:
    calls: list[Callable[[], object]] = [
        lambda: _core.kafka_cluster_info(NOWHERE, timeout_s=seconds),
        lambda: _core.kafka_create_topic(NOWHERE, "t", 1, timeout_s=seconds),
        lambda: _core.KafkaProducer(NOWHERE, delivery_timeout_s=seconds),
        lambda: _core.RedisStore("redis://127.0.0.1:1", timeout_s=seconds),
        lambda: _core.Gate("127.0.0.1:0", NOWHERE, request_timeout_s=seconds),
        lambda: _core.Relay(NOWHERE, "redis://127.0.0.1:1", [("t", "q")], batch_wait_s=seconds),
        lambda: _core.WorkQueues("redis://127.0.0.1:1", "", [("q", 1)], lease_s=seconds),
    ]
    for call in calls:
        with pytest.raises(ConfigError, match="_s must be"):
            call()


def test_bad_settings_name_what_is_wrong() -> None:
    with pytest.raises(ConfigError, match='bind "localhost:8080"'):
        _core.Gate("localhost:8080", NOWHERE)
    with pytest.raises(ConfigError, match="acks must be"):
        _core.KafkaProducer(NOWHERE, acks="ALL")
    with pytest.raises(ConfigError, match="water marks"):
        _core.Relay(NOWHERE, "redis://127.0.0.1:1", [("t", "q")], memory_low=0.9, memory_high=0.5)
    with pytest.raises(ConfigError, match="depth_low"):
        _core.Relay(NOWHERE, "redis://127.0.0.1:1", [("t", "q")], depth_high=5, depth_low=6)
    with pytest.raises(ConfigError, match="at least one topic"):
        _core.Relay(NOWHERE, "redis://127.0.0.1:1", [])


def test_the_cli_prints_a_bad_bind_as_a_message_not_a_traceback() -> None:
    done = conveyor_cli(
        "gate", "--bind", "localhost:8080", env={"CONVEYOR_KAFKA_BOOTSTRAP": NOWHERE}
    )
    assert done.returncode == 2, done.stderr
    assert 'bind "localhost:8080"' in done.stderr
    assert "Traceback" not in done.stderr
