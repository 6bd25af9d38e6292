"""Turns a ``SessionPlan`` into a started LiveKit session. Nothing is decided here.

``assemble_call`` builds the whole call without I/O: the failover chain per layer, the
``AgentSession``, the AMD router, the agent with its tools, the turn publisher;
``start_call`` starts it in the room, installs the output chain (time-stretch, noise bed)
and the recording's taps, and greets when the plan says so.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from livekit import rtc
from livekit.agents import Agent, AgentSession, ModelSettings, llm
from livekit.agents.types import FlushSentinel
from livekit.agents.voice import room_io
from livekit.agents.voice.events import ConversationItemAddedEvent
from livekit.agents.voice.turn import TurnHandlingOptions

from pipelines.audio import (
    DEFAULT_SAMPLE_RATE,
    TapInput,
    WebRTCVAD,
    install_output_chain,
    load_bed,
)
from pipelines.providers import ProviderSpec
from pipelines.providers.failover import (
    Deadlines,
    SwitchEvent,
    build_failover_layers,
    default_health,
)
from worker.call.amd_routing import AMDRouter
from worker.call.first_message import PreparedSpeech
from worker.call.lifecycle import CallLifecycle, replaced_text
from worker.call.recording import Recording, call_recording
from worker.plan import ProviderChoice, SessionPlan

logger = logging.getLogger(__name__)


def provider_spec(layer: str, choice: ProviderChoice, plan: SessionPlan) -> ProviderSpec:
    return ProviderSpec(
        layer=layer,
        vendor=choice.vendor,
        model=choice.model,
        base_url=choice.base_url,
        api_key=choice.api_key.get_secret_value() if choice.api_key else None,
        language=plan.language,
        voice=choice.voice if layer == "tts" else plan.speech.voice,
        speaking_rate=plan.speech.speaking_rate,
        temperature=plan.llm.temperature,
        max_tokens=plan.llm.max_tokens,
        extra_body=plan.llm.extra_body if choice.vendor == "custom" else None,
    )


def build_vad(plan: SessionPlan) -> WebRTCVAD:
    e = plan.endpointing
    return WebRTCVAD.load(
        aggressiveness=e.vad_aggressiveness,
        min_speech_duration=e.min_speech_duration,
        min_silence_duration=e.min_silence_duration,
    )


CALLER_SAMPLE_RATE = 16000
"""The rate the caller's audio is decoded to: what VAD and STT consume, so neither resamples
each frame again (RoomIO's default is 24 kHz); a phone leg carries 8-16 kHz anyway."""


def room_options() -> room_io.RoomOptions:
    """RoomIO options for a call: caller audio at ``CALLER_SAMPLE_RATE``."""
    return room_io.RoomOptions(
        audio_input=room_io.AudioInputOptions(sample_rate=CALLER_SAMPLE_RATE)
    )


def turn_handling(plan: SessionPlan) -> TurnHandlingOptions:
    e = plan.endpointing
    return {
        "turn_detection": "stt" if e.turn_detection == "stt" else "vad",
        "endpointing": {"mode": "fixed", "min_delay": e.min_delay, "max_delay": e.max_delay},
        "interruption": {
            "enabled": e.allow_interruptions,
            "mode": "vad",
            "min_duration": e.min_interruption_duration,
        },
        # The reply (LLM and TTS) is prepared on the STT final while the response delay
        # runs; it plays once the turn is confirmed, or is discarded if the caller goes on.
        "preemptive_generation": {"enabled": True, "preemptive_tts": True},
    }


class VoiceAgent(Agent):
    """The call's agent: the plan's prompt, tools, and a bounded conversation window."""

    def __init__(
        self,
        plan: SessionPlan,
        tools: Sequence[llm.Tool] = (),
        *,
        reply_gate: asyncio.Event | None = None,
        history: llm.ChatContext | None = None,
    ) -> None:
        super().__init__(instructions=plan.prompt, tools=list(tools), chat_ctx=history)
        self._context_window = plan.llm.context_window
        self._replacements = plan.text_replacements
        self._reply_gate = reply_gate

    async def on_user_turn_completed(
        self, turn_ctx: llm.ChatContext, new_message: llm.ChatMessage
    ) -> None:
        # Answering-machine detection still listening: nobody is to be answered yet.
        if self._reply_gate is not None and not self._reply_gate.is_set():
            raise llm.StopResponse()

    async def tts_node(
        self, text: AsyncIterable[str], model_settings: ModelSettings
    ) -> AsyncIterable[rtc.AudioFrame]:
        if self._replacements:
            text = replaced_text(text, self._replacements)
        async for frame in Agent.default.tts_node(self, text, model_settings):
            yield frame

    async def llm_node(
        self,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        model_settings: ModelSettings,
    ) -> AsyncIterable[llm.ChatChunk | str | FlushSentinel]:
        # context_window counts turns; a turn is a caller message plus the agent's reply.
        window = chat_ctx.copy().truncate(max_items=2 * self._context_window)
        async for chunk in Agent.default.llm_node(self, window, tools, model_settings):
            yield chunk


SOLE_PROVIDER_DEADLINE = 20.0
"""Stall deadline of a layer with one allowed provider: with nowhere to fail over to, a
slow answer beats no answer, so only a long silence counts as down."""


def build_layers(plan: SessionPlan, on_switch: Callable[[SwitchEvent], None]) -> dict[str, Any]:
    """The failover chain of each layer: the plan's ranked allowed set. When every
    provider of a layer is down the chain raises, and the call ends with an apology."""
    specs: dict[str, Sequence[ProviderSpec]] = {
        layer: [provider_spec(layer, choice, plan) for choice in chain]
        for layer, chain in plan.providers.items()
    }
    t = plan.timeouts

    def deadline(layer: str, seconds: float) -> float:
        return seconds if len(specs[layer]) > 1 else max(seconds, SOLE_PROVIDER_DEADLINE)

    return build_failover_layers(
        specs,
        deadlines=Deadlines(
            stt=deadline("stt", t.stt_deadline),
            llm=deadline("llm", t.llm_first_token_deadline),
            tts=deadline("tts", t.tts_first_byte_deadline),
        ),
        health=default_health(),
        on_switch=on_switch,
        return_to_primary=t.return_to_primary,
        vad=build_vad(plan),
    )


def build_session(plan: SessionPlan, *, layers: dict[str, Any]) -> AgentSession[Any]:
    """An ``AgentSession`` for ``plan`` over ``layers``, the STT/LLM/TTS failover chains of
    ``build_layers``."""
    return AgentSession(
        stt=layers["stt"],
        llm=layers["llm"],
        tts=layers["tts"],
        vad=build_vad(plan),
        turn_handling=turn_handling(plan),
        user_away_timeout=plan.timeouts.inactivity,
    )


@dataclass
class Call:
    """One assembled call: what ``start_call`` starts and the entrypoint waits on."""

    plan: SessionPlan
    session: AgentSession[Any]
    agent: VoiceAgent
    router: AMDRouter | None
    """Answering-machine routing (outbound calls whose plan has AMD), else None."""
    recording: Recording | None = None
    """The call's audio recording when the plan says record (``start_call`` taps it in)."""
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the session closes: the call is over."""
    record_event: Callable[..., object] | None = None
    """The report's ``add_event`` (the first message's timing goes there)."""


def assemble_call(
    plan: SessionPlan,
    life: CallLifecycle,
    room: rtc.Room,
    tools: Sequence[llm.Tool],
    *,
    history: llm.ChatContext | None = None,
) -> Call:
    """Builds every LiveKit object of the call and hooks the lifecycle to the session;
    ``history`` is the conversation so far of a call taken over from a lost worker."""
    layers = build_layers(
        plan,
        on_switch=lambda ev: life.record_switch(
            ev.layer, ev.from_provider, ev.to_provider, ev.reason, ev.switch_seconds
        ),
    )
    session = build_session(plan, layers=layers)
    life.attach(session)
    router = AMDRouter(plan, plan.amd, life) if plan.amd is not None else None
    agent = VoiceAgent(
        plan, tools, reply_gate=router.reply_gate if router else None, history=history
    )
    call = Call(
        plan=plan,
        session=session,
        agent=agent,
        router=router,
        recording=call_recording(life),
        record_event=life.recorder.add_event,
    )
    session.on("close", lambda _ev: call.closed.set())
    publish_turns(session, room)
    return call


async def start_call(
    call: Call, room: rtc.Room, *, answered: Callable[[], Awaitable[bool]] | None = None
) -> None:
    """Starts the session in the room and greets, unless AMD holds the greeting back; a
    phone call still ringing (``answered``) greets once answered, or not at all."""
    plan, session = call.plan, call.session
    if plan.noise_bed is not None:
        # Decoding a clip takes a while; once per process, and never on the event loop.
        await asyncio.to_thread(load_bed, plan.noise_bed.preset, DEFAULT_SAMPLE_RATE)
    await session.start(agent=call.agent, room=room, room_options=room_options())
    recording = call.recording
    if recording is not None and session.input.audio is not None:
        # Both taps only queue a copy of each frame: the writer thread does the rest.
        recording.start(asyncio.get_running_loop().time())
        session.input.audio = TapInput(session.input.audio, recording.caller_tap)
    # After start (RoomIO has published the track), before the first word is spoken.
    install_output_chain(
        session.output,
        playback_rate=plan.speech.playback_rate,
        noise_preset=plan.noise_bed.preset if plan.noise_bed else None,
        noise_volume=plan.noise_bed.volume if plan.noise_bed else None,
        tap=recording.agent_tap if recording is not None else None,
    )
    logger.info(
        "call started",
        extra={
            "providers": {layer: [c.id for c in chain] for layer, chain in plan.providers.items()}
        },
    )
    greet_now = call.router is None or call.router.reply_gate.is_set()
    interruptible = plan.endpointing.allow_interruptions
    if not (plan.first_message and greet_now):
        return
    if answered is None:
        session.say(plan.first_message, allow_interruptions=interruptible)
        return
    # a phone still ringing: the greeting's audio is made meanwhile, played at the answer
    greeting = PreparedSpeech(plan.first_message, session, call.agent, call.record_event)
    greeting.start()
    if await answered():
        greeting.say(plan.first_message, allow_interruptions=interruptible)
    else:
        await greeting.aclose()


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
