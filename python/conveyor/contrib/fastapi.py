"""Conveyor in a FastAPI (or any Starlette) service: a lifespan that readies
the app's producer at startup and delivers what is pending at shutdown, and a
dependency that gives handlers the app.

```python
from fastapi import Depends, FastAPI
from conveyor.contrib.fastapi import conveyor_app, lifespan

from myservice.jobs import jobs, send_welcome   # a conveyor.Conveyor and a job type

api = FastAPI(lifespan=lifespan(jobs))

@api.post("/signup")
async def signup(user_id: int) -> dict[str, str]:
    handle = await send_welcome.enqueue_async(user_id)   # acknowledged when it returns
    return {"job": handle.id}

@api.get("/jobs/{job_id}")
async def job(job_id: str, app: Conveyor = Depends(conveyor_app)) -> dict[str, str]:
    found = app.lookup(job_id)
    return {"state": found.state if found else "unknown"}
```

A shutdown waits for every job the service handed over to be acknowledged
(`Conveyor.close`), so a rolling deploy loses none. `examples/fastapi_service.py`
is a whole service; `tests/test_fastapi.py` runs it under uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request

from conveyor.app import Conveyor
from conveyor.errors import ConveyorError

log = logging.getLogger("conveyor.fastapi")

Lifespan = Callable[[Any], contextlib.AbstractAsyncContextManager[None]]


def lifespan(app: Conveyor, *, then: Lifespan | None = None) -> Lifespan:
    """A lifespan for `FastAPI(lifespan=...)` / `Starlette(lifespan=...)`
    serving `app` (as `request.app.state.conveyor`); `then`: the service's
    own lifespan, run inside it."""

    @contextlib.asynccontextmanager
    async def run(web: Any) -> AsyncIterator[None]:
        web.state.conveyor = app
        if not app.settings.redis_only:
            # Made now, not by the first request (it connects to Kafka).
            await asyncio.to_thread(app.producer)
        try:
            if then is None:
                yield
            else:
                async with then(web):
                    yield
        finally:
            try:
                await asyncio.to_thread(app.close)
            except ConveyorError:
                log.exception("jobs not delivered at shutdown")

    return run


def conveyor_app(request: Request) -> Conveyor:
    """The dependency giving a handler the service's `Conveyor` app."""
    app = getattr(request.app.state, "conveyor", None)
    if not isinstance(app, Conveyor):
        raise RuntimeError("no Conveyor app: start the service with lifespan=lifespan(app)")
    return app
