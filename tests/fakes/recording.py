"""Generated call audio for the recording tests: tone frames as LiveKit delivers them, a
recording fed with a known caller and agent, and the level of one tone in a signal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from livekit import rtc

from worker.call.recording import ChannelLayout, Recording

FRAME = 0.02
CALLER_HZ = 300.0
AGENT_HZ = 1000.0


def tone_frames(seconds: float, rate: int, hz: float, level: float = 0.3) -> list[rtc.AudioFrame]:
    """20 ms mono int16 frames of a sine."""
    n = round(FRAME * rate)
    t = np.arange(round(seconds * rate)) / rate
    pcm = (level * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)
    return [
        rtc.AudioFrame(pcm[i : i + n].tobytes(), rate, 1, n) for i in range(0, len(pcm) - n + 1, n)
    ]


def recorded_call(
    spool: Path,
    *,
    seconds: float = 6.0,
    agent_at: float = 2.0,
    layout: ChannelLayout = "stereo",
    key: str = "agent_1/2026-01-01/call_1.ogg",
    url: str = "s3://recordings/agent_1/2026-01-01/call_1.ogg",
    t0: float = 100.0,
) -> Recording:
    """A started recording fed (at once, with loop times from ``t0``) ``seconds`` of a 16 kHz
    caller tone and one second of a 24 kHz agent tone heard ``agent_at`` seconds in."""
    rec = Recording(spool, call_id="call_1", key=key, url=url, layout=layout)
    rec.start(t0)
    for i, frame in enumerate(tone_frames(seconds, 16000, CALLER_HZ)):
        rec.caller_tap(frame, t0 + i * FRAME)
    for i, frame in enumerate(tone_frames(1.0, 24000, AGENT_HZ)):
        rec.agent_tap(frame, t0 + agent_at + i * FRAME)
    return rec


def level_at(x: np.ndarray, rate: int, hz: float) -> float:
    """Amplitude of the ``hz`` component of ``x`` (a sine's peak)."""
    t = np.arange(len(x)) / rate
    return float(2 * abs(np.mean(x * np.exp(-2j * np.pi * hz * t))))
