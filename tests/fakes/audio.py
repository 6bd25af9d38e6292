"""Fake audio outputs: LiveKit ``io.AudioOutput`` subclasses that stand in for the sink and
the wrappers of an agent's output chain (``pipelines.audio.StretchOutput``,
``NoiseBedOutput``) and record what reached them."""

from __future__ import annotations

import asyncio

import numpy as np
from livekit import rtc
from livekit.agents.voice import io

from pipelines.audio import DEFAULT_SAMPLE_RATE, Float32Array, int16_to_float


class FakeSink(io.AudioOutput):
    """Records frames; reports a segment as fully played right after its flush."""

    def __init__(self, sample_rate: int = DEFAULT_SAMPLE_RATE) -> None:
        super().__init__(
            label="FakeSink",
            capabilities=io.AudioOutputCapabilities(pause=True),
            sample_rate=sample_rate,
        )
        self.frames: list[rtc.AudioFrame] = []
        self.cleared = 0
        self._pushed = 0.0
        self._interrupted = False

    @property
    def samples(self) -> Float32Array:
        if not self.frames:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(
            [int16_to_float(np.frombuffer(f.data, np.int16)) for f in self.frames]
        )

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        if not self._pushed:
            self.on_playback_started(created_at=0.0)
        self.frames.append(frame)
        self._pushed += frame.duration

    def flush(self) -> None:
        super().flush()
        pos, interrupted = self._pushed, self._interrupted
        self._pushed, self._interrupted = 0.0, False
        if pos:
            asyncio.get_running_loop().call_soon(
                lambda: self.on_playback_finished(playback_position=pos, interrupted=interrupted)
            )

    def clear_buffer(self) -> None:
        self.cleared += 1
        self._interrupted = True


class PassThrough(io.AudioOutput):
    """Stands in for the recorder / transcript synchronizer above the sink."""

    def __init__(self, next_in_chain: io.AudioOutput) -> None:
        super().__init__(
            label="PassThrough",
            capabilities=io.AudioOutputCapabilities(pause=True),
            next_in_chain=next_in_chain,
            sample_rate=next_in_chain.sample_rate,
        )

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        assert self.next_in_chain is not None
        await self.next_in_chain.capture_frame(frame)

    def flush(self) -> None:
        super().flush()
        assert self.next_in_chain is not None
        self.next_in_chain.flush()

    def clear_buffer(self) -> None:
        assert self.next_in_chain is not None
        self.next_in_chain.clear_buffer()


class PausingSink(io.AudioOutput):
    """Like RoomIO's output: holds audio while paused, reports only what it played."""

    def __init__(self, sample_rate: int = DEFAULT_SAMPLE_RATE) -> None:
        super().__init__(
            label="PausingSink",
            capabilities=io.AudioOutputCapabilities(pause=True),
            sample_rate=sample_rate,
        )
        self.paused = False
        self.held = 0.0
        self.flushed = False
        self.started = False

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        self.held += frame.duration
        self._play()

    def flush(self) -> None:
        super().flush()
        self.flushed = True
        self._play()

    def clear_buffer(self) -> None:
        if self.held:
            self._finish(interrupted=True, position=0.0)

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self._play()

    def _play(self) -> None:
        if self.paused or not self.held:
            return
        if not self.started:
            self.started = True
            self.on_playback_started(created_at=1.0)
        if self.flushed:
            self._finish(interrupted=False, position=self.held)

    def _finish(self, *, interrupted: bool, position: float) -> None:
        self.held, self.flushed, self.started = 0.0, False, False
        self.on_playback_finished(playback_position=position, interrupted=interrupted)
