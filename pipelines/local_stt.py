"""Offline STT: pocketsphinx (its PyPI package ships the US English model), as a sync
engine, an incremental stream, and a LiveKit ``stt.STT``.

Pocketsphinx decoders are not thread-safe and cost ~0.3 s to load, so the engine keeps a
small pool: each call checks one out, decodes, and returns it. Audio goes in as float32
at any rate and is resampled to the model's 16 kHz int16.

Streaming in a LiveKit session comes from the framework: ``PocketsphinxSTT`` is a batch
recognizer (``capabilities.streaming=False``); wrap it with a VAD to get a streaming STT::

    stt.StreamAdapter(stt=PocketsphinxSTT(), vad=WebRTCVAD())   # any livekit vad.VAD
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Never

import numpy as np
from livekit import rtc
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    APIConnectOptions,
    APIError,
    stt,
    utils,
)
from livekit.agents.language import LanguageCode
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import AudioBuffer, is_given
from pocketsphinx import Decoder

from pipelines.audio import Float32Array, float_to_int16, int16_to_float, resample

MODEL_SAMPLE_RATE = 16000
SUPPORTED_LANGUAGES = ("en", "en-us", "en-US")
"""The bundled model is US English; other languages would need another acoustic model."""


class PocketsphinxError(RuntimeError):
    """The decoder could not be created or failed while decoding."""


def _check_language(language: str) -> None:
    if language not in SUPPORTED_LANGUAGES:
        raise ValueError(
            f"language {language!r} is not supported by the bundled pocketsphinx model; "
            f"supported: {', '.join(SUPPORTED_LANGUAGES)}"
        )


class PocketsphinxEngine:
    """Thread-safe batch transcription over a pool of decoders (one per concurrent call)."""

    def __init__(self, *, language: str = "en") -> None:
        _check_language(language)
        self.language = language
        self._idle: list[Decoder] = []
        self._lock = threading.Lock()

    def _new_decoder(self) -> Decoder:
        try:
            return Decoder(logfn="/dev/null")
        except (RuntimeError, ValueError) as exc:
            raise PocketsphinxError(f"cannot load the pocketsphinx model: {exc}") from exc

    @contextmanager
    def _decoder(self) -> Iterator[Decoder]:
        with self._lock:
            decoder = self._idle.pop() if self._idle else None
        if decoder is None:
            decoder = self._new_decoder()
        try:
            yield decoder
        finally:
            with self._lock:
                self._idle.append(decoder)

    def warm_up(self) -> None:
        """Loads one decoder now so the first call does not pay for it."""
        with self._decoder():
            pass

    def transcribe(self, samples: Float32Array, sample_rate: int) -> str:
        """Text of the whole utterance, lowercase words separated by spaces ("" if none)."""
        pcm = float_to_int16(resample(samples, sample_rate, MODEL_SAMPLE_RATE))
        with self._decoder() as decoder:
            try:
                decoder.start_utt()
                decoder.process_raw(pcm.tobytes(), False, True)
                decoder.end_utt()
            except RuntimeError as exc:
                raise PocketsphinxError(f"decoding failed: {exc}") from exc
            hyp = decoder.hyp()
            return _clean(hyp.hypstr) if hyp is not None else ""

    def stream(self, sample_rate: int) -> PocketsphinxStream:
        """An incremental decoder holding one pooled decoder until ``close()``."""
        with self._lock:
            decoder = self._idle.pop() if self._idle else None
        return PocketsphinxStream(
            decoder or self._new_decoder(), sample_rate, release=self._release
        )

    def _release(self, decoder: Decoder) -> None:
        with self._lock:
            self._idle.append(decoder)


def _clean(text: str) -> str:
    # Filler and noise tokens look like "<sil>", "[noise]", "(2)" alternates.
    words = [w for w in text.split() if not w.startswith(("<", "[", "++"))]
    return " ".join(w.split("(")[0] for w in words)


class PocketsphinxStream:
    """Incremental recognition of one utterance: ``push`` audio, read ``partial()``
    hypotheses as it grows, ``final()`` ends the utterance and starts the next.
    Not thread-safe; owned by one caller."""

    def __init__(
        self,
        decoder: Decoder,
        sample_rate: int,
        *,
        release: Callable[[Decoder], None] | None = None,
    ) -> None:
        self._decoder = decoder
        self.sample_rate = sample_rate
        self._release = release
        self._in_utt = False
        self._closed = False

    def push(self, samples: Float32Array) -> None:
        if self._closed:
            raise PocketsphinxError("push() after close()")
        if not self._in_utt:
            self._decoder.start_utt()
            self._in_utt = True
        pcm = float_to_int16(resample(samples, self.sample_rate, MODEL_SAMPLE_RATE))
        self._decoder.process_raw(pcm.tobytes(), False, False)

    def partial(self) -> str:
        hyp = self._decoder.hyp() if self._in_utt else None
        return _clean(hyp.hypstr) if hyp is not None else ""

    def final(self) -> str:
        if not self._in_utt:
            return ""
        self._decoder.end_utt()
        self._in_utt = False
        hyp = self._decoder.hyp()
        return _clean(hyp.hypstr) if hyp is not None else ""

    def reset(self) -> None:
        """Drops the current utterance without a result."""
        if self._in_utt:
            self._decoder.end_utt()
            self._in_utt = False

    def close(self) -> None:
        if self._closed:
            return
        self.reset()
        self._closed = True
        if self._release is not None:
            self._release(self._decoder)


def buffer_to_samples(buffer: AudioBuffer) -> tuple[Float32Array, int]:
    """Mono float32 samples and their rate from LiveKit frames (channels are averaged)."""
    frame = rtc.combine_audio_frames(buffer)
    pcm = np.frombuffer(frame.data, dtype=np.int16)
    if frame.num_channels > 1:
        pcm = pcm.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
    return int16_to_float(pcm), frame.sample_rate


class PocketsphinxSTT(stt.STT[Never]):
    """LiveKit batch STT on pocketsphinx. Decoding runs in a worker thread."""

    def __init__(self, *, language: str = "en", engine: PocketsphinxEngine | None = None) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self._engine = engine or PocketsphinxEngine(language=language)

    @property
    def model(self) -> str:
        return "pocketsphinx-en-us"

    @property
    def provider(self) -> str:
        return "local"

    def prewarm(self) -> None:
        self._engine.warm_up()

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.SpeechEvent:
        if is_given(language):
            try:
                _check_language(language)
            except ValueError as exc:
                raise APIError(str(exc), retryable=False) from exc
        samples, rate = buffer_to_samples(buffer)
        try:
            text = await asyncio.wait_for(
                asyncio.to_thread(self._engine.transcribe, samples, rate),
                timeout=max(conn_options.timeout, 2.0 * len(samples) / max(rate, 1)),
            )
        except TimeoutError as exc:
            raise APIError("pocketsphinx timed out", retryable=True) from exc
        except PocketsphinxError as exc:
            raise APIError(str(exc), retryable=False) from exc
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            request_id=utils.shortuuid(),
            alternatives=[stt.SpeechData(language=LanguageCode("en"), text=text)],
        )
