"""STT failover: the caller's current turn is kept in a bounded ``TurnBuffer`` and
replayed to the next provider, so the turn in flight is transcribed, not lost.

The STT clock runs on audio: a provider owes a result for speech it was sent. A batch
provider joins the chain wrapped in LiveKit's ``stt.StreamAdapter`` (``stt_link``), its
``recognize`` under a deadline of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Any, Never

import numpy as np
from livekit import rtc
from livekit.agents import APIConnectOptions, stt, utils, vad
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

from pipelines.audio import int16_to_float, rms_dbfs
from pipelines.providers.factories import ProviderSpec, build
from pipelines.providers.failover.chain import (
    INNER_CONN_OPTIONS,
    ChainFront,
    Link,
    ProviderChain,
    Rotate,
    front_conn_options,
)
from pipelines.providers.failover.watchdog import (
    HedgePolicy,
    RatePolicy,
    StallError,
    Watchdog,
)
from pipelines.providers.segment_stream import ClosingStreamAdapter, SegmentStreamAdapter

AnySTT = stt.STT[Any]


SPEECH_DBFS = -45.0
"""Frames louder than this count as the caller speaking (for stall detection only)."""
END_OF_TURN_SILENCE = 0.5
"""Quiet after unanswered speech that makes a final result owed."""
UNANSWERED_AT_END = 1.0
"""Speech an interim-capable provider left unanswered when its stream ended: a failure."""
MIN_OWED_SPEECH = 0.3
"""Unanswered speech shorter than this (a cough, a click) owes nothing at its end."""
END_OF_SPEECH_SILENCE = 0.3
"""Quiet after unanswered speech that says the caller stopped speaking (the energy VAD's
end of speech): a final result is owed from the last speech frame, within the provider's
usual final latency (``FINAL_LATENCY``)."""
FINAL_LATENCY = HedgePolicy(factor=1.5, floor=0.3, cold=float("inf"), min_samples=5)
"""How long after the end of speech a final may take: 1.5 x this provider's recent p95
final latency on this worker (the health registry's ``final`` series, outliers left out:
``HedgePolicy.usual``), at least 0.3 s.
With fewer than 5 samples, or a limit at or past the deadline, the stream keeps the
deadline counted from ``END_OF_TURN_SILENCE`` of quiet."""
INTERIM_RATE = RatePolicy(factor=3.0, floor=0.6, min_gaps=2)
"""Speech an interim-capable provider may leave unanswered: three times its own recent
interval between results (in seconds of speech), at least 0.6 s, at most the deadline.
The provider's p95 interval on this worker (the health registry's ``interim`` series)
stands in while the turn is young (a stall before its second result) and is never
undercut. 2x was tried with the incremental local servers: on a loaded machine (load
average 4 on 2 cores) a healthy fallback lagged past it and was failed over in turn."""
CATCH_UP_SLACK = 0.3
"""A result whose words end this close to the audio sent so far has caught up with a
replayed turn (the last word ends before the audio does)."""
RECOGNIZE_PER_AUDIO_SECOND = 0.25
"""Seconds a batch ``recognize`` may spend per second of audio, over the deadline
(batch decoding time grows with the audio's length)."""


def _answers(ev: stt.SpeechEvent, *, interim: bool) -> bool:
    """Whether ``ev`` is the provider's answer: any server event of an interim-capable
    stream, a final of any. ``RECOGNITION_USAGE`` is the plugin's own bookkeeping (Deepgram's
    counts the audio pushed, every few seconds, whatever the server does): it answers
    nothing, and a stalled stream that kept emitting it was never failed over."""
    if ev.type == stt.SpeechEventType.RECOGNITION_USAGE:
        return False
    return interim or ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT


def _frame_seconds(frame: rtc.AudioFrame) -> float:
    return frame.samples_per_channel / frame.sample_rate


def _buffer_seconds(buffer: utils.AudioBuffer) -> float:
    frames = buffer if isinstance(buffer, list) else [buffer]
    return sum(_frame_seconds(f) for f in frames)


def _is_speech(frame: rtc.AudioFrame) -> bool:
    return rms_dbfs(int16_to_float(np.frombuffer(frame.data, dtype=np.int16))) > SPEECH_DBFS


TURN_LEAD_SECONDS = 0.3
"""Quiet kept before a turn's first speech: the replay to the next provider starts
there, not with the seconds the caller listened to the agent (a recogniser catching up
on a replay decodes every second of it)."""


class TurnBuffer:
    """The caller's current turn as frames, bounded to ``max_seconds`` (oldest dropped),
    with at most ``lead_seconds`` of quiet before its first speech.

    Positions are seconds of audio since the stream began (``position`` is the end of
    the newest frame, ``start`` the beginning of the oldest kept)."""

    def __init__(self, max_seconds: float = 30.0, lead_seconds: float = TURN_LEAD_SECONDS):
        self.max_seconds = max_seconds
        self.lead_seconds = lead_seconds
        self.reset()

    def reset(self) -> None:
        self._frames: deque[tuple[rtc.AudioFrame, bool]] = deque()
        self._speech = 0
        """Frames held that are speech."""
        self.start = 0.0
        self.position = 0.0

    @property
    def duration(self) -> float:
        return self.position - self.start

    def push(self, frame: rtc.AudioFrame, *, speech: bool = True) -> None:
        self._frames.append((frame, speech))
        self._speech += speech
        self.position += _frame_seconds(frame)
        limit = self.max_seconds if self._speech else self.lead_seconds
        while self._frames and self.duration > limit + 1e-9:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        frame, speech = self._frames.popleft()
        self._speech -= speech
        self.start += _frame_seconds(frame)

    @property
    def has_speech(self) -> bool:
        return self._speech > 0

    def frames(self) -> list[rtc.AudioFrame]:
        return [frame for frame, _ in self._frames]

    def trim_until(self, t: float) -> None:
        """Drops frames that end at or before ``t`` (a transcript covered them)."""
        while self._frames and self.start + _frame_seconds(self._frames[0][0]) <= t + 1e-9:
            self._drop_oldest()

    def clear(self) -> None:
        self.trim_until(self.position)


class _DeadlineSTT(stt.STT[Never]):
    """A batch STT whose ``recognize`` must answer within the deadline plus a share of
    the audio's length (batch decoding time grows with it); wrapped by the VAD's
    ``StreamAdapter`` inside the chain. The first call may also spend ``cold_start``
    (pocketsphinx starts its decoder process then)."""

    def __init__(
        self,
        inner: AnySTT,
        deadline: float,
        *,
        per_audio_second: float = RECOGNIZE_PER_AUDIO_SECOND,
        cold_start: float = 10.0,
    ):
        super().__init__(capabilities=inner.capabilities)
        self._inner = inner
        self._deadline = deadline
        self._per_audio_second = per_audio_second
        self._cold_start = cold_start
        self._inner.on("metrics_collected", self._forward_metrics)

    @property
    def model(self) -> str:
        return self._inner.model

    @property
    def provider(self) -> str:
        return self._inner.provider

    def _forward_metrics(self, *args: Any, **kwargs: Any) -> None:
        self.emit("metrics_collected", *args, **kwargs)

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        seconds = _buffer_seconds(buffer)
        limit = self._deadline + self._per_audio_second * seconds + self._cold_start
        self._cold_start = 0.0
        started = time.monotonic()
        try:
            async with asyncio.timeout(limit):
                return await self._inner.recognize(
                    buffer, language=language, conn_options=INNER_CONN_OPTIONS
                )
        except TimeoutError as exc:
            raise StallError("stt", self._inner.provider, time.monotonic() - started) from exc

    async def aclose(self) -> None:
        self._inner.off("metrics_collected", self._forward_metrics)
        await self._inner.aclose()


class FailoverSTT(ChainFront, stt.STT[Never]):
    """Streaming STT over a chain of allowed providers (non-streaming ones come wrapped in
    ``stt.StreamAdapter``); the turn in flight is replayed to the next provider."""

    def __init__(self, chain: ProviderChain[AnySTT], *, turn_buffer_seconds: float = 30.0):
        instances = [link.instance for link in chain.links]
        super().__init__(
            capabilities=stt.STTCapabilities(
                streaming=True,
                interim_results=all(s.capabilities.interim_results for s in instances),
            )
        )
        self.chain = chain
        self.turn_buffer_seconds = turn_buffer_seconds
        self._follow_links()

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        result: list[stt.SpeechEvent] = []
        owed = self.chain.deadline + RECOGNIZE_PER_AUDIO_SECOND * _buffer_seconds(buffer)

        async def attempt(link: Link[AnySTT], wd: Watchdog) -> None:
            wd.owe(owed)
            result.append(
                await link.instance.recognize(
                    buffer, language=language, conn_options=INNER_CONN_OPTIONS
                )
            )
            wd.answered()

        await self.chain.run(attempt)
        return result[-1]

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> FailoverRecognizeStream:
        return FailoverRecognizeStream(failover=self, language=language, conn_options=conn_options)


class FailoverRecognizeStream(stt.RecognizeStream):
    def __init__(
        self,
        *,
        failover: FailoverSTT,
        language: NotGivenOr[str],
        conn_options: APIConnectOptions,
    ) -> None:
        super().__init__(stt=failover, conn_options=front_conn_options(conn_options))
        self._failover = failover
        self._language = language
        self.turn = TurnBuffer(failover.turn_buffer_seconds)
        self._inner: stt.RecognizeStream | None = None
        self._wd: Watchdog | None = None
        self._interim = False
        self._input_done = False
        self._unanswered_speech = 0.0
        self._quiet = 0.0
        self._eos_position: float | None = None
        self._speech_end: float | None = None
        """``time.monotonic()`` of the last speech frame, while the caller is quiet."""
        self._final_owed = False
        self._interim_gaps: deque[float] = deque(maxlen=8)
        self._catching_up = False
        """The provider was handed a replayed turn and its results do not reach the live
        audio yet: they answer the backlog in a burst, so they say nothing of its rate
        (learnt from them, a fallback's limit fell to the floor and it was failed over in
        turn). A final, or a result without timings, ends the catching up."""
        self._early = len(failover.chain.links) > 1
        """Early stall detection (end of speech, interim rate): only with somewhere to go;
        a sole provider keeps the deadline."""

    async def _run(self) -> None:
        forward = asyncio.create_task(self._forward_input())
        try:
            await self._failover.chain.run(self._attempt)
        finally:
            await utils.aio.cancel_and_wait(forward)

    # input side: every frame goes to the turn buffer and to the provider serving now

    async def _forward_input(self) -> None:
        async for item in self._input_ch:
            if isinstance(item, rtc.AudioFrame):
                speech = _is_speech(item)
                self.turn.push(item, speech=speech)
                self._track_speech(item, speech)
                if self._inner is not None:
                    with contextlib.suppress(RuntimeError):
                        self._inner.push_frame(item)
            elif self._inner is not None:
                with contextlib.suppress(RuntimeError):
                    self._inner.flush()
        self._input_done = True
        if self._inner is not None:
            with contextlib.suppress(RuntimeError):
                self._inner.end_input()

    def _track_speech(self, frame: rtc.AudioFrame, speech: bool) -> None:
        """The STT clock runs on audio: a provider owes a result for speech it was sent.
        Interim-capable ones answer within their own rate of results while the caller
        speaks (``INTERIM_RATE``; the deadline for a sole provider); every provider owes a
        final once the caller stopped, within its usual final latency from the end of
        speech (``FINAL_LATENCY``; the deadline until it has a history)."""
        wd = self._wd
        if wd is None:
            return
        seconds = _frame_seconds(frame)
        if speech:
            self._quiet = 0.0
            self._speech_end = None
            self._unanswered_speech += seconds
            if self._final_owed:
                # the caller spoke on: a pause, not the end of the turn
                self._final_owed = False
                wd.settle()
            limit = (
                INTERIM_RATE.limit(self._interim_gaps, wd.deadline, self._usual_interim(wd))
                if self._early
                else None
            )
            if self._interim and self._unanswered_speech >= (limit or wd.deadline):
                wd.trip(time.monotonic() - self._unanswered_speech)
            return
        self._quiet += seconds
        if self._speech_end is None:
            self._speech_end = time.monotonic() - self._quiet
        if (
            not self._final_owed
            and self._unanswered_speech >= MIN_OWED_SPEECH
            and not isinstance(self._inner, stt.StreamAdapterWrapper)
        ):
            limit = self._final_limit(wd) if self._early else None
            if limit is not None and self._quiet >= END_OF_SPEECH_SILENCE:
                self._final_owed = True
                wd.owe_within(limit, self._speech_end)
            elif limit is None and self._quiet >= END_OF_TURN_SILENCE:
                # no usable history (or finals slower than the deadline): any result
                # within the deadline after END_OF_TURN_SILENCE of quiet
                wd.owe()

    def _usual_interim(self, wd: Watchdog) -> float | None:
        health = self._failover.chain.health
        return health.latency_p95(wd.provider, INTERIM_RATE.min_gaps + 1, kind="interim")

    def _final_limit(self, wd: Watchdog) -> float | None:
        chain = self._failover.chain
        return FINAL_LATENCY.limit(chain.health.history(wd.provider, "final"), wd.deadline)

    def _answered(self, wd: Watchdog, ev: stt.SpeechEvent) -> None:
        final = ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT
        if final and self._speech_end is not None:
            latency = time.monotonic() - self._speech_end
            self._failover.chain.health.record_latency(wd.provider, "final", latency)
        if self._final_owed and not final:
            return  # a late interim does not pay the final owed
        if self._catching_up:
            self._catching_up = not (final or self._covers(ev, self.turn.position - CATCH_UP_SLACK))
        elif not final and self._unanswered_speech > 0 and self._quiet == 0.0:
            self._interim_gaps.append(self._unanswered_speech)
            chain = self._failover.chain
            chain.health.record_latency(wd.provider, "interim", self._unanswered_speech)
        self._final_owed = False
        self._unanswered_speech = 0.0
        wd.answered()

    # provider side

    async def _attempt(self, link: Link[AnySTT], wd: Watchdog) -> None:
        inner = link.instance.stream(language=self._language, conn_options=INNER_CONN_OPTIONS)
        inner.start_time_offset = self.start_time_offset + self.turn.start
        self._interim = link.instance.capabilities.interim_results
        self._unanswered_speech = 0.0
        self._final_owed = False
        self._interim_gaps.clear()
        # replay and hand-over happen without an await: no frame is lost or sent twice
        replayed = self.turn.frames()
        for frame in replayed:
            inner.push_frame(frame)
        if self._input_done:
            inner.end_input()
        self._inner, self._wd = inner, wd
        self._catching_up = self.turn.has_speech
        if self._interim and self._catching_up:
            wd.owe()
        try:
            async with inner:
                async for ev in inner:
                    if _answers(ev, interim=self._interim):
                        self._answered(wd, ev)
                    if ev.type == stt.SpeechEventType.END_OF_SPEECH:
                        self._eos_position = self.turn.position
                    self._event_ch.send_nowait(ev)
                    if ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT:
                        self._trim_after_final(ev)
                        if self._failover.chain.should_return() and self.turn.duration < 0.05:
                            raise Rotate
            if self._interim and self._unanswered_speech >= UNANSWERED_AT_END:
                # the provider closed without a word for the caller's last speech
                raise StallError("stt", link.id, time.monotonic() - wd.silent_since())
        finally:
            self._inner = self._wd = None

    def _covers(self, ev: stt.SpeechEvent, position: float) -> bool:
        """Whether a result's words reach ``position`` (seconds of the stream); a result
        without timings counts as covering everything."""
        end = ev.alternatives[0].end_time if ev.alternatives else 0.0
        return end <= 0.0 or end - self.start_time_offset >= position

    def _trim_after_final(self, ev: stt.SpeechEvent) -> None:
        end = ev.alternatives[0].end_time - self.start_time_offset if ev.alternatives else 0.0
        if 0.0 < end <= self.turn.position + 0.5:
            self.turn.trim_until(end)
        elif self._eos_position is not None:
            self.turn.trim_until(self._eos_position)
        else:
            self.turn.clear()
        self._eos_position = None


def stt_link(spec: ProviderSpec, deadline: float, vad_: vad.VAD | None) -> Link[AnySTT]:
    """One STT link of a chain: a batch provider comes wrapped in ``stt.StreamAdapter``
    over a ``_DeadlineSTT``, with ``vad_`` (a ``WebRTCVAD`` when None); one with an
    ``interim_every`` (Moonshine) in a ``SegmentStreamAdapter``, for interim text."""
    instance: AnySTT = build(spec)
    if not instance.capabilities.streaming:
        if vad_ is None:
            from pipelines.audio import WebRTCVAD

            vad_ = WebRTCVAD.load()
        batch = _DeadlineSTT(instance, deadline)
        every = getattr(instance, "interim_every", None)
        instance = (
            SegmentStreamAdapter(stt=batch, vad=vad_, interim_every=every, interim_stt=instance)
            if isinstance(every, float)
            else ClosingStreamAdapter(stt=batch, vad=vad_)
        )
    return Link(spec, instance)
