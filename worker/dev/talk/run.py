"""``voice-worker talk``: the agent's call resolved first (a bad config fails before any
server starts), then ``replay``'s local stack (LiveKit unless ``livekit_url``, the
offline LLM if the plan needs it, one worker) and the page, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from worker.dev.replay import call_metadata, local_stack, needs_llm, resolve_first
from worker.dev.talk.bundle import ensure_bundle
from worker.dev.talk.server import TalkServer
from worker.settings import Settings


async def talk(
    agent: str,
    *,
    workdir: Path,
    port: int | None = None,
    dispatch: Mapping[str, Any] | None = None,
    livekit_url: str | None = None,
    on_ready: Callable[[str], None] = print,
) -> None:
    """Serves the page until a signal; ``on_ready`` gets its URL once all is up."""
    settings = Settings()
    metadata = call_metadata(agent, dispatch)
    plan = await resolve_first(metadata, settings)
    await asyncio.to_thread(ensure_bundle)
    workdir.mkdir(parents=True, exist_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with (
            local_stack(
                settings, livekit_url=livekit_url, need_llm=needs_llm(plan), workdir=workdir
            ) as (livekit, worker),
            TalkServer(
                livekit,
                worker.agent_name,
                metadata,
                title=plan.agent_name or "",
                port=port,
                check=lambda md: resolve_first(md, settings),
            ) as server,
        ):
            on_ready(server.url)
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
