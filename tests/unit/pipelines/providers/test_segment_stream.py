"""``SegmentStreamAdapter``: a final per VAD segment, interims only while a long one is open."""

from __future__ import annotations

import asyncio
from typing import Never

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import APIConnectOptions, stt, utils
from livekit.agents.language import LanguageCode
from livekit.agents.types import NOT_GIVEN, NotGivenOr

from pipelines.audio import Float32Array, WebRTCVAD, float_to_int16
from pipelines.providers.segment_stream import SegmentStreamAdapter

RATE = 16000


class LengthSTT(stt.STT[Never]):
    """Batch STT whose text is the length of the audio it was given, in tenths of a second."""

    def __init__(self) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self.calls = 0

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        self.calls += 1
        frame = rtc.combine_audio_frames(buffer)
        tenths = round(10 * frame.samples_per_channel / frame.sample_rate)
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            alternatives=[stt.SpeechData(language=LanguageCode("en"), text=str(tenths))],
        )


def buzz(seconds: float) -> Float32Array:
    """Syllables: a harmonic vowel with a gliding pitch, four beats a second (a steady
    tone would be learnt as noise by the VAD's adaptation)."""
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = 140.0 + 30.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    k = np.arange(1, 8)[:, None]
    vowel = (np.sin(k * phase) / k).sum(axis=0)
    beats = 0.6 + 0.4 * np.sin(2 * np.pi * 4.0 * t)
    return (0.1 * vowel * beats).astype(np.float32)


def silence(seconds: float) -> Float32Array:
    return np.zeros(int(seconds * RATE), dtype=np.float32)


async def run(audio: Float32Array, every: float) -> tuple[list[stt.SpeechEvent], LengthSTT]:
    batch = LengthSTT()
    adapter = SegmentStreamAdapter(stt=batch, vad=WebRTCVAD.load(), interim_every=every)
    stream = adapter.stream()
    pcm = float_to_int16(audio)
    n = RATE // 50
    events: list[stt.SpeechEvent] = []

    async def read() -> None:
        async for ev in stream:
            events.append(ev)

    reader = asyncio.create_task(read())
    for i in range(0, len(pcm), n):
        stream.push_frame(rtc.AudioFrame(pcm[i : i + n].tobytes(), RATE, 1, len(pcm[i : i + n])))
        await asyncio.sleep(0.001)  # the loop runs interims as a call's would
    stream.end_input()
    await asyncio.wait_for(reader, 10)
    await stream.aclose()
    return events, batch


def kinds(events: list[stt.SpeechEvent]) -> list[str]:
    short = {
        stt.SpeechEventType.START_OF_SPEECH: "start",
        stt.SpeechEventType.INTERIM_TRANSCRIPT: "interim",
        stt.SpeechEventType.END_OF_SPEECH: "end",
        stt.SpeechEventType.FINAL_TRANSCRIPT: "final",
    }
    return [short[e.type] for e in events if e.type in short]


async def test_a_long_segment_shows_growing_interims_then_one_final() -> None:
    audio = np.concatenate([silence(0.5), buzz(7.0), silence(1.5), buzz(1.0), silence(1.5)])
    events, _ = await run(audio, every=2.0)
    got = kinds(events)
    # three interims in the long segment (at ~2, ~4, ~6 s of it), none in the short one
    long_turn = ["start", "interim", "interim", "interim", "end", "final"]
    assert got == [*long_turn, "start", "end", "final"], got
    texts = [int(e.alternatives[0].text) for e in events if e.alternatives]
    interims, final_long, final_short = texts[:3], texts[3], texts[4]
    assert interims == sorted(interims) and interims[0] >= 20 and interims[-1] < final_long
    assert 70 <= final_long <= 80, final_long  # the whole segment, transcribed at once
    assert 10 <= final_short <= 20, final_short


async def test_a_segment_shorter_than_the_interval_has_no_interim() -> None:
    events, batch = await run(np.concatenate([silence(0.5), buzz(2.0), silence(1.5)]), every=3.0)
    assert kinds(events) == ["start", "end", "final"]
    assert batch.calls == 1


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interim_every"):
        SegmentStreamAdapter(stt=LengthSTT(), vad=WebRTCVAD.load(), interim_every=0.0)
