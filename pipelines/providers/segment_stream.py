"""A batch STT made streaming by a VAD, with interim text for long segments.

LiveKit's ``stt.StreamAdapter`` transcribes each VAD segment once, at its end: a caller
who talks for ten seconds shows nothing until they stop. ``SegmentStreamAdapter`` does
the same final per segment (the whole segment, in one piece), and while a segment is
still open it transcribes the audio so far every ``interim_every`` seconds of it,
emitting the text as an ``INTERIM_TRANSCRIPT``. One interim is in flight at a time; an
interim still running when the segment ends is let finish (a batch engine's child may
not be interrupted mid-answer) and its text dropped, and only then is the final asked
for, so the final's deadline covers its own work. Interims may go to another instance
(``interim_stt``: the engine without the chain's deadline, whose stall is a failover):
a slow interim is a late courtesy, never a failure.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from livekit import rtc
from livekit.agents import APIConnectOptions, APIError, stt, utils, vad
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

INTERIM_EVERY = 3.0
"""Seconds of an open segment between its interim transcripts (the first comes after this
much speech: a short turn gets its final only)."""


def _seconds(frames: list[rtc.AudioFrame]) -> float:
    return sum(f.samples_per_channel / f.sample_rate for f in frames)


class ClosingStreamAdapter(stt.StreamAdapter):
    """``stt.StreamAdapter`` that closes the STT it wraps (LiveKit's leaves it open: a local
    engine's decoder child would outlive the call)."""

    async def aclose(self) -> None:
        await super().aclose()
        await self._stt.aclose()


class SegmentStreamAdapter(ClosingStreamAdapter):
    """``stt.StreamAdapter`` plus interim transcripts of long segments (see the module)."""

    def __init__(
        self,
        *,
        stt: stt.STT[Any],
        vad: vad.VAD,
        interim_every: float = INTERIM_EVERY,
        interim_stt: stt.STT[Any] | None = None,
    ) -> None:
        if interim_every <= 0:
            raise ValueError(f"interim_every must be positive, got {interim_every}")
        super().__init__(stt=stt, vad=vad)
        self.interim_every = interim_every
        self.interim_stt = interim_stt or stt

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.RecognizeStream:
        return SegmentStream(
            self,
            vad=self._vad,
            wrapped_stt=self._stt,
            language=language,
            conn_options=conn_options,
            interim_every=self.interim_every,
            interim_stt=self.interim_stt,
        )


class SegmentStream(stt.StreamAdapterWrapper):
    def __init__(
        self,
        adapter: SegmentStreamAdapter,
        *,
        vad: vad.VAD,
        wrapped_stt: stt.STT[Any],
        language: NotGivenOr[str],
        conn_options: APIConnectOptions,
        interim_every: float,
        interim_stt: stt.STT[Any],
    ) -> None:
        super().__init__(
            adapter, vad=vad, wrapped_stt=wrapped_stt, language=language, conn_options=conn_options
        )
        self._interim_every = interim_every
        self._interim_stt = interim_stt
        self._segment: list[rtc.AudioFrame] | None = None
        self._next_interim = interim_every
        self._generation = 0
        self._interim_task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        vad_stream = self._vad.stream()

        async def forward_input() -> None:
            async for item in self._input_ch:
                if isinstance(item, self._FlushSentinel):
                    vad_stream.flush()
                else:
                    vad_stream.push_frame(item)
            vad_stream.end_input()

        async def recognize() -> None:
            async for event in vad_stream:
                await self._on_vad_event(event)

        tasks = [asyncio.create_task(forward_input()), asyncio.create_task(recognize())]
        try:
            await asyncio.gather(*tasks)
            if self._interim_task is not None:
                await self._interim_task
        finally:
            pending = [t for t in (*tasks, self._interim_task) if t is not None]
            await utils.aio.cancel_and_wait(*pending)
            await vad_stream.aclose()

    async def _on_vad_event(self, event: vad.VADEvent) -> None:
        if event.type == vad.VADEventType.START_OF_SPEECH:
            self._generation += 1
            self._segment = list(event.frames)
            self._next_interim = self._interim_every
            self._event_ch.send_nowait(stt.SpeechEvent(stt.SpeechEventType.START_OF_SPEECH))
        elif event.type == vad.VADEventType.INFERENCE_DONE:
            if self._segment is None or not event.speaking:
                return
            self._segment.extend(event.frames)
            seconds = _seconds(self._segment)
            if seconds >= self._next_interim and (
                self._interim_task is None or self._interim_task.done()
            ):
                self._next_interim = seconds + self._interim_every
                self._interim_task = asyncio.create_task(
                    self._interim(list(self._segment), self._generation)
                )
        elif event.type == vad.VADEventType.END_OF_SPEECH:
            self._generation += 1
            self._segment = None
            speech_end_time = time.time() - event.silence_duration - event.inference_duration
            self._event_ch.send_nowait(
                stt.SpeechEvent(
                    type=stt.SpeechEventType.END_OF_SPEECH, speech_end_time=speech_end_time
                )
            )
            if self._interim_task is not None:
                await asyncio.gather(self._interim_task, return_exceptions=True)
            final = await self._final(event.frames)
            if final is not None:
                self._event_ch.send_nowait(
                    stt.SpeechEvent(
                        type=stt.SpeechEventType.FINAL_TRANSCRIPT,
                        alternatives=[final],
                        speech_end_time=speech_end_time,
                    )
                )

    async def _final(self, frames: list[rtc.AudioFrame]) -> stt.SpeechData | None:
        ev = await self._wrapped_stt.recognize(
            buffer=utils.merge_frames(frames),
            language=self._language,
            conn_options=self._wrapped_stt_conn_options,
        )
        return ev.alternatives[0] if ev.alternatives and ev.alternatives[0].text else None

    async def _interim(self, frames: list[rtc.AudioFrame], generation: int) -> None:
        try:
            # the engine's own call, not ``recognize``: no metrics (the segment's audio is
            # counted once, with its final) and no error event (the chain fails over on those)
            ev = await self._interim_stt._recognize_impl(
                utils.merge_frames(frames),
                language=self._language,
                conn_options=self._wrapped_stt_conn_options,
            )
        except APIError:
            return  # an interim is a courtesy: the segment's final is what must arrive
        if ev.alternatives and ev.alternatives[0].text and generation == self._generation:
            self._event_ch.send_nowait(
                stt.SpeechEvent(
                    type=stt.SpeechEventType.INTERIM_TRANSCRIPT, alternatives=[ev.alternatives[0]]
                )
            )
