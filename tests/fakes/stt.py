"""A fake streaming STT that counts the speech it heard and can fail or stall on cue."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Never

import numpy as np
from livekit import rtc
from livekit.agents import APIConnectionError, APIConnectOptions, stt, utils
from livekit.agents.language import LanguageCode
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr
from livekit.agents.utils import is_given


@dataclass
class _FakeSTTOptions:
    fail_after_frames: int | None
    """The stream breaks (connection reset) at the frame after this many."""
    stall_after_frames: int | None
    """The stream goes deaf after this many frames: no interim, no final."""
    final_after_silent_frames: int | None = None
    """Endpointing: a final once this many quiet frames follow speech (else on flush only)."""
    usage_every_frames: int | None = None
    """A ``RECOGNITION_USAGE`` event per this many frames pushed, stalled or not (the
    plugin's own count of the audio it sent, as Deepgram's does)."""
    interim_every: int = 10
    """Speech frames per interim."""
    timed: bool = False
    """Results carry an end time (the stream's audio so far, as Deepgram's words do)."""
    decode_seconds: float = 0.0
    """Wall seconds spent on each frame (a recogniser's decode time: a replayed turn is
    answered over a while, not at once)."""


class FakeSTT(stt.STT[Never]):
    """Streaming STT: an interim per 10 speech frames (``interim_every``), a final on
    flush whose text counts the speech frames it heard (so a replayed turn shows in the
    count)."""

    def __init__(
        self,
        *,
        interim_results: bool = True,
        fail_after_frames: int | None = None,
        stall_after_frames: int | None = None,
        final_after_silent_frames: int | None = None,
        usage_every_frames: int | None = None,
        interim_every: int = 10,
        timed: bool = False,
        decode_seconds: float = 0.0,
    ) -> None:
        super().__init__(
            capabilities=stt.STTCapabilities(streaming=True, interim_results=interim_results)
        )
        self._opts = _FakeSTTOptions(
            fail_after_frames=fail_after_frames,
            stall_after_frames=stall_after_frames,
            final_after_silent_frames=final_after_silent_frames,
            usage_every_frames=usage_every_frames,
            interim_every=interim_every,
            timed=timed,
            decode_seconds=decode_seconds,
        )

    def update_options(
        self,
        *,
        fail_after_frames: NotGivenOr[int | None] = NOT_GIVEN,
        stall_after_frames: NotGivenOr[int | None] = NOT_GIVEN,
    ) -> None:
        """Takes effect in running streams too, from their next frame."""
        if is_given(fail_after_frames):
            self._opts.fail_after_frames = fail_after_frames
        if is_given(stall_after_frames):
            self._opts.stall_after_frames = stall_after_frames

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        raise NotImplementedError

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> FakeSTTStream:
        return FakeSTTStream(stt=self, conn_options=conn_options)


def _event(kind: stt.SpeechEventType, text: str = "", end: float = 0.0) -> stt.SpeechEvent:
    data = stt.SpeechData(language=LanguageCode("en"), text=text, end_time=end)
    return stt.SpeechEvent(type=kind, alternatives=[data])


def _usage(seconds: float) -> stt.SpeechEvent:
    return stt.SpeechEvent(
        type=stt.SpeechEventType.RECOGNITION_USAGE,
        alternatives=[],
        recognition_usage=stt.RecognitionUsage(audio_duration=seconds),
    )


class FakeSTTStream(stt.RecognizeStream):
    async def _run(self) -> None:
        fake = self._stt
        assert isinstance(fake, FakeSTT)
        opts = fake._opts
        frames = speech = quiet = 0
        async for item in self._input_ch:
            if isinstance(item, rtc.AudioFrame):
                frames += 1
                if opts.decode_seconds:
                    await asyncio.sleep(opts.decode_seconds)
                if opts.usage_every_frames and frames % opts.usage_every_frames == 0:
                    self._event_ch.send_nowait(_usage(opts.usage_every_frames * 0.02))
                if opts.fail_after_frames is not None and frames > opts.fail_after_frames:
                    raise APIConnectionError("connection reset")
                if opts.stall_after_frames is not None and frames > opts.stall_after_frames:
                    continue
                if np.abs(np.frombuffer(item.data, np.int16)).max() <= 1000:
                    quiet += 1
                    if speech and quiet == opts.final_after_silent_frames:
                        self._event_ch.send_nowait(
                            _event(stt.SpeechEventType.FINAL_TRANSCRIPT, f"{speech}")
                        )
                        speech = 0
                else:
                    quiet = 0
                    speech += 1
                    if speech % opts.interim_every == 0 and fake.capabilities.interim_results:
                        end = self.start_time_offset + frames * 0.02 if opts.timed else 0.0
                        self._event_ch.send_nowait(
                            _event(stt.SpeechEventType.INTERIM_TRANSCRIPT, f"{speech}", end)
                        )
            elif speech and opts.stall_after_frames is None:
                self._event_ch.send_nowait(
                    _event(stt.SpeechEventType.FINAL_TRANSCRIPT, f"{speech}")
                )
                speech = 0
