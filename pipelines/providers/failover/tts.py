"""TTS failover: text is cut into sentences (``SentenceQueue``); a segment resumes on the
next provider at the first sentence not fully played, resampled to the chain's rate (the
first provider's).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Never

from livekit import rtc
from livekit.agents import APIConnectOptions, tts, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS

from pipelines.providers.failover.chain import (
    INNER_CONN_OPTIONS,
    ChainFront,
    Link,
    MeasuredByAttempts,
    ProviderChain,
    front_conn_options,
)
from pipelines.providers.failover.watchdog import (
    Watchdog,
)

AnyTTS = tts.TTS[Any]

_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


class SentenceQueue:
    """Text cut into sentences as it arrives, and where playback got to.

    ``played`` is the index of the first sentence not fully played: where a segment
    resumes on the next provider."""

    def __init__(self) -> None:
        self.sentences: list[str] = []
        self.played = 0
        self.closed = False
        self._pending = ""
        self._changed = asyncio.Event()

    def push_text(self, text: str) -> None:
        self._pending += text
        *done, self._pending = _SENTENCE_END.split(self._pending)
        self._add(done)

    def flush(self) -> None:
        self._add([self._pending])
        self._pending = ""

    def end(self) -> None:
        self.flush()
        self.closed = True
        self._changed.set()

    def _add(self, sentences: list[str]) -> None:
        new = [s.strip() for s in sentences if s.strip()]
        if new:
            self.sentences += new
            self._changed.set()

    async def next_unplayed(self) -> int | None:
        """Index of the first unplayed sentence, once it exists; None when all played."""
        while True:
            if self.played < len(self.sentences):
                return self.played
            if self.closed:
                return None
            self._changed.clear()
            await self._changed.wait()


class FailoverTTS(ChainFront, tts.TTS[Never]):
    """TTS over a chain of allowed providers at the first provider's sample rate; a
    segment resumes at the first sentence not yet played."""

    def __init__(self, chain: ProviderChain[AnyTTS]) -> None:
        instances = [link.instance for link in chain.links]
        if len({t.num_channels for t in instances}) != 1:
            raise ValueError("every TTS of a chain must have the same number of channels")
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=True),
            sample_rate=instances[0].sample_rate,
            num_channels=instances[0].num_channels,
        )
        self.chain = chain
        self._follow_links()

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> FailoverChunkedStream:
        return FailoverChunkedStream(
            tts=self,
            input_text=text,
            conn_options=front_conn_options(conn_options),
        )

    def stream(
        self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> FailoverSynthesizeStream:
        return FailoverSynthesizeStream(tts=self, conn_options=front_conn_options(conn_options))

    def open_output(self, emitter: tts.AudioEmitter, *, stream: bool) -> None:
        """Opens ``emitter`` at the chain's format; a stream gets its one segment."""
        emitter.initialize(
            request_id=utils.shortuuid(),
            sample_rate=self.sample_rate,
            num_channels=self.num_channels,
            mime_type="audio/pcm",
            stream=stream,
        )
        if stream:
            emitter.start_segment(segment_id=utils.shortuuid())

    async def speak(self, sentences: SentenceQueue, emitter: tts.AudioEmitter) -> None:
        """Plays ``sentences`` through the chain into ``emitter``."""

        async def attempt(link: Link[AnyTTS], wd: Watchdog) -> None:
            while (index := await sentences.next_unplayed()) is not None:
                await self._sentence(link, wd, sentences.sentences[index], emitter)
                sentences.played = index + 1

        await self.chain.run(attempt)

    async def _sentence(
        self, link: Link[AnyTTS], wd: Watchdog, text: str, emitter: tts.AudioEmitter
    ) -> None:
        inner = link.instance
        resampler = (
            rtc.AudioResampler(inner.sample_rate, self.sample_rate, num_channels=self.num_channels)
            if inner.sample_rate != self.sample_rate
            else None
        )
        stream: tts.SynthesizeStream | tts.ChunkedStream
        if inner.capabilities.streaming:
            stream = inner.stream(conn_options=INNER_CONN_OPTIONS)
            stream.push_text(text)
            stream.end_input()
        else:
            stream = inner.synthesize(text, conn_options=INNER_CONN_OPTIONS)
        wd.request()
        async with stream:
            async for audio in stream:
                wd.progress()
                for frame in resampler.push(audio.frame) if resampler else [audio.frame]:
                    emitter.push_frame(frame)
        wd.settle()
        if resampler is not None:
            for frame in resampler.flush():
                emitter.push_frame(frame)


class FailoverChunkedStream(MeasuredByAttempts, tts.ChunkedStream):
    _tts_request_span_name = "tts_failover"
    _tts_attempt_span_name = None

    def __init__(self, *, tts: FailoverTTS, input_text: str, conn_options: APIConnectOptions):
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._failover = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        self._failover.open_output(output_emitter, stream=False)
        sentences = SentenceQueue()
        sentences.push_text(self._input_text)
        sentences.end()
        await self._failover.speak(sentences, output_emitter)


class FailoverSynthesizeStream(MeasuredByAttempts, tts.SynthesizeStream):
    _tts_request_span_name = "tts_failover"
    _tts_attempt_span_name = None

    def __init__(self, *, tts: FailoverTTS, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, conn_options=conn_options)
        self._failover = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        self._failover.open_output(output_emitter, stream=True)
        sentences = SentenceQueue()

        async def forward_input() -> None:
            async for data in self._input_ch:
                if isinstance(data, str):
                    self._mark_started()
                    sentences.push_text(data)
                else:
                    sentences.flush()
            sentences.end()

        forward = asyncio.create_task(forward_input())
        try:
            await self._failover.speak(sentences, output_emitter)
        finally:
            await utils.aio.cancel_and_wait(forward)
