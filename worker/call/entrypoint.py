"""One job = one call: the glue between LiveKit's ``JobContext`` and the call.

Parse the dispatch metadata, fetch config and tools, resolve the plan, let
``worker.call.session`` assemble and start the session, then wait until the call ends and
deliver its report. A config or routing error ends the job with the reason logged (and a
short spoken apology if the caller is there) instead of a hung room.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from livekit import rtc
from livekit.agents import Agent, AgentSession, JobContext

from pipelines.errors import VoiceWorkerError
from pipelines.providers import shared_ssl_context
from worker.call.amd_routing import IVRRecall
from worker.call.ivr_memory import ivr_memory
from worker.call.lifecycle import CallLifecycle, pre_call_hook, webhook_sender
from worker.call.recording import finish_recording
from worker.call.session import Call, assemble_call, start_call
from worker.call.survival import (
    Fenced,
    awaits_answer,
    call_store,
    chat_history,
    fall_silent,
    guard_call,
    recovery_of,
    resume_report,
    resumed_plan,
    until_either,
)
from worker.call.telephony import (
    CallerDigits,
    SIPCall,
    WarmTransferTool,
    blind_transfer,
    fill_from_sip,
    inbound_caller,
    room_joiner,
    sip_call_info,
    until_answered,
)
from worker.call.tools import room_dtmf, sip_transfer
from worker.config import CachingControlPlane, parse_dispatch
from worker.metrics import default_metrics
from worker.plan import GOODBYE, load_call, open_cached
from worker.settings import Settings

logger = logging.getLogger(__name__)

APOLOGY = "Sorry, this line cannot take your call right now. Please try again later. Goodbye."
CALLER_WAIT_SECONDS = 5.0

_control_plane: CachingControlPlane | None = None


def control_plane(settings: Settings) -> CachingControlPlane:
    """One per process, so the last good config survives a control-plane outage."""
    global _control_plane
    if _control_plane is None:
        _control_plane = open_cached(settings)
    return _control_plane


async def _apologise(ctx: JobContext) -> None:
    """Says a short apology with the offline TTS if a caller is present."""
    from pipelines.providers import EspeakTTS

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


def _amd_summary(call: Call) -> dict[str, Any] | None:
    verdict = call.router.verdict if call.router is not None else None
    if call.router is None or verdict is None:
        return None
    action = call.router.amd.actions[verdict.category]
    return {**verdict.to_json(), "action": action, **call.router.provisional}


async def entrypoint(ctx: JobContext) -> None:
    settings = Settings()
    extra = {"room": ctx.room.name, "job_id": ctx.job.id}
    ctx.log_context_fields = extra
    recovery = recovery_of(ctx.job.metadata)
    store = call_store(settings)
    try:
        dispatch = parse_dispatch(ctx.job.metadata, source="job metadata")
        caller = await inbound_caller(ctx) if dispatch.direction == "inbound" else None
        if caller is not None:
            dispatch = fill_from_sip(dispatch, caller.attributes)
        extra["agent_id"] = dispatch.agent_id or ""
        ctx.log_context_fields = extra
        call_id = recovery[0] if recovery else dispatch.call_id or ctx.job.id
        # a takeover does not ask the pre-call webhook again
        hook = (
            None
            if recovery
            else pre_call_hook(
                settings, call_id=call_id, room=ctx.room.name, direction=dispatch.direction
            )
        )
        loaded = await load_call(control_plane(settings), dispatch, settings, pre_call=hook)
        checkpoint = await store.load(call_id) if store and recovery else None
    except VoiceWorkerError as exc:
        logger.error("call not started: %s", exc)
        default_metrics().jobs_failed.labels(reason=type(exc).__name__).inc()
        await _apologise_and_end(ctx, str(exc))
        return
    plan = loaded.plan if checkpoint is None else resumed_plan(loaded.plan, checkpoint)
    life = CallLifecycle(
        plan, settings=settings, call_id=call_id, room_name=ctx.room.name, secrets=loaded.secrets
    )
    if checkpoint is not None:
        resume_report(life.recorder, checkpoint, job_id=ctx.job.id)
    if loaded.stale_config:
        logger.warning(
            "using cached agent config (%.0f s old): control plane unavailable",
            loaded.stale_age_seconds,
        )
        life.recorder.add_event("stale_config", age_seconds=round(loaded.stale_age_seconds))
    if loaded.pre_call:
        life.recorder.add_event("pre_call", outcome=loaded.pre_call)
    if caller is not None:
        life.recorder.update_metadata(sip_call_info(caller.attributes))
    for warning in plan.warnings:
        logger.warning("plan: %s", warning)

    http = httpx.AsyncClient(verify=shared_ssl_context())  # not a CA-bundle parse per call
    sender = webhook_sender(settings, life.metrics)
    keys = CallerDigits(record_event=life.recorder.add_event)
    warm = WarmTransferTool(
        life, lkapi=ctx.api, room=ctx.room, sender=sender, join=room_joiner(settings)
    )
    tools = life.function_tools(
        http,
        transfer=blind_transfer(life, sender, _caller_transfer(ctx)),
        publish_dtmf=room_dtmf(ctx.room),
        collect_digits=keys.collect,
        warm_transfer=warm,
    )
    history = None if checkpoint is None else chat_history(checkpoint["report"]["transcript"])
    call = assemble_call(plan, life, ctx.room, tools, history=history)
    keys.attach(ctx.room, call.session, reply_gate=call.router.reply_gate if call.router else None)
    if call.router is not None:
        call.router.notify = functools.partial(life.send_status, sender)
    if call.router is not None and plan.ivr_memory and dispatch.dialed_number:
        call.router.ivr = IVRRecall(
            ivr_memory(settings), plan.agent_id or "", dispatch.dialed_number, room_dtmf(ctx.room)
        )
    phone = SIPCall(
        ctx.room,
        life,
        sender,
        lkapi=ctx.api,
        ringing_timeout=dispatch.telephony.ringing_timeout,
        direction=plan.direction,
        numbers=(dispatch.dialed_number, dispatch.caller_number),
    )
    phone.start(call.session)
    life.hang_up_phone = phone.hang_up_soon

    taken_over = asyncio.Event()

    def fenced() -> None:
        phone.leave_line_up()  # the caller is the new job's now
        fall_silent(call.session)
        taken_over.set()  # the entrypoint returns, so the job leaves the room at once
        ctx.shutdown(reason="call taken over by another worker")

    guard = None
    if store is not None:
        try:
            guard = await guard_call(
                store,
                call_id=call_id,
                job_id=ctx.job.id,
                epoch=recovery[1] if recovery else None,
                recorder=life.recorder,
                record={
                    "metadata": ctx.job.metadata,
                    "room": ctx.room.name,
                    "agent_name": ctx.job.agent_name,
                },
                on_fenced=fenced,
            )
        except Fenced as exc:
            logger.warning("not taking the call: %s", exc)
            phone.leave_line_up()
            ctx.shutdown(reason="call already taken over")
            return
    if guard is not None:
        call.session.on("conversation_item_added", lambda _ev: guard.checkpoint())

    async def on_shutdown(reason: str) -> None:
        if guard is not None and guard.fenced:
            # Another worker has the call (and its report): leave without a word.
            await guard.close(release=False)
            await sender.aclose()
            await http.aclose()
            return
        if not call.closed.is_set():
            # Drain timeout or worker shutdown with the call still up: say goodbye first.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(life.hangup(GOODBYE, reason=f"worker {reason}"), 1.0)
                await asyncio.wait_for(call.closed.wait(), 8.0)
        await phone.aclose(amd=_amd_summary(call))
        if call.router is not None and call.router.ivr is not None:
            await call.router.learn()
            await call.router.ivr.memory.aclose()
        if call.recording is not None:
            await finish_recording(call.recording, life, sender)
        await life.finish(sender, reason=None if call.closed.is_set() else f"worker {reason}")
        if guard is not None:
            await guard.close(release=True)
        await sender.aclose()
        await http.aclose()

    ctx.add_shutdown_callback(on_shutdown)
    drain_watch = asyncio.create_task(end_on_drain(life))
    call.session.on("close", lambda _ev: drain_watch.cancel())
    answered = None if caller is None else (lambda: until_answered(ctx.room, caller))
    if plan.direction == "outbound" and checkpoint is None:
        answered = phone.until_answered  # the greeting waits for the callee to pick up
    # AMD listens before the session has started: a phone answered meanwhile starts its
    # greeting at once (started after it, the detector lost the first 0.6-1.0 s of every
    # call over livekit-sip, a short "Hello?" whole)
    amd_task: asyncio.Task[None] | None = None
    if call.router is not None:
        router = call.router

        async def route() -> None:
            # A task, so a callee that leaves before answering cannot hold the job here.
            try:
                await router.run(call.session, await ctx.wait_for_participant())
            finally:
                await router.aclose()

        amd_task = asyncio.create_task(route())
        amd_task.add_done_callback(_log_failure)
    try:
        await start_call(call, ctx.room, answered=answered)
    except BaseException:
        if amd_task is not None:
            amd_task.cancel()
        raise
    if checkpoint is not None and awaits_answer(checkpoint["report"]["transcript"]):
        call.session.generate_reply()  # the turn the lost worker never answered
    await until_either(call.closed, taken_over)
    if amd_task is not None:
        amd_task.cancel()
    if taken_over.is_set():
        return
    await warm.until_bridge_ends()
    offline_tts_allowed = any(c.vendor == "local" for c in plan.providers["tts"])
    if life.failed and life.end_reason and "tts:" in life.end_reason and offline_tts_allowed:
        logger.error("call ended by a provider failure: %s", life.failed)
        await _apologise(ctx)
    ctx.shutdown(reason=life.end_reason or "session closed")


DRAIN_FILE_ENV = "VOICE_WORKER_DRAIN_FILE"
GOODBYE_MARGIN = 8.0
"""Seconds before the drain deadline at which calls still up say goodbye and end (half
the drain timeout when that is shorter). It holds a reply already playing (the goodbye
waits for it), the goodbye, and the session's close, which waits up to 2 s for the
transcript of words the caller said meanwhile: with 5 s, a quiet machine used 4.9 s of
it in the rolling-restart test, and a busy one ran past the deadline into LiveKit's
forced shutdown."""


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
