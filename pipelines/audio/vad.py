"""Voice activity detection with webrtcvad behind the LiveKit VAD interface.

``WebRTCVAD`` is a ``livekit.agents.vad.VAD`` (a drop-in for silero that needs no model and
costs microseconds per 10 ms); each of its streams runs its own ``VADCore``
(``pipelines.audio.vad_core``), the synchronous numpy core, and turns its decisions into
LiveKit VAD events.
"""

from __future__ import annotations

import logging
import time
import weakref
from dataclasses import asdict, replace
from typing import Unpack

import numpy as np
from livekit import agents, rtc
from livekit.agents.vad import VADEventType

from pipelines.audio.pcm import float_to_int16, int16_to_float
from pipelines.audio.vad_core import VADCore, VADCoreEvent
from pipelines.audio.vad_options import VADOptions, VADSettings, VADUpdate

logger = logging.getLogger(__name__)


class WebRTCVAD(agents.vad.VAD):
    """webrtcvad behind the LiveKit VAD interface; each stream runs its own ``VADCore``."""

    @classmethod
    def load(cls, **settings: Unpack[VADSettings]) -> WebRTCVAD:
        """Options as in ``VADCore``; no model to load, so this is cheap."""
        return cls(opts=VADOptions.create(**settings))

    def __init__(self, *, opts: VADOptions | None = None) -> None:
        """Prefer ``load(...)``; ``WebRTCVAD()`` gives the defaults."""
        opts = opts or VADOptions.create()
        super().__init__(
            capabilities=agents.vad.VADCapabilities(update_interval=opts.frame_ms / 1000)
        )
        self._opts = opts
        self._streams = weakref.WeakSet[WebRTCVADStream]()

    @property
    def model(self) -> str:
        return "webrtcvad"

    @property
    def provider(self) -> str:
        return "webrtc"

    def stream(self) -> WebRTCVADStream:
        stream = WebRTCVADStream(self, self._opts)
        self._streams.add(stream)
        return stream

    def update_options(self, **changes: Unpack[VADUpdate]) -> None:
        """Updates the options of this VAD and of every open stream."""
        self._opts = self._opts.updated(**changes)
        self._capabilities = agents.vad.VADCapabilities(update_interval=self._opts.frame_ms / 1000)
        for stream in self._streams:
            stream.core.apply_options(replace(self._opts))


class WebRTCVADStream(agents.vad.VADStream):
    """Feeds pushed ``rtc.AudioFrame``s to a ``VADCore`` and emits LiveKit VAD events:
    START/END_OF_SPEECH with the utterance audio (plus pre-roll), and one INFERENCE_DONE per
    pushed frame that completed at least one webrtcvad frame."""

    def __init__(self, vad: WebRTCVAD, opts: VADOptions) -> None:
        self._core = VADCore(**asdict(opts))
        super().__init__(vad)

    @property
    def core(self) -> VADCore:
        return self._core

    def update_options(self, **changes: Unpack[VADUpdate]) -> None:
        """Updates this stream only."""
        self._core.update_options(**changes)

    @agents.utils.log_exceptions(logger=logger)
    async def _main_task(self) -> None:
        core = self._core
        pending: list[rtc.AudioFrame] = []
        async for item in self._input_ch:
            if not isinstance(item, rtc.AudioFrame):
                core.reset()  # flush: a hard segment boundary
                pending = []
                continue
            started = time.perf_counter()
            pcm = np.frombuffer(item.data, dtype=np.int16)
            if item.num_channels > 1:
                pcm = pcm.reshape(-1, item.num_channels).mean(axis=1).astype(np.int16)
            events = core.push(int16_to_float(pcm), item.sample_rate)
            inference_duration = time.perf_counter() - started
            pending.append(item)
            for ev in events:
                self._event_ch.send_nowait(
                    agents.vad.VADEvent(
                        type=ev.type,
                        samples_index=ev.samples_index,
                        timestamp=ev.timestamp,
                        speech_duration=ev.speech_duration,
                        silence_duration=ev.silence_duration,
                        frames=_frames_of(ev),
                        speaking=ev.type is VADEventType.START_OF_SPEECH,
                        inference_duration=inference_duration,
                    )
                )
            if core.last_push_frames:
                self._event_ch.send_nowait(
                    agents.vad.VADEvent(
                        type=VADEventType.INFERENCE_DONE,
                        samples_index=core.samples_index,
                        timestamp=core.timestamp,
                        speech_duration=core.speech_duration,
                        silence_duration=core.silence_duration,
                        frames=pending,
                        probability=core.probability,
                        inference_duration=inference_duration,
                        speaking=core.speaking,
                        raw_accumulated_silence=core.raw_accumulated_silence,
                        raw_accumulated_speech=core.raw_accumulated_speech,
                    )
                )
                pending = []


def _frames_of(ev: VADCoreEvent) -> list[rtc.AudioFrame]:
    if ev.audio is None or len(ev.audio) == 0:
        return []
    pcm = float_to_int16(ev.audio)
    return [
        rtc.AudioFrame(
            data=pcm.tobytes(),
            sample_rate=ev.sample_rate,
            num_channels=1,
            samples_per_channel=len(pcm),
        )
    ]
