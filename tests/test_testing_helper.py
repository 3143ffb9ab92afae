"""`conveyor.testing` runs jobs with the worker's own runner."""

from __future__ import annotations

import asyncio

import pytest

import conveyor
from conveyor.testing import capture


def test_async_handlers_are_awaited_and_see_their_job() -> None:
    app = conveyor.Conveyor(conveyor.Settings())
    seen: list[tuple[str, int]] = []

    @app.job("t.async")
    async def handler(n: int) -> None:
        await asyncio.sleep(0)
        info = conveyor.current_job()
        assert info is not None
        seen.append((info.job_type, n))

    with capture(app) as jobs:
        handler.enqueue(7)
        assert jobs.run_all() == 1
    assert seen == [("t.async", 7)]


def test_a_failing_handler_raises_its_own_error() -> None:
    app = conveyor.Conveyor(conveyor.Settings())

    @app.job("t.fails")
    def fails() -> None:
        raise KeyError("boom")

    with capture(app) as jobs:
        fails.enqueue()
        with pytest.raises(KeyError, match="boom"):
            jobs.run_all()
