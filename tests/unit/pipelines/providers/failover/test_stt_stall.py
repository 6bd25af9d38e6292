"""Early STT stall detection: once the caller stopped speaking, a final is owed within the
provider's usual final latency (learnt in the health registry), and an interim-capable
provider that stops answering while the caller speaks is caught at its own rate of
results; a pause mid-turn owes nothing, and the turn is replayed to the next provider."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import stt

from pipelines.providers.failover import FailoverSTT, HealthRegistry, SwitchEvent
from tests.fakes import FakeSTT, make_chain

FRAME_WALL = 0.005
"""Wall seconds per pushed 20 ms frame (4x real time)."""


def frame(speech: bool) -> rtc.AudioFrame:
    pcm = ((8000 if speech else 0) * np.sin(np.arange(320) * 0.3)).astype(np.int16)
    return rtc.AudioFrame(pcm.tobytes(), 16000, 1, 320)


class Run:
    """Pushes frames into a stream, noting when each switch and final happened."""

    def __init__(self) -> None:
        self.pushed = 0
        self.switches: list[tuple[int, SwitchEvent]] = []
        self.finals: list[tuple[float, str]] = []

    def on_switch(self, ev: SwitchEvent) -> None:
        self.switches.append((self.pushed, ev))

    async def go(
        self, model: stt.STT[Any], frames: list[rtc.AudioFrame], fault_at: int, fault: Any
    ) -> None:
        stream = model.stream()

        async def read() -> None:
            async for ev in stream:
                if ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT:
                    self.finals.append((time.monotonic(), ev.alternatives[0].text))

        reader = asyncio.create_task(read())
        for f in frames:
            if self.pushed == fault_at:
                fault()
            stream.push_frame(f)
            self.pushed += 1
            await asyncio.sleep(FRAME_WALL)
        stream.end_input()
        await asyncio.wait_for(reader, 5)
        await stream.aclose()


def chain(run: Run, a: FakeSTT, b: FakeSTT, health: HealthRegistry, deadline: float) -> Any:
    model = FailoverSTT(make_chain("stt", [a, b], deadline=deadline, health=health))
    model.chain.on_switch = run.on_switch
    return model


async def test_final_owed_from_the_end_of_speech_within_the_usual_final_latency() -> None:
    health = HealthRegistry()
    for _ in range(5):
        health.record_latency("v0:m", "final", 0.05)
    a = FakeSTT(interim_results=False, final_after_silent_frames=5)
    b = FakeSTT(interim_results=False, final_after_silent_frames=5)
    run = Run()
    frames = [frame(True)] * 40 + [frame(False)] * 200
    model = chain(run, a, b, health, deadline=2.0)
    await run.go(model, frames, 20, lambda: a.update_options(stall_after_frames=0))
    (at, ev), *_ = run.switches
    assert ev.reason == "stall"
    # speech ended at frame 40; quiet confirmed at 55 (0.3 s of audio); the 0.3 s floor of
    # the final latency is ~60 frames of wall time here: far sooner than the 2 s deadline
    assert 55 <= at < 40 + 0.6 / FRAME_WALL, at
    assert [text for _, text in run.finals] == ["40"], "b heard the whole turn, replayed"


async def test_finals_after_the_end_of_speech_are_learnt_as_the_final_latency() -> None:
    health = HealthRegistry()
    a = FakeSTT(interim_results=False, final_after_silent_frames=20)
    run = Run()
    frames = ([frame(True)] * 30 + [frame(False)] * 40) * 3
    await run.go(chain(run, a, FakeSTT(), health, deadline=2.0), frames, -1, None)
    assert [text for _, text in run.finals] == ["30", "30", "30"] and run.switches == []
    p95 = health.latency_p95("v0:m", 3, kind="final")
    assert len(health.history("v0:m", "final")) == 3
    # 20 quiet frames at 5 ms of wall time each: ~0.1 s after the last speech frame
    assert p95 is not None and 0.07 < p95 < 0.4, p95


async def test_a_pause_mid_turn_owes_no_final_once_the_caller_speaks_on() -> None:
    health = HealthRegistry()
    for _ in range(5):
        health.record_latency("v0:m", "final", 0.6)  # a final within 0.9 s of speech end
    # finals only after 50 quiet frames (1 s of audio): a 40-frame pause ends no turn
    a = FakeSTT(interim_results=False, final_after_silent_frames=50)
    run = Run()
    speech, quiet = [frame(True)], [frame(False)]
    frames = speech * 30 + quiet * 40 + speech * 120 + quiet * 60
    await run.go(chain(run, a, FakeSTT(), health, deadline=2.0), frames, -1, None)
    # the pause (0.8 s of audio) was an end of speech and owed a final within 0.9 s; the
    # caller spoke on (0.6 s of wall time) and the final came ~0.25 s after the turn's
    # end: over 0.9 s after the pause, yet no stall
    assert run.switches == []
    assert [text for _, text in run.finals] == ["150"]


# with usage reports: the plugin keeps counting the audio it pushes (RECOGNITION_USAGE,
# as Deepgram's does) after the server went silent; those are no results
@pytest.mark.parametrize("usage_every_frames", [None, 10])
async def test_interims_that_stop_while_the_caller_speaks_are_caught_at_their_rate(
    usage_every_frames: int | None,
) -> None:
    # an interim per 10 speech frames (0.2 s of speech)
    a, b = FakeSTT(usage_every_frames=usage_every_frames), FakeSTT()
    run = Run()
    frames = [frame(True)] * 160 + [frame(False)] * 5
    model = chain(run, a, b, HealthRegistry(), deadline=2.0)
    await run.go(model, frames, 40, lambda: a.update_options(stall_after_frames=0))
    (at, ev), *_ = run.switches
    assert ev.reason == "stall"
    # last interim at frame 40; 2 x 0.2 s, floor 0.6 s of speech = 30 frames: tripped
    # around frame 70, where the 2 s deadline would have waited until frame 140
    assert 65 <= at <= 80, at
    assert [text for _, text in run.finals] == ["160"]


async def test_a_young_turn_that_stalls_is_caught_at_the_providers_usual_interim_rate() -> None:
    health = HealthRegistry()
    a, b = FakeSTT(), FakeSTT()  # an interim per 10 speech frames (0.2 s of speech)
    # a previous turn on this worker taught the registry a's interval between interims
    warm = Run()
    await warm.go(chain(warm, a, b, health, deadline=2.0), [frame(True)] * 60, -1, None)
    assert warm.switches == [] and len(health.history("v0:m", "interim")) >= 3
    run = Run()
    frames = [frame(True)] * 160 + [frame(False)] * 5
    model = chain(run, a, b, health, deadline=2.0)
    await run.go(model, frames, 15, lambda: a.update_options(stall_after_frames=0))
    (at, ev), *_ = run.switches
    assert ev.reason == "stall"
    # one interim (frame 10) before the stall: too young for its own rate; the usual one
    # (2 x 0.2 s, floor 0.6 s = 30 frames) tripped it near frame 40, where the 2 s deadline
    # would have waited until frame 110
    assert 35 <= at <= 55, at
    assert [text for _, text in run.finals] == ["160"]


async def test_a_fallback_catching_up_on_a_replayed_turn_is_not_held_to_its_burst_of_interims() -> (
    None
):
    health = HealthRegistry()
    a = FakeSTT(fail_after_frames=150)
    # b answers the 3 s replayed turn over ~0.15 s (interims 8 live frames apart), then live
    # every 40 speech frames (0.8 s): learnt from the burst, its limit would be the 0.6 s floor
    b = FakeSTT(interim_every=40, timed=True, decode_seconds=0.001)
    run = Run()
    frames = [frame(True)] * 400 + [frame(False)] * 5
    await run.go(chain(run, a, b, health, deadline=2.0), frames, -1, None)
    assert [(ev.to_provider, ev.reason) for _, ev in run.switches] == [("v1:m", "connection")]
    assert [text for _, text in run.finals] == ["400"], "b heard the whole turn"
