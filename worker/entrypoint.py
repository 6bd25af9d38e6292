"""The LiveKit side: an ``AgentServer`` that takes one job per call.

On a job: parse the dispatch metadata, fetch config and tools, resolve the plan, assemble
the session, greet, converse, and end when the caller leaves. A config or routing error
ends the job with the reason logged (and a short spoken apology if the caller is there)
instead of a hung room.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from livekit import rtc
from livekit.agents import Agent, AgentServer, AgentSession, JobContext, JobProcess, llm
from livekit.agents.cli import proto
from livekit.agents.cli.cli import _run_worker
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import is_given
from livekit.agents.voice.events import ConversationItemAddedEvent

from pipelines.errors import VoiceWorkerError
from pipelines.noise import load_bed
from pipelines.output import DEFAULT_SAMPLE_RATE, install_output_chain

from .amd_routing import AMDRouter
from .assembly import VoiceAgent, build_layers, build_session, room_options
from .control_plane import CachingControlPlane
from .dispatch import parse_dispatch
from .lifecycle import CallLifecycle, pre_call_hook, webhook_sender
from .loader import load_call, open_cached
from .metrics import default_metrics
from .plan import GOODBYE
from .settings import Settings
from .tools import room_dtmf, sip_transfer

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
    """Runs once per job process before its first job. Kept light: a slow prewarm delays
    every new process and so every call that arrives while the warm ones are busy."""
    from pipelines.providers import shared_ssl_context
    from pipelines.warmup import warm_vendor_plugins

    # Each of these would stall the call's event loop if left to the first job: parsing
    # the CA bundle into the process's TLS context (0.1-0.2 s), plugin imports and each
    # plugin's first request (~0.1-0.2 s in all; a rehearsal against local servers).
    shared_ssl_context()
    warm_vendor_plugins()


async def _apologise(ctx: JobContext) -> None:
    """Says a short apology with the offline TTS if a caller is present."""
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


async def _apologise_and_end(ctx: JobContext, reason: str) -> None:
    try:
        await _apologise(ctx)
    finally:
        ctx.shutdown(reason=f"call not started: {reason}")


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("amd routing failed: %r", task.exception())


def _caller_transfer(ctx: JobContext) -> Callable[[str], Awaitable[None]]:
    """SIP-transfers the caller (the room's SIP participant) to a number."""

    async def transfer(to: str) -> None:
        sip = [
            p
            for p in ctx.room.remote_participants.values()
            if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP
        ]
        if not sip:
            raise RuntimeError("no SIP participant to transfer")
        await sip_transfer(ctx.api, room_name=ctx.room.name, participant_identity=sip[0].identity)(
            to
        )

    return transfer


async def entrypoint(ctx: JobContext) -> None:
    settings = Settings()
    extra = {"room": ctx.room.name, "job_id": ctx.job.id}
    ctx.log_context_fields = extra
    try:
        dispatch = parse_dispatch(ctx.job.metadata, source="job metadata")
        extra["agent_id"] = dispatch.agent_id or ""
        ctx.log_context_fields = extra
        call_id = dispatch.call_id or ctx.job.id
        hook = pre_call_hook(
            settings, call_id=call_id, room=ctx.room.name, direction=dispatch.direction
        )
        loaded = await load_call(control_plane(settings), dispatch, settings, pre_call=hook)
    except VoiceWorkerError as exc:
        logger.error("call not started: %s", exc)
        default_metrics().jobs_failed.labels(reason=type(exc).__name__).inc()
        await _apologise_and_end(ctx, str(exc))
        return
    plan = loaded.plan
    life = CallLifecycle(
        plan, settings=settings, call_id=call_id, room_name=ctx.room.name, secrets=loaded.secrets
    )
    if loaded.stale_config:
        logger.warning(
            "using cached agent config (%.0f s old): control plane unavailable",
            loaded.stale_age_seconds,
        )
        life.recorder.add_event("stale_config", age_seconds=round(loaded.stale_age_seconds))
    if loaded.pre_call:
        life.recorder.add_event("pre_call", outcome=loaded.pre_call)
    for warning in plan.warnings:
        logger.warning("plan: %s", warning)

    http = httpx.AsyncClient()
    tools = life.function_tools(
        http, transfer=_caller_transfer(ctx), publish_dtmf=room_dtmf(ctx.room)
    )
    layers = build_layers(
        plan,
        on_switch=lambda ev: life.record_switch(
            ev.layer, ev.from_provider, ev.to_provider, ev.reason, ev.switch_seconds
        ),
    )
    session = build_session(plan, layers=layers)
    life.attach(session)
    closed = asyncio.Event()
    session.on("close", lambda _ev: closed.set())
    publish_turns(session, ctx.room)
    sender = webhook_sender(settings, life.metrics)

    async def on_shutdown(reason: str) -> None:
        if not closed.is_set():
            # Drain timeout or worker shutdown with the call still up: say goodbye first.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(life.hangup(GOODBYE, reason=f"worker {reason}"), 1.0)
                await asyncio.wait_for(closed.wait(), 8.0)
        await life.finish(sender, reason=None if closed.is_set() else f"worker {reason}")
        await sender.aclose()
        await http.aclose()

    ctx.add_shutdown_callback(on_shutdown)
    drain_watch = asyncio.create_task(end_on_drain(life))
    session.on("close", lambda _ev: drain_watch.cancel())
    if plan.noise_bed is not None:
        # Decoding a clip takes a while; once per process, and never on the event loop.
        await asyncio.to_thread(load_bed, plan.noise_bed.preset, DEFAULT_SAMPLE_RATE)
    router = AMDRouter(plan, plan.amd, life) if plan.amd is not None else None
    agent = VoiceAgent(plan, tools, reply_gate=router.reply_gate if router else None)
    await session.start(agent=agent, room=ctx.room, room_options=room_options())
    # After start (RoomIO has published the track), before the first word is spoken.
    install_output_chain(
        session.output,
        playback_rate=plan.speech.playback_rate,
        noise_preset=plan.noise_bed.preset if plan.noise_bed else None,
        noise_volume=plan.noise_bed.volume if plan.noise_bed else None,
    )
    logger.info(
        "call started",
        extra={
            "providers": {layer: [c.id for c in chain] for layer, chain in plan.providers.items()}
        },
    )
    greet_now = router is None or router.reply_gate.is_set()
    if plan.first_message and greet_now:
        session.say(plan.first_message, allow_interruptions=plan.endpointing.allow_interruptions)
    if router is not None:
        callee = await ctx.wait_for_participant()
        amd_task = asyncio.create_task(router.run(session, callee))
        amd_task.add_done_callback(_log_failure)
    await closed.wait()
    offline_tts_allowed = any(c.vendor == "local" for c in plan.providers["tts"])
    if life.failed and life.end_reason and "tts:" in life.end_reason and offline_tts_allowed:
        logger.error("call ended by a provider failure: %s", life.failed)
        await _apologise(ctx)
    ctx.shutdown(reason=life.end_reason or "session closed")


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
        body = {
            "type": "turn",
            "role": item.role,
            "text": item.text_content or "",
            "at": ev.created_at,
            "interrupted": item.interrupted,
            "metrics": dict(item.metrics),
        }
        task = asyncio.create_task(
            room.local_participant.publish_data(json.dumps(body), topic=EVENTS_TOPIC, reliable=True)
        )
        pending.add(task)
        task.add_done_callback(pending.discard)

    session.on("conversation_item_added", on_item)


def load_of(server: AgentServer, max_calls: int) -> float:
    """What the worker reports to LiveKit: the share of call slots in use. Above
    ``load_threshold`` LiveKit dispatches elsewhere. Slots, not CPU: CPU swings with
    every utterance (and with anything else on the box), while ``MAX_CONCURRENT_CALLS``
    is set from ``voice-worker bench capacity``, where audio quality was measured."""
    return min(1.0, len(server.active_jobs) / max_calls)


DRAIN_FILE_ENV = "VOICE_WORKER_DRAIN_FILE"
GOODBYE_MARGIN = 5.0
"""Seconds before the drain deadline at which calls still up say goodbye and end (half
the drain timeout when that is shorter)."""


class DrainingServer(AgentServer):
    """On drain (SIGTERM) tells the job processes when to wind their calls up: LiveKit
    itself would cut them at the deadline without a word. The news travels in a file
    named by an env var the job processes inherit, so no private API is involved."""

    async def drain(self, timeout: NotGivenOr[int | None] = NOT_GIVEN) -> None:
        path = os.environ.get(DRAIN_FILE_ENV)
        limit = timeout if is_given(timeout) else self._drain_timeout
        if path and limit is not None:
            margin = min(GOODBYE_MARGIN, limit / 2)
            Path(path).write_text(str(time.time() + limit - margin))
        await super().drain(timeout)


async def end_on_drain(life: CallLifecycle, every: float = 0.5) -> None:
    """Polls for the drain deadline; at it, says goodbye and ends the call."""
    path = os.environ.get(DRAIN_FILE_ENV)
    if not path:
        return
    while True:
        with contextlib.suppress(OSError, ValueError):
            if time.time() >= float(Path(path).read_text()):
                await life.hangup(GOODBYE, reason="worker draining")
                return
        await asyncio.sleep(every)


PRELOAD_MODULES = (
    __name__,
    "pipelines.openai_llm",
    "pipelines.warmup",
    "pipelines.wire.deepgram",
    "pipelines.wire.elevenlabs",
    "pipelines.wire.openai_compat",
    "livekit.plugins.deepgram",
    "livekit.plugins.elevenlabs",
    "livekit.plugins.openai",
)
"""Imported once in LiveKit's forkserver, so every job process shares them copy-on-write
instead of importing them itself (~1000 modules: an idle job process's own memory (USS)
42 -> 22 MB). The forkserver skips a module that fails to import, silently: a unit test
imports each."""


def build_server(settings: Settings) -> AgentServer:
    multiproc = settings.spool_dir.parent / "prometheus"
    server = DrainingServer(
        ws_url=settings.livekit_url,
        api_key=settings.livekit_api_key,
        api_secret=settings.livekit_api_secret.get_secret_value(),
        port=settings.worker_http_port,
        host="127.0.0.1" if settings.livekit_url.startswith("ws://127.") else "",
        setup_fnc=prewarm,
        preload_modules=list(PRELOAD_MODULES),
        drain_timeout=int(settings.drain_timeout),
        num_idle_processes=settings.num_idle_processes,
        initialize_process_timeout=30.0,
        load_fnc=lambda srv: load_of(srv, settings.max_concurrent_calls),
        load_threshold=settings.load_threshold,
        prometheus_port=settings.metrics_port or None,
        prometheus_multiproc_dir=str(multiproc.resolve()),
    )
    server.rtc_session(entrypoint, agent_name=settings.agent_name)
    return server


async def redeliver_forever(settings: Settings, every: float = 300.0) -> None:
    """Reports left in the spool (a crash, a receiver outage) go out at start-up and then
    every few minutes, so none is lost and none waits for the next restart."""
    while True:
        sender = webhook_sender(settings, default_metrics())
        try:
            for result in await sender.redeliver_spool():
                logger.info("spooled %s %s: %s", result.kind, result.msg_id, result.outcome)
        except Exception:
            logger.exception("spool redelivery failed")
        finally:
            await sender.aclose()
        await asyncio.sleep(every)


def run_worker(command: str, extra: list[str]) -> None:
    """``voice-worker start|dev``: registers with LiveKit and takes jobs until SIGTERM,
    then drains (active calls finish, up to ``DRAIN_TIMEOUT``)."""
    settings = Settings()
    log_level = "DEBUG" if command == "dev" else settings.log_level
    if "--log-level" in extra:
        log_level = extra[extra.index("--log-level") + 1]
    drain_file = Path(tempfile.gettempdir()) / f"voice-worker-drain-{os.getpid()}"
    drain_file.unlink(missing_ok=True)
    os.environ[DRAIN_FILE_ENV] = str(drain_file)
    server = build_server(settings)
    tasks: set[asyncio.Task[None]] = set()

    @server.on("worker_started")
    def _started() -> None:
        tasks.add(asyncio.get_event_loop().create_task(redeliver_forever(settings)))

    _run_worker(
        server,
        proto.CliArgs(
            log_level=log_level,
            log_format="json" if settings.log_json else "colored",
            dev=command == "dev",
        ),
    )
