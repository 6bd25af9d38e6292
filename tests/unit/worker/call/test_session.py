"""Session assembly: what the plan hands to LiveKit's ``AgentSession``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from pipelines.providers import Catalog
from worker.call import build_session
from worker.config import parse_agent, parse_dispatch
from worker.plan import resolve
from worker.settings import Settings

FRONT_DESK = "agent_01JC0FRNTDESK0000000000000"


async def test_session_prepares_the_reply_during_the_response_delay(
    control_plane_dir: Path, settings: Callable[..., Settings]
) -> None:
    agent = json.loads((control_plane_dir / "agents" / f"{FRONT_DESK}.json").read_text())
    catalog = Catalog.from_json(json.loads((control_plane_dir / "providers.json").read_text()))
    plan = resolve(parse_agent(agent), None, parse_dispatch(None), catalog, settings())
    # no providers: only the session's options are under test
    session = build_session(plan, layers={"stt": None, "llm": None, "tts": None})
    try:
        opts = session.options
        # the agent's response delay is the minimum endpointing delay ...
        assert opts.endpointing["min_delay"] == plan.endpointing.min_delay
        # ... and LLM and TTS both start on the STT final, inside that delay, so a reply
        # is ready when it ends instead of starting its TTS only then
        assert opts.preemptive_generation["enabled"]
        assert opts.preemptive_generation["preemptive_tts"]
    finally:
        await session.aclose()
