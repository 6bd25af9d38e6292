"""Waiting on real services in a test: poll a condition until it holds or time runs out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(check: Callable[[], bool], timeout: float, every: float = 0.05) -> None:
    """Returns once ``check()`` is true; raises ``TimeoutError`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise TimeoutError
        await asyncio.sleep(every)
