"""Tasks written for Django's tasks framework, nothing Conveyor-specific."""

import asyncio
from typing import Any

from django.tasks import task


@task
def add(a: int, b: int) -> int:
    return a + b


@task(takes_context=True)
def attempts(context: Any, fail_first: bool) -> int:
    if fail_first and context.attempt == 1:
        raise RuntimeError("the first attempt fails")
    return int(context.attempt)


@task
async def shout(text: str) -> str:
    await asyncio.sleep(0.01)
    return text.upper()


@task
def always_fails() -> None:
    raise ValueError("no luck")
