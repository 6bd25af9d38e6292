"""A call survives its worker: the job side (``CallGuard``: the lease renewed, a checkpoint at
every turn, fenced when another worker took the call) and the watcher every worker process
runs (``watch_calls``: claims a lapsed call and re-dispatches the agent into its room, or,
when the caller has gone, delivers the report from the checkpoint). See ``checkpoint``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from livekit import api, rtc
from livekit.agents import llm

from worker.call.checkpoint import CLAIM_GRACE_MS, CallStore, Fenced, Lease, LeaseKeeper

__all__ = ["Fenced"]  # re-exported for the entrypoint
from worker.call.lifecycle import CallLifecycle, webhook_sender
from worker.call.report import CallRecorder
from worker.config import parse_dispatch
from worker.plan import SessionPlan, load_call, open_cached
from worker.settings import Settings

logger = logging.getLogger(__name__)

RECOVERY_KEY = "voiceWorkerRecovery"
"""Dispatch metadata key of a takeover: ``{"callId": ..., "epoch": ...}``."""
SORRY = "Sorry, I lost you for a second."
TOPIC_WORDS = 12
"""At most this many of the caller's last words are repeated back after a takeover."""
REDISPATCH_SECONDS = 3.0
"""A takeover dispatch no worker has accepted by then is sent again (up to ``DISPATCHES``
in all): LiveKit may offer it to the lost worker itself when that one only stalls (still
registered), and then drops it after its 10 s availability timeout. The first job to take
the lease keeps the call; a later one finds it taken and leaves."""
DISPATCHES = 5


def call_store(settings: Settings) -> CallStore | None:
    """The Redis store when ``REDIS_URL`` is set; None runs calls without a checkpoint."""
    url = settings.redis_url.get_secret_value() if settings.redis_url else ""
    if not url:
        return None
    return CallStore(url, lease_seconds=settings.call_lease_seconds)


