"""PreparedSpeech on a session and agent that record what they are asked: the first message's
audio is made ahead through the agent's tts_node, played by ``say`` when ready or still
coming, and a failed or different text falls back to a plain ``say``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from types import SimpleNamespace
from typing import Any

from livekit import rtc
from livekit.agents.voice.events import AgentStateChangedEvent

from worker.call.first_message import PreparedSpeech, warm_first_speech

RATE = 16000


def frame(i: int) -> rtc.AudioFrame:
    return rtc.AudioFrame(bytes([i]) * 640, RATE, 1, 320)


class Agent:
    def __init__(self, frames: int, *, gate: asyncio.Event | None = None, fail: bool = False):
        self.frames, self.gate, self.fail = frames, gate, fail
        self.texts: list[str] = []

    async def tts_node(
        self, text: AsyncIterable[str], _settings: Any
    ) -> AsyncIterator[rtc.AudioFrame]:
        self.texts.append("".join([t async for t in text]))
        if self.fail:
            raise RuntimeError("tts down")
        for i in range(self.frames):
            if i == 1 and self.gate is not None:
                await self.gate.wait()
            yield frame(i)


class Session(rtc.EventEmitter[str]):
    def __init__(self) -> None:
        super().__init__()
        self.options = SimpleNamespace(tts_text_transforms=None)
        self.said: list[tuple[str, AsyncIterable[rtc.AudioFrame] | None, bool]] = []

    def say(self, text: str, *, audio: Any = None, allow_interruptions: bool) -> object:
        self.said.append((text, audio, allow_interruptions))
        return object()

    def speaking(self) -> None:
        self.emit(
            "agent_state_changed",
            AgentStateChangedEvent(old_state="thinking", new_state="speaking"),
        )


async def played(audio: AsyncIterable[rtc.AudioFrame]) -> list[int]:
    return [f.data.tobytes()[0] async for f in audio]


async def test_audio_made_ahead_is_what_say_plays_and_the_timing_is_recorded() -> None:
    session, agent, events = Session(), Agent(3), []
    greeting = PreparedSpeech("Hi there.", session, agent, lambda t, **d: events.append((t, d)))  # type: ignore[arg-type]
    greeting.start()
    for _ in range(500):
        if greeting.ready:
            break
        await asyncio.sleep(0.01)
    assert greeting.ready and agent.texts == ["Hi there."]
    greeting.say("Hi there.", allow_interruptions=False)
    ((text, audio, interruptible),) = session.said
    assert (text, interruptible) == ("Hi there.", False) and audio is not None
    assert await played(audio) == [0, 1, 2]
    session.speaking()
    ((kind, data),) = events
    assert kind == "first_message" and data["prepared"] and data["ready_when_said"]
    assert data["audio_seconds"] == 0.06 and data["first_frame_after_say"] >= 0
    # said once: a second say synthesizes again
    greeting.say("Hi there.", allow_interruptions=True)
    assert session.said[1][1] is None
    await greeting.aclose()


async def test_frames_still_coming_stream_on_and_a_failure_falls_back() -> None:
    gate = asyncio.Event()
    session, agent = Session(), Agent(3, gate=gate)
    greeting = PreparedSpeech("Hello.", session, agent)  # type: ignore[arg-type]
    greeting.start()
    while not agent.texts:  # the synthesis has started (after its warm-up thread)
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.01)
    greeting.say("Hello.", allow_interruptions=True)
    audio = session.said[0][1]
    assert audio is not None and not greeting.ready
    reading = asyncio.create_task(played(audio))
    await asyncio.sleep(0.01)
    assert not reading.done()  # waits for the TTS, not an early end
    gate.set()
    assert await asyncio.wait_for(reading, 1.0) == [0, 1, 2]
    await greeting.aclose()
    # a failed synthesis, or another text, is said the usual way
    session, agent = Session(), Agent(3, fail=True)
    failed = PreparedSpeech("Hello.", session, agent)  # type: ignore[arg-type]
    failed.start()
    while not failed.ready and not agent.texts:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.01)
    failed.say("Hello.", allow_interruptions=True)
    other = PreparedSpeech("Hello.", session, Agent(1))  # type: ignore[arg-type]
    other.start()
    while not other.ready:
        await asyncio.sleep(0.01)
    other.say("Hello, Jordan.", allow_interruptions=True)
    assert [(t, a) for t, a, _ in session.said] == [("Hello.", None), ("Hello, Jordan.", None)]
    await other.aclose()


def test_the_warm_up_builds_what_the_first_spoken_word_would_build_on_the_loop() -> None:
    from livekit.agents.tokenize import _basic_hyphenator

    _basic_hyphenator._get_hyphenator.cache_clear()
    warm_first_speech()
    assert _basic_hyphenator._get_hyphenator.cache_info().currsize == 1
