"""Taps for the call recording: both sides of a call laid on one clock.

Two taps feed a :class:`CallTimeline`: :class:`TapInput` wraps the session's audio input
and hands on every decoded caller frame as it arrives; the noise-bed mixer hands on every
frame it writes into the agent's track with the loop time at which that frame plays
(``NoiseBedOutput(tap=...)``), so the agent side is what the caller heard: stretched, over
the bed, cut where an interruption dropped queued speech. A tap only copies a frame; the
timeline (plain numpy with explicit state) runs wherever the recorder puts it, off the
event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

import numpy as np
from livekit import rtc
from livekit.agents.voice import io

from pipelines.audio.pcm import Float32Array, StreamResampler, int16_to_float

Tap = Callable[[rtc.AudioFrame, float], None]
"""Receives a frame and the loop time (``loop.time()``) its first sample is heard; it must
return at once (it runs on the call's real-time path)."""

CALLER: Final = 0
"""The caller's side: the left channel of a stereo recording."""
AGENT: Final = 1
"""The agent's side: the right channel."""

RECORDING_RATE = 24000
"""Sample rate of the timeline (and of the file): the agent's track rate; an Opus rate."""


class TapInput(io.AudioInput):
    """Passes the caller's frames through unchanged and shows each one to ``tap``."""

    def __init__(self, source: io.AudioInput, tap: Tap) -> None:
        super().__init__(label="RecordingTap", source=source)
        self._tap = tap

    async def __anext__(self) -> rtc.AudioFrame:
        frame = await super().__anext__()
        # the frame has just been decoded: its first sample was heard one frame ago
        self._tap(frame, asyncio.get_running_loop().time() - frame.duration)
        return frame


def frame_samples(frame_data: bytes, num_channels: int) -> Float32Array:
    """Mono float samples of interleaved int16 PCM."""
    pcm = np.frombuffer(frame_data, dtype=np.int16)
    if num_channels > 1:
        pcm = pcm.reshape(-1, num_channels).mean(axis=1).astype(np.int16)
    return int16_to_float(pcm)


class CallTimeline:
    """Both sides of one call on one clock, handed out in order as stereo blocks.

    The clock starts at the caller's first frame: nothing from before the call connects is
    kept, and a call that never connects yields nothing. Agent frames land exactly where
    the mixer says they play; one placed earlier than the end of what is held replaces the
    rest (the track dropped those frames: an interruption, or the bed taken back when
    speech started). Caller frames follow each other while they keep up; a gap longer
    than ``slack`` seconds (the caller's audio paused) becomes silence.

    ``take(now)`` hands out every sample older than ``now - hold``: ``hold`` covers the
    mixer's lead (what it queues ahead may still be dropped) and arrival jitter. ``drain()``
    hands out the rest at the end.
    """

    def __init__(
        self, sample_rate: int = RECORDING_RATE, *, hold: float = 0.5, slack: float = 0.1
    ) -> None:
        self.sample_rate = sample_rate
        self.hold = hold
        self.slack = slack
        self.start: float | None = None
        """Loop time of the first sample (the caller's first frame); None until then."""
        self._base = 0
        """Sample index of the first held sample (both sides), i.e. how many were handed out."""
        self._held: list[Float32Array] = [np.zeros(0, np.float32), np.zeros(0, np.float32)]
        self._resamplers: dict[tuple[int, int], StreamResampler] = {}

    @property
    def handed_out(self) -> int:
        """Samples handed out so far (per side)."""
        return self._base

    def place(self, side: int, samples: Float32Array, sample_rate: int, at: float) -> None:
        """Lays mono ``samples`` of ``side`` heard from loop time ``at`` on the timeline."""
        if self.start is None:
            if side != CALLER:
                return
            self.start = at
        if sample_rate != self.sample_rate:
            key = (side, sample_rate)
            if key not in self._resamplers:
                self._resamplers[key] = StreamResampler(sample_rate, self.sample_rate)
            samples = self._resamplers[key].process(samples)
        held = self._held[side]
        end = self._base + len(held)
        pos = round((at - self.start) * self.sample_rate)
        if side == AGENT:
            if pos < self._base:
                samples = samples[self._base - pos :]
                pos = self._base
            if pos < end:
                held = held[: pos - self._base]
        elif pos <= end + round(self.slack * self.sample_rate):
            pos = end
        if pos > end:
            held = np.concatenate((held, np.zeros(pos - end, np.float32)))
        self._held[side] = np.concatenate((held, samples.astype(np.float32, copy=False)))

    def take(self, now: float) -> Float32Array:
        """The stereo block ``(n, 2)`` of every sample heard before ``now - hold``."""
        if self.start is None:
            return np.zeros((0, 2), np.float32)
        upto = round((now - self.hold - self.start) * self.sample_rate)
        return self._hand_out(upto - self._base)

    def drain(self) -> Float32Array:
        """Everything still held, the shorter side padded with silence."""
        return self._hand_out(max(len(h) for h in self._held))

    def _hand_out(self, n: int) -> Float32Array:
        if n <= 0:
            return np.zeros((0, 2), np.float32)
        out = np.zeros((n, 2), np.float32)
        for side, held in enumerate(self._held):
            k = min(n, len(held))
            out[:k, side] = held[:k]
            self._held[side] = held[k:]
        self._base += n
        return out
