"""Settings read from `CONVEYOR_*` variables: switches and numbers refuse
what they cannot mean with a ConfigError naming the variable."""

from __future__ import annotations

import pytest

import conveyor


@pytest.mark.parametrize(
    ("text", "on"), [("off", False), ("0", False), ("No", False), ("on", True), ("1", True)]
)
def test_tallies_switch(monkeypatch: pytest.MonkeyPatch, text: str, on: bool) -> None:
    monkeypatch.setenv("CONVEYOR_TALLIES", text)
    assert conveyor.Settings.from_env().tallies is on


def test_tallies_default_on_and_nonsense_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONVEYOR_TALLIES", raising=False)
    assert conveyor.Settings.from_env().tallies is True
    monkeypatch.setenv("CONVEYOR_TALLIES", "sometimes")
    with pytest.raises(conveyor.ConfigError, match="CONVEYOR_TALLIES must be 'on' or 'off'"):
        conveyor.Settings.from_env()


def test_history_must_be_a_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_JOB_HISTORY_S", "five minutes")
    with pytest.raises(conveyor.ConfigError, match="CONVEYOR_JOB_HISTORY_S must be a number"):
        conveyor.Settings.from_env()
