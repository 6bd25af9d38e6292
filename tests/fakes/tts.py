"""A fake non-streaming TTS that plays a tone per character and can fail or stall on cue."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Never

import numpy as np
from livekit.agents import APIConnectionError, APIConnectOptions, tts
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr
from livekit.agents.utils import is_given


@dataclass
class _FakeTTSOptions:
    fail_on_call: int | None
    """Index of the synthesize call that breaks (after ``fail_after_chunks``)."""
    fail_after_chunks: int
    stall: bool
    """Every chunk waits forever: no first byte."""
    first_chunk_delay: float = 0.0
    """Seconds before the first chunk of each text (a slow, not a stalled, provider)."""
    stall_after_chunks: int | None = None
    """Each text goes silent after this many chunks (a mid-sentence stall)."""
    chunk_interval: float = 0.0
    """Seconds between chunks (the stream's own rate)."""


class FakeTTS(tts.TTS[Never]):
    """Non-streaming TTS: 10 ms of tone per character, in 50 ms chunks; records each text
    it was asked to speak in ``texts``."""

    def __init__(
        self,
        sample_rate: int = 16000,
        *,
        fail_on_call: int | None = None,
        fail_after_chunks: int = 0,
        stall: bool = False,
        first_chunk_delay: float = 0.0,
        stall_after_chunks: int | None = None,
        chunk_interval: float = 0.0,
    ) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=sample_rate,
            num_channels=1,
        )
        self._opts = _FakeTTSOptions(
            fail_on_call=fail_on_call,
            fail_after_chunks=fail_after_chunks,
            stall=stall,
            first_chunk_delay=first_chunk_delay,
            stall_after_chunks=stall_after_chunks,
            chunk_interval=chunk_interval,
        )
        self.texts: list[str] = []
        self.cancelled = 0
        """Syntheses cancelled before they ended (the chain gave up on them)."""

    def update_options(
        self,
        *,
        fail_on_call: NotGivenOr[int | None] = NOT_GIVEN,
        fail_after_chunks: NotGivenOr[int] = NOT_GIVEN,
        stall: NotGivenOr[bool] = NOT_GIVEN,
    ) -> None:
        if is_given(fail_on_call):
            self._opts.fail_on_call = fail_on_call
        if is_given(fail_after_chunks):
            self._opts.fail_after_chunks = fail_after_chunks
        if is_given(stall):
            self._opts.stall = stall

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> FakeChunkedStream:
        self.texts.append(text)
        return FakeChunkedStream(tts=self, input_text=text, conn_options=conn_options)


class FakeChunkedStream(tts.ChunkedStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        fake = self._tts
        assert isinstance(fake, FakeTTS)
        opts = fake._opts
        rate = fake.sample_rate
        output_emitter.initialize(
            request_id="r", sample_rate=rate, num_channels=1, mime_type="audio/pcm"
        )
        call = len(fake.texts) - 1
        n = rate * len(self._input_text) // 100
        tone = (8000 * np.sin(np.arange(n) * 0.1)).astype(np.int16).tobytes()
        step = rate // 20 * 2
        try:
            await self._play(output_emitter, opts, tone, step, call)
        except asyncio.CancelledError:
            fake.cancelled += 1
            raise
        output_emitter.flush()

    async def _play(
        self,
        output_emitter: tts.AudioEmitter,
        opts: _FakeTTSOptions,
        tone: bytes,
        step: int,
        call: int,
    ) -> None:
        if opts.first_chunk_delay > 0:
            await asyncio.sleep(opts.first_chunk_delay)
        for i, start in enumerate(range(0, len(tone), step)):
            if opts.stall or (opts.stall_after_chunks is not None and i >= opts.stall_after_chunks):
                await asyncio.sleep(3600)
            if call == opts.fail_on_call and i >= opts.fail_after_chunks:
                raise APIConnectionError("connection reset")
            output_emitter.push(tone[start : start + step])
            await asyncio.sleep(opts.chunk_interval)