def recovery_of(metadata: str | None) -> tuple[str, int] | None:
    """``(call id, epoch)`` when the job is a takeover of a call another worker lost."""
    try:
        marker = json.loads(metadata or "{}").get(RECOVERY_KEY)
        return str(marker["callId"]), int(marker["epoch"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def recovery_line(transcript: Sequence[Mapping[str, Any]]) -> str:
    """What the new agent says first: an apology and, when the caller had said something,
    what they were talking about (their last words, trimmed)."""
    said = [e.get("text", "") for e in transcript if e.get("role") == "user" and e.get("text")]
    if not said:
        return SORRY
    words = str(said[-1]).strip().rstrip(".?!").split()
    topic = " ".join(words[-TOPIC_WORDS:])
    return f"{SORRY} You were asking about {topic}."


def chat_history(transcript: Sequence[Mapping[str, Any]]) -> llm.ChatContext:
    """The conversation so far as the LLM's chat context."""
    ctx = llm.ChatContext.empty()
    for entry in transcript:
        role, text = entry.get("role"), entry.get("text")
        if role in ("user", "assistant") and text:
            ctx.add_message(role=role, content=str(text))
    return ctx


def awaits_answer(transcript: Sequence[Mapping[str, Any]]) -> bool:
    """The caller spoke last: their turn was lost with the worker and is answered now."""
    turns = [e for e in transcript if e.get("role") in ("user", "assistant")]
    return bool(turns) and turns[-1].get("role") == "user"


def resumed_plan(plan: SessionPlan, checkpoint: Mapping[str, Any]) -> SessionPlan:
    """A taken-over call's plan: no answering-machine detection (the first worker's verdict
    stands) and the recovery line instead of the first message."""
    line = recovery_line(checkpoint["report"]["transcript"])
    return dataclasses.replace(plan, first_message=line, amd=None)


def resume_report(recorder: CallRecorder, checkpoint: Mapping[str, Any], *, job_id: str) -> None:
    """The report takes up where the lost worker's checkpoint left it, and says so."""
    recorder.restore(checkpoint["report"])
    recorder.add_event(
        "recovered",
        job_id=job_id,
        checkpoint_age_seconds=round(time.time() - float(checkpoint["saved_at"]), 2),
    )
    recorder.update_metadata({"recovered": True})


class CallGuard:
    """Holds a call's lease (a ``LeaseKeeper`` thread renews it while the job's event loop
    ticks) and writes its checkpoint (the dispatch and the report so far) when asked, one
    write at a time. ``on_fenced`` runs once, on the loop, when another worker has claimed
    the call."""

    def __init__(
        self,
        store: CallStore,
        lease: Lease,
        recorder: CallRecorder,
        *,
        record: Mapping[str, Any],
        on_fenced: Callable[[], None],
    ) -> None:
        self.store, self.lease, self.recorder = store, lease, recorder
        self.record = dict(record)
        self.on_fenced = on_fenced
        self.fenced = False
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._keeper: LeaseKeeper | None = None

    def start(self) -> None:
        self._dirty.set()
        loop = asyncio.get_running_loop()
        self._keeper = LeaseKeeper(
            self.store, self.lease, on_fenced=lambda: loop.call_soon_threadsafe(self._fence)
        )
        self._keeper.start()
        self._tasks = [
            asyncio.create_task(self._beat_forever(self._keeper)),
            asyncio.create_task(self._save_forever()),
        ]

    def checkpoint(self) -> None:
        """Asks for a checkpoint (after a turn); writes coalesce."""
        self._dirty.set()

    def _fence(self) -> None:
        if not self.fenced:
            self.fenced = True
            logger.warning("call %s taken over by another worker: leaving", self.lease.call_id)
            self.on_fenced()

    async def _beat_forever(self, keeper: LeaseKeeper) -> None:
        every = self.store.lease_seconds / 4
        while not self.fenced:
            keeper.beat()
            await asyncio.sleep(every)

    async def _save_forever(self) -> None:
        while not self.fenced:
            await self._dirty.wait()
            self._dirty.clear()
            body = {**self.record, "report": self.recorder.snapshot(), "saved_at": time.time()}
            try:
                if not await self.store.save(self.lease, body):
                    self._fence()
                    return
            except Exception as exc:
                logger.warning("checkpoint failed: %s", type(exc).__name__)
                await asyncio.sleep(0.5)
                self._dirty.set()

    async def close(self, *, release: bool) -> None:
        """Stops renewing; ``release`` (the call is over and reported) drops its keys."""
        if self._keeper is not None:
            self._keeper.stop()
            await asyncio.to_thread(self._keeper.join, self.store.lease_seconds * 2)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if release and not self.fenced:
            with contextlib.suppress(Exception):
                await self.store.release(self.lease)
        with contextlib.suppress(Exception):
            await self.store.aclose()


def fall_silent(session: Any) -> None:
    """A fenced job's agent says nothing more: its speech is cut and its output and input
    are switched off while the job shuts down (the room is left once the entrypoint is out:
    ``until_either``)."""
    with contextlib.suppress(Exception):
        session.output.set_audio_enabled(False)
        session.input.set_audio_enabled(False)
        session.interrupt(force=True)


async def until_either(*events: asyncio.Event) -> None:
    """Until one of the events is set (the call ended, or it was taken over)."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


async def guard_call(
    store: CallStore,
    *,
    call_id: str,
    job_id: str,
    epoch: int | None,
    recorder: CallRecorder,
    record: Mapping[str, Any],
    on_fenced: Callable[[], None],
) -> CallGuard | None:
    """Takes the call's lease and starts guarding it; None (and the job should leave) when
    the call is already another job's; a Redis outage runs the call unguarded."""
    try:
        lease = await store.acquire(call_id, job_id, epoch=epoch)
    except Fenced:  # the call is already another job's
        raise
    except Exception as exc:
        logger.warning(
            "no call checkpoint (Redis: %s): the call runs unguarded", type(exc).__name__
        )
        return None
    guard = CallGuard(store, lease, recorder, record=record, on_fenced=on_fenced)
    guard.start()
    return guard


async def report_orphan(settings: Settings, checkpoint: Mapping[str, Any]) -> None:
    """The caller left before any worker took the call over: the report (and the final
    status) go out from the checkpoint, saying the worker was lost."""
    dispatch = parse_dispatch(checkpoint.get("metadata"), source="checkpoint metadata")
    loaded = await load_call(open_cached(settings), dispatch, settings)
    report = checkpoint["report"]
    life = CallLifecycle(
        loaded.plan,
        settings=settings,
        call_id=str(report["call_id"]),
        room_name=str(checkpoint["room"]),
        secrets=loaded.secrets,
    )
    life.recorder.restore(report)
    life.recorder.add_event(
        "worker_lost", checkpoint_age_seconds=round(time.time() - float(checkpoint["saved_at"]), 1)
    )
    sender = webhook_sender(settings, life.metrics)
    try:
        await life.finish(sender, reason="worker lost; the caller had left before a takeover")
    finally:
        await sender.aclose()


def _caller_present(participants: Sequence[Any]) -> bool:
    return any(p.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT for p in participants)


async def take_over(
    settings: Settings, store: CallStore, lkapi: api.LiveKitAPI, call_id: str
) -> str:
    """Claims one lapsed call; returns what was done (for the log)."""
    epoch = await store.claim(call_id)
    if not epoch:
        return "claimed elsewhere"
    logger.info("claimed lapsed call %s at epoch %d", call_id, epoch, extra={"call_id": call_id})
    checkpoint = await store.load(call_id)
    if checkpoint is None:
        await store.forget(call_id)
        return "no checkpoint"
    room = str(checkpoint["room"])
    try:
        listing = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room))
        present = _caller_present(listing.participants)
    except api.TwirpError:
        present = False
    if present:
        return await _dispatch_until_taken(store, lkapi, checkpoint, call_id, epoch)
    await report_orphan(settings, checkpoint)
    await store.forget(call_id)
    return "caller gone: reported from the checkpoint"


