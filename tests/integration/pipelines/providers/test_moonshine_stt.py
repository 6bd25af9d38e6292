"""Moonshine as the call STT: one segment through the provider (and its child recycled),
and a caller's turns through the worker's STT chain for the fixture agent's plan."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import stt

from pipelines.audio import Audio, float_to_int16, read_wav, resample
from pipelines.engines import EspeakEngine
from pipelines.providers import Catalog, MoonshineSTT, ProviderSpec, build
from worker.call.session import build_layers
from worker.config import parse_agent, parse_dispatch
from worker.plan import resolve
from worker.settings import Settings

FIXTURE = Path(__file__).resolve().parents[4] / "fixtures" / "audio" / "booking_two_turns.wav"
START, END = stt.SpeechEventType.START_OF_SPEECH, stt.SpeechEventType.END_OF_SPEECH
INTERIM, FINAL = stt.SpeechEventType.INTERIM_TRANSCRIPT, stt.SpeechEventType.FINAL_TRANSCRIPT
LONG_TURN = (
    "hello I would like to book a cleaning appointment for my daughter and me "
    "sometime next week in the morning because we both work in the afternoon"
)
FRONT_DESK = "agent_01JC0FRNTDESK0000000000000"
TEXT = "my name is sam carter and next tuesday morning works for me"


def _frames(audio: Audio, rate: int = 16000, frame_ms: int = 20) -> list[rtc.AudioFrame]:
    pcm = float_to_int16(resample(audio.samples, audio.sample_rate, rate))
    n = rate * frame_ms // 1000
    return [
        rtc.AudioFrame(pcm[i : i + n].tobytes(), rate, 1, len(pcm[i : i + n]))
        for i in range(0, len(pcm), n)
    ]


async def test_transcribes_a_segment_and_recycles_a_grown_child() -> None:
    caller = read_wav(FIXTURE)
    rate = caller.sample_rate
    speech = Audio(caller.samples[int(16.0 * rate) : int(20.5 * rate)], rate)
    stt = build(ProviderSpec("stt", "local", "moonshine"))
    assert isinstance(stt, MoonshineSTT)
    try:
        heard = (await stt.recognize(_frames(speech))).alternatives[0].text
        words = set(heard.split())
        assert len(words & set(TEXT.split())) >= 10, heard
        assert stt.child.rss_mb > 0.0
        # a limit below what the child holds: it is replaced after its answer
        stt.child.max_rss_mb = 1.0
        again = (await stt.recognize(_frames(speech, rate=48000))).alternatives[0].text
        assert again == heard
        assert stt.child.recycled == 1
        silence = Audio(np.zeros(16000, dtype=np.float32), 16000)
        assert (await stt.recognize(_frames(silence))).alternatives[0].text == ""
    finally:
        await stt.aclose()


async def test_the_fixture_agents_chain_hears_a_caller_with_interims_on_a_long_turn(
    control_plane_dir: Path, settings: Callable[..., Settings]
) -> None:
    """The offline plan's STT chain is Moonshine first, pocketsphinx behind it; a caller's
    long turn (~8 s of speech, no pause) shows interim text while they talk, then the
    final with their words, in real time."""
    agent = json.loads((control_plane_dir / "agents" / f"{FRONT_DESK}.json").read_text())
    catalog = Catalog.from_json(json.loads((control_plane_dir / "providers.json").read_text()))
    # a deadline for a machine shared with other runs: this test is about what is heard
    plan = resolve(
        parse_agent(agent), None, parse_dispatch({}), catalog, settings(stt_deadline=15.0)
    )
    assert [c.id for c in plan.providers["stt"]] == ["local:moonshine", "local:pocketsphinx"]
    switches: list[Any] = []
    chain = build_layers(plan, switches.append)["stt"]
    # one long turn with no pause in it: a caller explaining, ~10 s at espeak's pace
    speech = EspeakEngine(voice="en-us+m3").synthesize(LONG_TURN)
    lead = np.zeros(int(0.3 * speech.sample_rate), dtype=np.float32)
    tail = np.zeros(int(1.5 * speech.sample_rate), dtype=np.float32)
    samples = np.concatenate([lead, speech.samples, tail])
    pcm = float_to_int16(resample(samples, speech.sample_rate, 16000))
    stream = chain.stream()
    events: list[tuple[float, stt.SpeechEvent]] = []
    started = time.monotonic()

    async def read() -> None:
        async for ev in stream:
            events.append((time.monotonic() - started, ev))

    reader = asyncio.create_task(read())
    try:
        for i in range(0, len(pcm), 320):
            chunk = pcm[i : i + 320]
            stream.push_frame(rtc.AudioFrame(chunk.tobytes(), 16000, 1, len(chunk)))
            await asyncio.sleep(max(0.0, started + (i + 320) / 16000 - time.monotonic()))
        stream.end_input()
        await asyncio.wait_for(reader, 30)
    finally:
        reader.cancel()
        await stream.aclose()
        await chain.aclose()
    kinds = [e.type for _, e in events]
    finals = [e.alternatives[0].text for _, e in events if e.type == FINAL]
    assert switches == []  # Moonshine served the whole call
    said = set(LONG_TURN.lower().replace(",", "").split())
    assert len(set(" ".join(finals).split()) & said) >= 0.8 * len(said), finals
    # interim text came while the caller was still talking: between a segment's start
    # and its end, with words the caller said
    seen = [(t, e.type, e.alternatives[0].text if e.alternatives else "") for t, e in events]
    assert INTERIM in kinds, seen
    at = kinds.index(INTERIM)
    assert kinds[:at].count(START) > kinds[:at].count(END), seen
    assert set(events[at][1].alternatives[0].text.split()) & said, seen
