"""STT failover: the turn in flight is replayed to the next provider; a provider silent
while the caller speaks is a stall."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import stt

from pipelines.providers.failover import FailoverSTT, SwitchEvent, TurnBuffer
from tests.fakes import FakeSTT, make_chain


def frame(speech: bool, rate: int = 16000, ms: int = 20) -> rtc.AudioFrame:
    n = rate * ms // 1000
    amp = 8000 if speech else 0
    pcm = (amp * np.sin(np.arange(n) * 0.3)).astype(np.int16)
    return rtc.AudioFrame(pcm.tobytes(), rate, 1, n)


def test_turn_buffer_is_bounded_and_trims_what_a_transcript_covered() -> None:
    buf = TurnBuffer(max_seconds=1.0)
    for _ in range(75):  # 1.5 s
        buf.push(frame(True))
    assert buf.duration == pytest.approx(1.0) and buf.start == pytest.approx(0.5)
    buf.trim_until(1.2)
    assert buf.start == pytest.approx(1.2) and len(buf.frames()) == 15
    buf.clear()
    assert buf.frames() == [] and buf.position == pytest.approx(1.5)


def test_turn_buffer_keeps_a_short_lead_of_quiet_before_the_turn_and_all_of_it_after() -> None:
    buf = TurnBuffer(max_seconds=5.0, lead_seconds=0.3)
    for _ in range(100):  # 2 s of the caller listening
        buf.push(frame(False), speech=False)
    assert buf.duration == pytest.approx(0.3) and buf.start == pytest.approx(1.7)
    for speech in [True] * 25 + [False] * 50:  # 0.5 s of speech, then a 1 s pause
        buf.push(frame(speech), speech=speech)
    assert buf.duration == pytest.approx(0.3 + 0.5 + 1.0), "a pause inside the turn is kept"
    buf.trim_until(3.0)  # a final covered the speech and half the pause
    for _ in range(25):  # the caller listens again
        buf.push(frame(False), speech=False)
    assert buf.duration == pytest.approx(0.3) and buf.start == pytest.approx(3.7)


async def collect_stt(
    model: stt.STT[Any], frames: list[rtc.AudioFrame], *, fault: Callable[[], None]
) -> list[str]:
    stream = model.stream()
    finals: list[str] = []

    async def read() -> None:
        async for ev in stream:
            if ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT:
                finals.append(ev.alternatives[0].text)

    reader = asyncio.create_task(read())
    for i, f in enumerate(frames):
        if i == 20:
            fault()
        stream.push_frame(f)
        await asyncio.sleep(0.005)
    stream.end_input()
    await asyncio.wait_for(reader, 5)
    await stream.aclose()
    return finals


async def test_stt_turn_in_flight_is_replayed_to_the_next_provider() -> None:
    a, b = FakeSTT(), FakeSTT()
    events: list[SwitchEvent] = []
    model = FailoverSTT(make_chain("stt", [a, b], events=events))
    frames = [frame(False)] * 5 + [frame(True)] * 40 + [frame(False)] * 5
    finals = await collect_stt(model, frames, fault=lambda: a.update_options(fail_after_frames=0))
    # b heard the whole turn: the 15 speech frames a was sent before failing, then the rest
    assert finals == ["40"]
    assert [(e.from_provider, e.to_provider, e.reason) for e in events] == [
        ("v0:m", "v1:m", "connection")
    ]


async def test_stt_provider_silent_while_caller_speaks_is_a_stall() -> None:
    a, b = FakeSTT(), FakeSTT()
    events: list[SwitchEvent] = []
    model = FailoverSTT(make_chain("stt", [a, b], deadline=0.3, events=events))
    frames = [frame(True)] * 60 + [frame(False)] * 5
    finals = await collect_stt(model, frames, fault=lambda: a.update_options(stall_after_frames=0))
    assert finals == ["60"]
    assert events[0].reason == "stall"
