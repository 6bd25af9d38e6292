"""The audio stages on a real call: the agent's greeting, time-stretched by
``tts_playback_rate`` and mixed over the ``background_noise_preset`` bed, as the caller
receives it through LiveKit (Opus and all).

Same first message, same voice, once at rate 1.0 without a bed and once at rate 1.5 over
the office bed: the stretched greeting must be ~1/1.5 as long, and the quiet between
the agent's words must carry the bed at the configured level."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest

from pipelines.audio import BED_DBFS_AT_FULL_VOLUME, Audio, rms_dbfs
from worker.dev import AGENT_RATE, CallRecording, run_caller
from worker.dev.services import LiveKitEndpoint, WorkerProcess
from worker.settings import REPO_ROOT

pytestmark = pytest.mark.integration

FIXTURES = REPO_ROOT / "fixtures"
FRONT_DESK: dict[str, Any] = json.loads(
    (FIXTURES / "control_plane" / "agents" / "agent_01JC0FRNTDESK0000000000000.json").read_text()
)
GREETING = "Thanks for calling Acme Dental. This call may be recorded for quality."
BED_VOLUME = 0.1
SILENT_CALLER_SECONDS = 9.0


def agent(**changes: Any) -> dict[str, Any]:
    record = {k: v for k, v in FRONT_DESK.items() if k not in ("id", "webhooks")}
    record.update(firstMessage=GREETING, inactivity_timeout_seconds=60, **changes)
    return record


async def greet(
    livekit: LiveKitEndpoint, worker: WorkerProcess, record: dict[str, Any]
) -> CallRecording:
    silence = Audio(np.zeros(int(SILENT_CALLER_SECONDS * 16000), dtype=np.float32), 16000)
    return await run_caller(
        livekit, worker.agent_name, {"agent": record}, silence, tail_seconds=1.0
    )


SPEECH_DBFS = -32.0
"""A 20 ms frame this loud is the agent's voice: espeak speaks at about -20 dBFS, the bed
(-20 dBFS x volume 0.1 = -40 dBFS) stays well below. webrtcvad can't tell them apart: the
office clip has voices in it."""


def greeting_span(audio: Audio) -> tuple[float, float]:
    """First to last loud frame of the greeting."""
    n = AGENT_RATE // 50
    frames = audio.samples[: len(audio.samples) // n * n].reshape(-1, n)
    loud = np.flatnonzero(
        10 * np.log10(np.mean(np.square(frames, dtype=np.float64), axis=1) + 1e-12) > SPEECH_DBFS
    )
    assert len(loud), "the caller heard no agent speech"
    return loud[0] * n / AGENT_RATE, (loud[-1] + 1) * n / AGENT_RATE


async def test_playback_rate_shortens_speech_and_the_bed_fills_the_silence(
    livekit: LiveKitEndpoint, voice_worker: WorkerProcess
) -> None:
    plain, fast = await asyncio.gather(
        greet(livekit, voice_worker, agent(background_noise_preset="", tts_playback_rate=None)),
        greet(
            livekit,
            voice_worker,
            agent(
                background_noise_preset="office",
                background_noise_volume=BED_VOLUME,
                tts_playback_rate=1.5,
            ),
        ),
    )
    quieter = await greet(
        livekit,
        voice_worker,
        agent(
            background_noise_preset="office",
            background_noise_volume=BED_VOLUME / 4,
            tts_playback_rate=1.5,
        ),
    )
    plain_audio, fast_audio = plain.agent_audio(), fast.agent_audio()
    p0, p1 = greeting_span(plain_audio)
    f0, f1 = greeting_span(fast_audio)
    ratio = (p1 - p0) / (f1 - f0)
    assert ratio == pytest.approx(1.5, rel=0.12), (p0, p1, f0, f1)

    # After the greeting the agent is silent: the plain call is quiet, the bed calls carry
    # the office bed at -20 dBFS x volume. The clip's own level wanders by +-4 dB from
    # second to second and Opus takes ~2 dB off noise, so the absolute check is loose;
    # the level then has to follow the volume: a quarter of it is 12 dB quieter.
    def after_greeting(audio: Audio, end: float) -> np.ndarray:
        tail = audio.samples[int((end + 0.5) * AGENT_RATE) :]
        assert len(tail) > AGENT_RATE, "less than a second of audio after the greeting"
        return tail

    expected = BED_DBFS_AT_FULL_VOLUME + 20 * np.log10(BED_VOLUME)
    bed = rms_dbfs(after_greeting(fast_audio, f1))
    quieter_audio = quieter.agent_audio()
    quieter_bed = rms_dbfs(after_greeting(quieter_audio, greeting_span(quieter_audio)[1]))
    assert bed == pytest.approx(expected, abs=8.0)
    assert bed - quieter_bed == pytest.approx(20 * np.log10(4), abs=3.0)
    assert rms_dbfs(after_greeting(plain_audio, p1)) < expected - 15
