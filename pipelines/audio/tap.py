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

EARLIEST = 0.005
"""Seconds a caller frame may arrive ahead of its place before the clock's start moves
back (below it: arrival jitter, not worth a shift of the agent's side)."""

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
    speech started). The caller's frames are the clock: they follow each other, a gap
    longer than ``slack`` seconds (the caller's audio paused) becomes silence, taken back
    when the frames after it come in a burst (they were late: the event loop stalled), and
    frames that were waiting before the first came through move the start back.

    ``take(now)`` hands out every sample older than ``now - hold`` (and no further than the
    caller's audio): ``hold`` covers the mixer's lead (what it queues ahead may still be
    dropped) and arrival jitter. ``drain()`` hands out the rest at the end, up to where the
    caller's audio stopped.
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
        self._gap: tuple[int, int] | None = None
        """The last silence put in on the caller's side (sample index, length): taken back
        if the frames after it turn out to have been late rather than paused."""
        self.paused = 0
        """Samples of silence put in for the caller's pauses (less what was taken back)."""
        self.moved_back = 0
        """Samples by which the start moved back (frames waiting before the first)."""
        self.dropped = 0
        """Caller samples dropped for arriving ahead of real time after start-up."""

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
        if side == CALLER:
            self._place_caller(samples, at)
            return
        held = self._held[AGENT]
        end = self._base + len(held)
        pos = round((at - self.start) * self.sample_rate)
        if pos < self._base:
            samples = samples[self._base - pos :]
            pos = self._base
        if pos < end:
            held = held[: pos - self._base]
        elif pos > end:
            held = np.concatenate((held, np.zeros(pos - end, np.float32)))
        self._held[AGENT] = np.concatenate((held, samples.astype(np.float32, copy=False)))

    def _place_caller(self, samples: Float32Array, at: float) -> None:
        """The caller's audio is the call's clock: its samples follow each other, and a frame
        can only arrive after the time of its place. One arriving earlier than its place
        shows the clock started late (frames were waiting before the first one came
        through): a gap put in for a pause is taken back first (the pause was a stall and
        this is its backlog), then, while nothing has been handed out, the clock moves back,
        the agent's held samples with it; later such a frame is dropped (a burst faster than
        real time at the end of the track's stream). One arriving more than ``slack`` later
        than its place means the caller paused."""
        assert self.start is not None
        rate = self.sample_rate
        held = self._held[CALLER]
        end = self._base + len(held)
        late = round((at - self.start) * rate) - end
        if late < 0 and self._gap is not None and self._gap[0] >= self._base:
            gap_at, length = self._gap
            cut = min(length, -late)
            i = gap_at - self._base
            held = np.concatenate((held[:i], held[i + cut :]))
            self._gap = (gap_at, length - cut) if length > cut else None
            self.paused -= cut
            late += cut
        if late < -round(EARLIEST * rate):
            if self._base > 0:
                # past start-up, audio faster than real time is no caller's: the track's
                # stream flushing at its end
                self._held[CALLER] = held
                self.dropped += len(samples)
                return
            self.start += late / rate
            self.moved_back -= late
            self._held[AGENT] = np.concatenate((np.zeros(-late, np.float32), self._held[AGENT]))
        elif late > round(self.slack * rate):
            self._gap = (self._base + len(held), late)
            self.paused += late
            held = np.concatenate((held, np.zeros(late, np.float32)))
        self._held[CALLER] = np.concatenate((held, samples.astype(np.float32, copy=False)))

    def take(self, now: float) -> Float32Array:
        """The stereo block ``(n, 2)`` of every sample heard before ``now - hold``."""
        if self.start is None:
            return np.zeros((0, 2), np.float32)
        upto = round((now - self.hold - self.start) * self.sample_rate)
        # never past the caller's audio: after it, a pause is filled in when the caller
        # goes on, and a hangup ends the call (``drain``)
        upto = min(upto, self._base + len(self._held[CALLER]))
        return self._hand_out(upto - self._base)

    def drain(self) -> Float32Array:
        """What is still held up to the end of the caller's audio: the call ends for the
        caller when its audio stops (a hangup); what the agent's track played after that
        was heard by nobody. An agent side that ends earlier is padded with silence."""
        return self._hand_out(len(self._held[CALLER]))

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
