"""The LiveKit side: an ``AgentServer`` that takes one job per call.

On a job: parse the dispatch metadata, fetch config and tools, resolve the plan, assemble
the session, greet, converse, and end when the caller leaves. A config or routing error
ends the job with the reason logged (and a short spoken apology if the caller is there)
instead of a hung room.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from livekit import rtc
from livekit.agents import Agent, AgentServer, AgentSession, JobContext, JobProcess, llm
from livekit.agents.voice.events import ConversationItemAddedEvent
from livekit.agents.cli import proto
from livekit.agents.cli.cli import _run_worker

from pipelines.errors import VoiceWorkerError
from pipelines.output import install_output_chain

from .assembly import VoiceAgent, build_session
from .control_plane import CachingControlPlane
from .dispatch import parse_dispatch
from .loader import load_call, open_cached
from .settings import Settings

logger = logging.getLogger("worker.entrypoint")

APOLOGY = "Sorry, this line cannot take your call right now. Please try again later. Goodbye."
CALLER_WAIT_SECONDS = 5.0

_control_plane: CachingControlPlane | None = None


def control_plane(settings: Settings) -> CachingControlPlane:
    """One per process, so the last good config survives a control-plane outage."""
    global _control_plane
    if _control_plane is None:
        _control_plane = open_cached(settings)
    return _control_plane


def prewarm(proc: JobProcess) -> None:
    """Loads what every call in this process needs before the first job arrives."""
    if not Settings().offline_providers:
        return
    from pipelines.local_stt import PocketsphinxEngine

    engine = PocketsphinxEngine()
    engine.warm_up()
    proc.userdata["pocketsphinx"] = engine


async def _apologise_and_end(ctx: JobContext, reason: str) -> None:
    """Says a short apology with the offline TTS if a caller is present, then ends."""
    from pipelines.local_tts import EspeakTTS

    try:
        await ctx.connect()
        await asyncio.wait_for(ctx.wait_for_participant(), CALLER_WAIT_SECONDS)
        session: AgentSession[Any] = AgentSession(tts=EspeakTTS(), vad=None)
        await session.start(agent=Agent(instructions=""), room=ctx.room)
        handle = session.say(APOLOGY, allow_interruptions=False, add_to_chat_ctx=False)
        await handle.wait_for_playout()
        await session.aclose()
    except (TimeoutError, RuntimeError, rtc.ConnectError) as exc:
        logger.info("no apology spoken: %s", exc)
    finally:
        ctx.shutdown(reason=f"call not started: {reason}")


async def entrypoint(ctx: JobContext) -> None:
    settings = Settings()
    extra = {"room": ctx.room.name, "job_id": ctx.job.id}
    ctx.log_context_fields = extra
    try:
        dispatch = parse_dispatch(ctx.job.metadata, source="job metadata")
        extra["agent_id"] = dispatch.agent_id or ""
        ctx.log_context_fields = extra
        loaded = await load_call(control_plane(settings), dispatch, settings)
    except VoiceWorkerError as exc:
        logger.error("call not started: %s", exc, extra=extra)
        await _apologise_and_end(ctx, str(exc))
        return
    plan = loaded.plan
    if loaded.stale_config:
        logger.warning("using cached agent config (%.0f s old): control plane unavailable",
                       loaded.stale_age_seconds, extra=extra)
    for warning in plan.warnings:
        logger.warning("plan: %s", warning, extra=extra)

    session = build_session(plan)
    closed = asyncio.Event()
    session.on("close", lambda _ev: closed.set())
    publish_turns(session, ctx.room)
    await session.start(agent=VoiceAgent(plan), room=ctx.room)
    # After start (RoomIO has published the track), before the first word is spoken.
    install_output_chain(
        session.output,
        playback_rate=plan.speech.playback_rate,
        noise_preset=plan.noise_bed.preset if plan.noise_bed else None,
        noise_volume=plan.noise_bed.volume if plan.noise_bed else None,
    )
    logger.info("call started", extra={**extra, "providers": {
        layer: [c.id for c in chain] for layer, chain in plan.providers.items()}})
    if plan.first_message:
        session.say(plan.first_message, allow_interruptions=plan.endpointing.allow_interruptions)
    await closed.wait()
    ctx.shutdown(reason="session closed")


EVENTS_TOPIC = "voice-worker.events"
"""Data topic on which the worker publishes each conversation turn with its timings."""


def publish_turns(session: AgentSession[Any], room: rtc.Room) -> None:
    """Publishes every finished turn (text, role, LiveKit's per-turn metrics) to the room,
    so a caller-side observer (``voice-worker replay``) can time the pipeline stages."""
    pending: set[asyncio.Task[None]] = set()

    def on_item(ev: ConversationItemAddedEvent) -> None:
        item = ev.item
        if not isinstance(item, llm.ChatMessage) or item.role not in ("user", "assistant"):
            return
        body = {"type": "turn", "role": item.role, "text": item.text_content or "",
                "at": ev.created_at, "interrupted": item.interrupted,
                "metrics": dict(item.metrics)}
        task = asyncio.create_task(room.local_participant.publish_data(
            json.dumps(body), topic=EVENTS_TOPIC, reliable=True))
        pending.add(task)
        task.add_done_callback(pending.discard)

    session.on("conversation_item_added", on_item)


def build_server(settings: Settings) -> AgentServer:
    server = AgentServer(
        ws_url=settings.livekit_url,
        api_key=settings.livekit_api_key,
        api_secret=settings.livekit_api_secret.get_secret_value(),
        port=settings.worker_http_port,
        host="127.0.0.1" if settings.livekit_url.startswith("ws://127.") else "",
        setup_fnc=prewarm,
        drain_timeout=int(settings.drain_timeout),
        num_idle_processes=settings.num_idle_processes,
    )
    server.rtc_session(entrypoint, agent_name=settings.agent_name)
    return server


def run_worker(command: str, extra: list[str]) -> None:
    """``voice-worker start|dev``: registers with LiveKit and takes jobs until SIGTERM,
    then drains (active calls finish, up to ``DRAIN_TIMEOUT``)."""
    settings = Settings()
    log_level = "DEBUG" if command == "dev" else "INFO"
    if "--log-level" in extra:
        log_level = extra[extra.index("--log-level") + 1]
    _run_worker(
        build_server(settings),
        proto.CliArgs(log_level=log_level, log_format="json" if settings.log_json
                      else "colored", dev=command == "dev"),
    )
