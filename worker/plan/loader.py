"""The I/O edge of session start: fetch agent, tools and catalog, then ``resolve``."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.errors import ConfigError, ControlPlaneError, RoutingError
from pipelines.providers import Catalog, VoiceCatalog
from worker.config import (
    PRE_CALL_APPLIED,
    PRE_CALL_IGNORED,
    AgentConfig,
    CachingControlPlane,
    Dispatch,
    open_control_plane,
    parse_agent,
)
from worker.plan.model import SessionPlan
from worker.plan.resolve import resolve
from worker.settings import Settings

logger = logging.getLogger(__name__)

PreCall = Callable[[AgentConfig, Dispatch], Awaitable[tuple[Dispatch, str | None]]]
"""Pre-call webhook hook: returns the dispatch with its overrides and a note for the report."""


@dataclass(frozen=True, slots=True)
class LoadedCall:
    plan: SessionPlan
    stale_config: bool
    """The control plane was down and a cached config was used."""
    stale_age_seconds: float
    secrets: tuple[str, ...]
    """Every secret value involved (agent, plan), for scrubbing logs and reports."""
    pre_call: str | None = None
    """What happened to the pre-call webhook (``None``: the agent has none)."""


def open_cached(settings: Settings) -> CachingControlPlane:
    return CachingControlPlane(
        open_control_plane(
            settings.control_plane_url,
            settings.control_plane_api_key,
            connect_timeout=settings.control_plane_connect_timeout,
            read_timeout=settings.control_plane_read_timeout,
            max_attempts=settings.control_plane_max_attempts,
        )
    )


def read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None


async def fetch_voices(control_plane: CachingControlPlane) -> tuple[VoiceCatalog | None, str]:
    """The voice catalog, or ``None`` and why: a call goes on without it (its slug is then
    sent as is to every TTS)."""
    try:
        fetched = await control_plane.fetch_voices()
        return VoiceCatalog.from_json(fetched.value, source="voices"), ""
    except (ControlPlaneError, ConfigError) as exc:
        return None, f"tts: voice catalog unavailable ({exc})"


async def load_call(
    control_plane: CachingControlPlane,
    dispatch: Dispatch,
    settings: Settings,
    *,
    agent_file: Path | None = None,
    pre_call: PreCall | None = None,
) -> LoadedCall:
    """Fetches what the call needs and resolves its plan.

    The agent comes from ``agent_file`` (with a sibling ``NAME.tools.json``), else from
    ``dispatch.agentId``, else from an inline ``dispatch.agent`` record.
    """
    stale, age = False, 0.0
    tools: Any = None
    if agent_file is not None:
        raw = read_json_file(agent_file)
        source = str(agent_file)
        tools_file = agent_file.with_name(agent_file.name.removesuffix(".json") + ".tools.json")
        tools = read_json_file(tools_file) if tools_file.exists() else None
    elif dispatch.agent_id:
        got = await control_plane.fetch_agent(dispatch.agent_id)
        got_tools = await control_plane.fetch_tools(dispatch.agent_id)
        raw, tools = got.value, got_tools.value
        stale, age = got.stale or got_tools.stale, max(got.age_seconds, got_tools.age_seconds)
        source = f"agent {dispatch.agent_id}"
    elif dispatch.agent is not None:
        raw, source = dispatch.agent, "dispatch.agent"
    else:
        raise ConfigError("dispatch: needs agentId (or an inline agent)", field="agentId")
    agent = parse_agent(raw, source=source)
    pre_call_note: str | None = None
    own = dispatch
    if pre_call is not None:
        dispatch, pre_call_note = await pre_call(agent, dispatch)
    providers = await control_plane.fetch_providers()
    catalog = Catalog.from_json(providers.value, source="providers")
    voices, voices_down = await fetch_voices(control_plane)
    try:
        plan = resolve(agent, tools, dispatch, catalog, settings, voices)
    except (ConfigError, RoutingError) as exc:
        if dispatch is own:
            raise
        # 002: a pre-call reply the plan cannot take (an unknown preset, an allowlist no
        # provider serves) is reported and ignored, like one that does not validate
        pre_call_note = f"{PRE_CALL_IGNORED}: {exc}"
        plan = resolve(agent, tools, own, catalog, settings, voices)
    if pre_call_note is not None and pre_call_note != PRE_CALL_APPLIED:
        logger.warning("%s", pre_call_note)
    if voices_down:
        plan = dataclasses.replace(plan, warnings=(*plan.warnings, voices_down))
    return LoadedCall(
        plan=plan,
        stale_config=stale or providers.stale,
        stale_age_seconds=max(age, providers.age_seconds),
        secrets=tuple(dict.fromkeys(agent.secrets + plan.secrets)),
        pre_call=pre_call_note,
    )
