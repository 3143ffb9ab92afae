"""An example service: a FastAPI app enqueuing jobs through Conveyor.

    uvicorn examples.fastapi_service:api                 # the web service
    conveyor worker examples.fastapi_service:jobs        # runs its jobs
    conveyor relay                                       # Kafka into Redis

Settings come from `CONVEYOR_*` variables (with none set, the servers of
`conveyor dev up`). `POST /signup` enqueues a welcome job (its argument a
pydantic model) and answers once the job is acknowledged; `GET /jobs/{id}`
tells where it is, and what it returned once done.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel

import conveyor
from conveyor.contrib.fastapi import conveyor_app, lifespan

jobs = conveyor.Conveyor()


class Signup(BaseModel):
    """What the signup form sends."""

    user_id: int
    email: str


@jobs.job("welcome.send", store_result=True, timeout_s=30)
async def send_welcome(signup: Signup) -> str:
    """Sends the welcome mail (here: waits as a mail API would)."""
    await asyncio.sleep(0.01)
    return f"welcome sent to {signup.email}"


api = FastAPI(lifespan=lifespan(jobs))


@api.post("/signup")
async def signup(body: Signup) -> dict[str, str]:
    """Enqueues the welcome mail; answers once Kafka has the job."""
    handle = await send_welcome.enqueue_async(body)
    return {"job": handle.id}


#: FastAPI's dependency marker, made once (ruff B008).
APP = Depends(conveyor_app)


@api.get("/jobs/{job_id}")
async def job(job_id: str, app: conveyor.Conveyor = APP) -> dict[str, Any]:
    """The job's state, and its result once done."""
    try:
        found = await asyncio.to_thread(app.lookup, job_id)
    except conveyor.InvalidJobError as err:
        raise HTTPException(404, str(err)) from None
    if found is None:
        raise HTTPException(404, "no such job yet (still in Kafka) or it ended long ago")
    result = await app.result_async(job_id, timeout_s=1) if found.state == "done" else None
    return {"state": found.state, "result": result}
