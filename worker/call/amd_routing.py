"""Answering machine detection routing for outbound calls (reference ``003_*``).

The callee's first seconds go to ``pipelines.amd.AMDDetector`` (audio and STT results as
they arrive); its verdict picks the plan's action for that category:

- ``continue``: open the reply gate and greet (unless the plan greeted already);
- ``voicemail``: wait for the beep or the end of the greeting, leave the message, hang up;
- ``hangup``: end the call without a word;
- ``navigate``: IVR: let the LLM press keys with ``send_dtmf``, bounded attempts.

Until the verdict the agent says nothing to the callee's words: a voicemail greeting must
not get LLM replies. The one exception is the first message: once the greeting looks like
a human's (``pipelines.amd.ProvisionalRule``, ~0.3 s after a short greeting ends) it starts
at once while detection listens on; more of the greeting withdraws that decision and
stops it (it starts over on ``continue``), and a verdict other than ``continue`` cuts it
off before its own action. The ``amd`` report event's ``provisional`` says when, whether
it was withdrawn or overturned, and how long the callee heard the message before a stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import AgentSession, llm
from livekit.agents.voice.events import ConversationItemAddedEvent, UserInputTranscribedEvent
from livekit.agents.voice.speech_handle import SpeechHandle

from pipelines.amd import PROVISIONAL_SILENCE, AMDDetector, Provisional, Verdict
from pipelines.audio import int16_to_float
from pipelines.providers.amd_transcripts import AMDTranscripts
from pipelines.types import AMD_CATEGORIES
from worker.call.first_message import PreparedSpeech
from worker.call.ivr_memory import IVRMemory, path_that_reached_a_person, replay
from worker.call.lifecycle import CallLifecycle
from worker.plan import AMDPlan, SessionPlan

logger = logging.getLogger(__name__)

AMD_RATE = 16000
CALL_ACTIVE_TIMEOUT = 60.0
VOICEMAIL_WAIT_SECONDS = 10.0
"""After a voicemail verdict, the longest wait for the beep or the greeting's end."""
GREETING_END_SILENCE = 1.0
TRANSCRIPT_WAIT = 1.25
"""Seconds past the detector's end silence that a greeting longer than a human's waits for
the call STT's final transcript of it (``AMDClassifier.transcript_wait``): the session's
STT finalises a segment after its own endpointing and compute, often after the silence."""
AFTER_BEEP_SECONDS = 0.15
"""Margin after the beep stops before speaking: the recording has started by then."""
VOICEMAIL_INSTRUCTIONS = (
    "You reached a voicemail. Leave a brief message (two sentences at most) on behalf of "
    "the caller described in your instructions, then stop."
)
NAVIGATE_INSTRUCTIONS = (
    "You reached an automated phone menu. Do not talk to it. Use the send_dtmf tool to "
    "press the key that gets closest to a person or to your goal."
)
TIEBREAK_PROMPT = (
    "Classify who answered a phone call from the first words heard. Reply with exactly one "
    "of: human, machine-vm, machine-ivr, machine-unavailable.\nHeard: "
)


async def wait_call_active(participant: rtc.RemoteParticipant, timeout: float) -> None:
    """A SIP callee is listening only once ``sip.callStatus`` is ``active``; others at once."""
    if participant.kind != rtc.ParticipantKind.PARTICIPANT_KIND_SIP:
        return
    deadline = time.monotonic() + timeout
    while participant.attributes.get("sip.callStatus") not in ("active", None):
        if time.monotonic() > deadline:
            raise TimeoutError("callee never answered (sip.callStatus)")
        await asyncio.sleep(0.05)


def llm_tiebreaker(model: llm.LLM[Any]) -> Any:
    """Asks the plan's LLM chain to settle an ambiguous greeting; ``None`` if it cannot."""

    async def tiebreak(transcript: str) -> str | None:
        ctx = llm.ChatContext()
        ctx.add_message(role="user", content=TIEBREAK_PROMPT + transcript)
        text = ""
        async with model.chat(chat_ctx=ctx) as stream:
            async for chunk in stream:
                if chunk.delta and chunk.delta.content:
                    text += chunk.delta.content
        answer = text.strip().lower()
        return next((c for c in AMD_CATEGORIES if c in answer), None)

    return tiebreak