async def _dispatch_until_taken(
    store: CallStore,
    lkapi: api.LiveKitAPI,
    checkpoint: Mapping[str, Any],
    call_id: str,
    epoch: int,
    *,
    every: float = REDISPATCH_SECONDS,
) -> str:
    """Dispatches the agent into the call's room at the claimed epoch, and again whenever
    ``every`` seconds pass with no worker assigned a job for any dispatch sent (a job
    assigned but slow to start, as on a busy host, is waited for, not doubled), until a
    job holds the lease at that epoch or the claim's grace runs out."""
    room = str(checkpoint["room"])
    metadata = json.loads(checkpoint.get("metadata") or "{}")
    metadata[RECOVERY_KEY] = {"callId": call_id, "epoch": epoch}
    request = api.CreateAgentDispatchRequest(
        agent_name=str(checkpoint["agent_name"]), room=room, metadata=json.dumps(metadata)
    )
    sent: list[str] = []
    give_up = time.monotonic() + CLAIM_GRACE_MS / 1000
    while time.monotonic() < give_up:
        if not await _assigned(lkapi, room, sent) and len(sent) < DISPATCHES:
            sent.append((await lkapi.agent_dispatch.create_dispatch(request)).id)
            logger.info(
                "takeover dispatch %s sent for call %s",
                sent[-1],
                call_id,
                extra={"call_id": call_id, "dispatch_id": sent[-1]},
            )
        deadline = time.monotonic() + every
        while time.monotonic() < deadline:
            held = await store.holder(call_id)
            if held is not None and held[0] >= epoch:
                return f"re-dispatched at epoch {epoch}, taken by job {held[1]} ({len(sent)} sent)"
            await asyncio.sleep(0.1)
    return f"re-dispatched at epoch {epoch}: no job took it ({len(sent)} sent)"


async def _assigned(lkapi: api.LiveKitAPI, room: str, dispatch_ids: Sequence[str]) -> bool:
    """Whether LiveKit has assigned a job (to some worker) for one of these dispatches; it
    lists a dispatch's job only once a worker accepted it."""
    if not dispatch_ids:
        return False
    try:
        listed = await lkapi.agent_dispatch.list_dispatch(room_name=room)
    except api.TwirpError:
        return False
    return any(d.id in dispatch_ids and len(d.state.jobs) > 0 for d in listed)


async def watch_calls(settings: Settings, every: float = 0.25) -> None:
    """Every worker process: claims calls whose lease lapsed (their worker died or hung),
    each takeover in its own task (it may have to dispatch more than once)."""
    store = call_store(settings)
    if store is None:
        return
    lkapi = api.LiveKitAPI(
        settings.livekit_url.replace("ws://", "http://").replace("wss://", "https://"),
        settings.livekit_api_key,
        settings.livekit_api_secret.get_secret_value(),
    )
    running: dict[str, asyncio.Task[str]] = {}

    def done(call_id: str, task: asyncio.Task[str]) -> None:
        running.pop(call_id, None)
        if task.cancelled():
            return
        if task.exception() is not None:
            logger.error("takeover of %s failed: %r", call_id, task.exception())
        else:
            logger.info("lapsed call %s: %s", call_id, task.result())

    try:
        while True:
            try:
                for call_id in await store.lapsed():
                    if call_id not in running:
                        task = asyncio.create_task(take_over(settings, store, lkapi, call_id))
                        running[call_id] = task
                        task.add_done_callback(functools.partial(done, call_id))
            except Exception:
                logger.exception("call watch failed")
                await asyncio.sleep(2.0)
            await asyncio.sleep(every)
    finally:
        for task in list(running.values()):
            task.cancel()
        await asyncio.gather(*running.values(), return_exceptions=True)
        await lkapi.aclose()
        await store.aclose()