@dataclass(frozen=True)
class IVRRecall:
    """Where a call's IVR path is remembered and how its keys are pressed."""

    memory: IVRMemory
    agent_id: str
    number: str
    publish: Callable[[int, str], Awaitable[None]]

    async def recall(self) -> str | None:
        return await self.memory.recall(self.agent_id, self.number)


class AMDRouter:
    """Runs detection for one call and carries out the verdict's action."""

    def __init__(self, plan: SessionPlan, amd: AMDPlan, life: CallLifecycle) -> None:
        self.plan = plan
        self.amd = amd
        self.life = life
        self.reply_gate = asyncio.Event()
        """Set once the agent may answer the callee (verdict ``continue`` or ``navigate``)."""
        if amd.greet_immediately:
            self.reply_gate.set()
        self.verdict: Verdict | None = None
        self.notify: Callable[..., Coroutine[Any, Any, bool]] | None = None
        """``send_status(event_type, status, metadata=)`` for the verdict's progress webhook
        (``call.amd``), set by the job."""
        self._notified: asyncio.Task[bool] | None = None
        self.ivr: IVRRecall | None = None
        """The IVR memory of the number called (``ivr_memory_enabled``), set by the job."""
        self._replayed: str | None = None
        self._greeting: PreparedSpeech | None = None
        """The first message, synthesized while detection listens (said on ``continue``)."""
        # the offline call STT finalises too late for the detector: it gets transcripts of
        # its own then (a vendor's streaming STT sends interims as the callee speaks); their
        # two models load from the job's start, while the room connects and the phone rings
        self._own = AMDTranscripts(lambda _text, _final: None, enabled=self._offline_stt())
        with contextlib.suppress(RuntimeError):  # no running loop: started on first use
            self._own.start()
        self._provisional: Provisional | None = None
        self.provisional: dict[str, Any] = {}
        """The ``amd`` event's ``provisional`` field (empty without an early decision)."""
        self._early: SpeechHandle | None = None
        """The first message said on the provisional decision, before the verdict."""
        self._early_played = 0.0

    async def run(self, session: AgentSession[Any], participant: rtc.RemoteParticipant) -> None:
        # The stream opens while the phone still rings, so its frames flow from the answer on
        # (one opened at the answer got its first frame 0.75 s late over livekit-sip: a short
        # "Hello." was lost whole). What it carries before the answer (a ringing tone) is
        # not the callee and is dropped.
        stream = rtc.AudioStream.from_participant(
            participant=participant,
            track_source=rtc.TrackSource.SOURCE_MICROPHONE,
            sample_rate=AMD_RATE,
            num_channels=1,
        )
        detector: AMDDetector | None = None
        own = self._own

        def on_own_transcript(text: str, is_final: bool) -> None:
            if detector is not None:
                logger.debug("amd own transcript (final %s): %r", is_final, text)
                detector.push_transcript(text, is_final=is_final)

        own.on_result = on_own_transcript

        def on_transcript(ev: UserInputTranscribedEvent) -> None:
            if detector is not None and own.failed:
                logger.debug(
                    "amd transcript at %.2f s (final %s): %r",
                    detector.core.now,
                    ev.is_final,
                    ev.transcript,
                )
                detector.push_transcript(ev.transcript, is_final=ev.is_final)

        async def feed() -> None:
            async for ev in stream:
                if detector is not None:
                    detector.push_frame(ev.frame)
                    own.push(int16_to_float(np.frombuffer(ev.frame.data, dtype=np.int16)))

        feeder = asyncio.create_task(feed())
        try:
            await wait_call_active(participant, CALL_ACTIVE_TIMEOUT)
        except BaseException:
            feeder.cancel()
            await stream.aclose()
            raise
        if self.plan.first_message and not self.amd.greet_immediately:
            self._greeting = PreparedSpeech(
                self.plan.first_message,
                session,
                session.current_agent,
                self.life.recorder.add_event,
            )
            self._greeting.start()  # made while the callee says who they are
        early = self._greeting is not None and self.amd.actions["human"] == "continue"
        detector = AMDDetector(
            AMD_RATE,
            timeout_seconds=self.amd.timeout_seconds,
            provisional_silence=PROVISIONAL_SILENCE if early else None,
            on_provisional=self._on_provisional,
            transcript_wait=TRANSCRIPT_WAIT,
            tiebreaker=llm_tiebreaker(session.llm)
            if self.amd.llm_tiebreaker and isinstance(session.llm, llm.LLM)
            else None,
        )
        session.on("user_input_transcribed", on_transcript)
        try:
            verdict = await detector.wait()
            self.verdict = verdict
            action = self.amd.actions[verdict.category]
            self.provisional = self._settle_provisional(verdict, action)
            self.life.recorder.add_event(
                "amd", action=action, **verdict.to_json(), **self.provisional
            )
            self.life.metrics.amd_verdicts.labels(category=verdict.category).inc()
            if self.notify is not None:  # 002's progress webhooks: the verdict as it happens
                self._notified = asyncio.create_task(
                    self.notify(
                        "call.amd",
                        verdict.category,
                        metadata={"action": action, **verdict.to_json()},
                    )
                )
            logger.info("amd verdict %s -> %s (%s)", verdict.category, action, verdict.reason)
            if action == "voicemail":
                await self._wait_for_beep_or_silence(detector)
            feeder.cancel()
            await self._act(action, session)
        finally:
            session.off("user_input_transcribed", on_transcript)
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
            await stream.aclose()
            await detector.aclose()
            if own.requests or not own.failed:
                self.life.recorder.add_event(
                    "amd_transcripts",
                    requests=own.requests,
                    failed=own.failed,
                    head_start=own.head_start,
                    heard=own.heard,
                )
            await self.aclose()
            if self._greeting is not None:
                await self._greeting.aclose()

    async def aclose(self) -> None:
        """Stops the detector's own transcripts (idempotent; ``run`` calls it too)."""
        await self._own.aclose()

    def _offline_stt(self) -> bool:
        chain = self.plan.providers.get("stt", ())
        return bool(chain) and chain[0].vendor == "local"

    def _on_provisional(self, provisional: Provisional) -> None:
        """The greeting looks human: the first message starts now (the verdict may cut it);
        withdrawn: it stops, to start over if the verdict is ``continue``."""
        if self._greeting is None or self.plan.first_message is None:
            return
        self._provisional = provisional
        if provisional.withdrawn_at is not None:
            played = self._stop_early()
            self._greeting.rewind()
            self.life.recorder.add_event(
                "amd_provisional_withdrawn",
                withdrawn_at=provisional.withdrawn_at,
                played_seconds=round(played, 3),
            )
            logger.info("amd provisional human withdrawn after %.2f s played", played)
            return
        self.life.recorder.add_event("amd_provisional", category="human", **provisional.to_json())
        logger.info("amd provisional human: %s", provisional.reason)
        try:
            self._early = self._greeting.say(self.plan.first_message, allow_interruptions=False)
        except Exception as exc:  # the verdict still greets as usual
            logger.warning("first message not started early: %s", type(exc).__name__)

    def _stop_early(self) -> float:
        """Interrupts the first message started early; seconds of it played (0 if none)."""
        if self._early is None:
            return 0.0
        self._early.interrupt(force=True)
        self._early = None
        first_frame = self._greeting.first_frame_at if self._greeting else None
        played = max(0.0, time.time() - first_frame) if first_frame is not None else 0.0
        self._early_played += played
        return played

    def _settle_provisional(self, verdict: Verdict, action: str) -> dict[str, Any]:
        """At the verdict: cuts off a first message started early unless the action is
        ``continue``; returns the ``amd`` event's ``provisional`` field (empty without)."""
        if self._provisional is None:
            return {}
        cut = action != "continue" and self._early is not None
        if cut:
            played = self._stop_early()
            logger.info("amd %s overturned the provisional human after %.2f s", action, played)
        return {
            "provisional": {
                **self._provisional.to_json(),
                "overturned": verdict.category != "human",
                "cut": cut,
                "played_seconds": round(self._early_played, 3),
            }
        }

    async def _wait_for_beep_or_silence(self, detector: AMDDetector) -> None:
        deadline = time.monotonic() + VOICEMAIL_WAIT_SECONDS
        core = detector.core
        while time.monotonic() < deadline:
            if core.beep_over:
                await asyncio.sleep(AFTER_BEEP_SECONDS)
                return
            if core.beep_at is None and core.silence_seconds >= GREETING_END_SILENCE:
                return
            await asyncio.sleep(0.05)

    async def _act(self, action: str, session: AgentSession[Any]) -> None:
        if action == "continue":
            self.reply_gate.set()
            # (a first message started on the provisional decision is playing already)
            if self.plan.first_message and not self.amd.greet_immediately and self._early is None:
                # Not interruptible: the verdict usually lands before LiveKit's VAD has
                # seen the end of the callee's "hello", and an interruptible greeting
                # would be paused, then dropped when they say "hello?" again.
                if self._greeting is not None:
                    self._greeting.say(self.plan.first_message, allow_interruptions=False)
                else:
                    session.say(self.plan.first_message, allow_interruptions=False)
        elif action == "voicemail":
            if self.amd.voicemail_message:
                handle = session.say(self.amd.voicemail_message, allow_interruptions=False)
            else:
                handle = session.generate_reply(
                    instructions=VOICEMAIL_INSTRUCTIONS, allow_interruptions=False
                )
            await handle.wait_for_playout()
            self.life.end_reason = "amd: voicemail left"
            self.life.end_session(session, drain=True, tail=True)
        elif action == "hangup":
            self.life.end_reason = f"amd: {self.verdict.category if self.verdict else 'machine'}"
            self.life.end_session(session, drain=False, tail=False)
        elif action == "navigate":
            self.reply_gate.set()
            self._bound_navigation(session)
            path = await self.ivr.recall() if self.ivr is not None else None
            if path and self.ivr is not None:
                # the menu was navigated to a person before: press the same keys
                self._replayed = path
                self.life.recorder.add_event("ivr_memory", replayed=path)
                await replay(path, self.ivr.publish, self.life.recorder.add_event)
            else:
                session.generate_reply(instructions=NAVIGATE_INSTRUCTIONS)

    async def learn(self) -> None:
        """At the end of a navigated call: remember the key path that reached a person,
        forget a replayed one that did not. Never raises."""
        ivr = self.ivr
        if (
            ivr is None
            or self.verdict is None
            or self.amd.actions[self.verdict.category] != ("navigate")
        ):
            return
        recorder = self.life.recorder
        path = path_that_reached_a_person(
            recorder.events("dtmf"), recorder.transcript(), self.life.end_reason
        )
        try:
            if path:
                await ivr.memory.remember(ivr.agent_id, ivr.number, path)
                recorder.add_event("ivr_memory", learned=path)
            elif self._replayed:
                await ivr.memory.forget(ivr.agent_id, ivr.number)
                recorder.add_event("ivr_memory", forgot=self._replayed)
        except Exception as exc:
            logger.warning("ivr memory not updated: %s", type(exc).__name__)

    def _bound_navigation(self, session: AgentSession[Any]) -> None:
        turns = 0

        def on_item(ev: ConversationItemAddedEvent) -> None:
            nonlocal turns
            if isinstance(ev.item, llm.ChatMessage) and ev.item.role == "assistant":
                turns += 1
                if turns > self.amd.max_navigation_attempts:
                    session.off("conversation_item_added", on_item)
                    self.life.end_reason = "amd: navigation attempts exhausted"
                    session.shutdown(drain=True)

        session.on("conversation_item_added", on_item)
