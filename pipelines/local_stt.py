"""Offline STT: pocketsphinx (its PyPI package ships the US English model), as a sync
engine, an incremental stream, and a LiveKit ``stt.STT``.

Pocketsphinx decoders are not thread-safe and cost ~0.3 s to load, so the engine keeps a
small pool: each call checks one out, decodes, and returns it. Audio goes in as float32
at any rate and is resampled to the model's 16 kHz int16.

``PocketsphinxSTT`` decodes in a child process by default because pocketsphinx holds
the GIL while decoding (see ``_DecoderProcess``).

Streaming in a LiveKit session comes from the framework: ``PocketsphinxSTT`` is a batch
recognizer (``capabilities.streaming=False``); wrap it with a VAD to get a streaming STT::

    stt.StreamAdapter(stt=PocketsphinxSTT(), vad=WebRTCVAD())   # any livekit vad.VAD
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Never, TextIO

import numpy as np
from livekit import rtc
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    APIConnectionError,
    APIConnectOptions,
    APIError,
    APITimeoutError,
    stt,
    utils,
)
from livekit.agents.language import LanguageCode
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import AudioBuffer, is_given
from pocketsphinx import Decoder

from pipelines.audio import (
    Float32Array,
    Int16Array,
    float_to_int16,
    int16_to_float,
    resample,
    rms_dbfs,
)

MODEL_SAMPLE_RATE = 16000
SILENCE_DBFS = -70.0
"""Input quieter than this is treated as silence without decoding."""
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
    """Thread-safe transcription over pools of decoders (one per concurrent call).

    Batch calls use batch cepstral-mean normalisation, so a result depends only on its
    own audio, never on what the decoder heard before. Streams use live normalisation
    (needed for partials) from a separate pool."""

    def __init__(self, *, language: str = "en") -> None:
        _check_language(language)
        self.language = language
        self._idle: dict[str, list[Decoder]] = {"batch": [], "live": []}
        self._lock = threading.Lock()

    def _checkout(self, cmn: str) -> Decoder:
        with self._lock:
            pool = self._idle[cmn]
            if pool:
                return pool.pop()
        try:
            return Decoder(logfn="/dev/null", cmn=cmn)
        except (RuntimeError, ValueError) as exc:
            raise PocketsphinxError(f"cannot load the pocketsphinx model: {exc}") from exc

    def _checkin(self, cmn: str, decoder: Decoder) -> None:
        with self._lock:
            self._idle[cmn].append(decoder)

    @contextmanager
    def _decoder(self, cmn: str) -> Iterator[Decoder]:
        decoder = self._checkout(cmn)
        try:
            yield decoder
        finally:
            self._checkin(cmn, decoder)

    def warm_up(self) -> None:
        """Loads one decoder now so the first call does not pay for it (~0.3 s)."""
        with self._decoder("batch"):
            pass

    def transcribe(self, samples: Float32Array, sample_rate: int) -> str:
        """Text of the whole utterance, lowercase words separated by spaces ("" if none)."""
        return self.transcribe_pcm(
            float_to_int16(resample(samples, sample_rate, MODEL_SAMPLE_RATE))
        )

    def transcribe_pcm(self, pcm: Int16Array) -> str:
        """Like ``transcribe`` for 16 kHz int16 audio that is already at the model's rate."""
        # Digital silence decodes to random words; real rooms are never this quiet.
        if len(pcm) == 0 or rms_dbfs(int16_to_float(pcm)) < SILENCE_DBFS:
            return ""
        with self._decoder("batch") as decoder:
            try:
                decoder.start_utt()
                decoder.process_raw(pcm.tobytes(), False, True)
                decoder.end_utt()
            except RuntimeError as exc:
                raise PocketsphinxError(f"decoding failed: {exc}") from exc
            hyp = decoder.hyp()
            return _clean(hyp.hypstr) if hyp is not None else ""

    def stream(self, sample_rate: int) -> PocketsphinxStream:
        """An incremental recognizer holding one live decoder until ``close()``."""
        return PocketsphinxStream(self, sample_rate)


def _clean(text: str) -> str:
    # Filler and noise tokens look like "<sil>", "[noise]", "(2)" alternates.
    words = [w for w in text.split() if not w.startswith(("<", "[", "++"))]
    return " ".join(w.split("(")[0] for w in words)


class PocketsphinxStream:
    """Incremental recognition: ``push`` audio, read ``partial()`` hypotheses as the
    utterance grows, ``final()`` ends it and starts the next.

    Partials come from a live decoder, whose normalisation needs a few seconds of audio
    to settle; ``final()`` re-decodes the utterance in batch mode (RTF ~0.2), which is
    markedly more accurate. Not thread-safe; owned by one caller."""

    def __init__(self, engine: PocketsphinxEngine, sample_rate: int) -> None:
        self._engine = engine
        self.sample_rate = sample_rate
        self._decoder: Decoder | None = engine._checkout("live")
        self._utterance: list[Float32Array] = []
        self._in_utt = False

    def push(self, samples: Float32Array) -> None:
        if self._decoder is None:
            raise PocketsphinxError("push() after close()")
        if not self._in_utt:
            self._decoder.start_utt()
            self._in_utt = True
        self._utterance.append(samples)
        pcm = float_to_int16(resample(samples, self.sample_rate, MODEL_SAMPLE_RATE))
        self._decoder.process_raw(pcm.tobytes(), False, False)

    def partial(self) -> str:
        hyp = self._decoder.hyp() if self._decoder is not None and self._in_utt else None
        return _clean(hyp.hypstr) if hyp is not None else ""

    def final(self) -> str:
        if not self._in_utt:
            return ""
        samples = np.concatenate(self._utterance)
        self.reset()
        return self._engine.transcribe(samples, self.sample_rate)

    def reset(self) -> None:
        """Drops the current utterance without a result."""
        if self._in_utt and self._decoder is not None:
            self._decoder.end_utt()
        self._in_utt = False
        self._utterance = []

    def close(self) -> None:
        if self._decoder is None:
            return
        self.reset()
        self._engine._checkin("live", self._decoder)
        self._decoder = None


def buffer_to_samples(buffer: AudioBuffer) -> tuple[Float32Array, int]:
    """Mono float32 samples and their rate from LiveKit frames (channels are averaged)."""
    frame = rtc.combine_audio_frames(buffer)
    pcm = np.frombuffer(frame.data, dtype=np.int16)
    if frame.num_channels > 1:
        pcm = pcm.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
    return int16_to_float(pcm), frame.sample_rate


class _DecoderProcess:
    """A ``python -m pipelines.local_stt serve`` child that decodes for one STT instance.

    pocketsphinx holds the GIL while it decodes (RTF ~0.2, so ~0.6 s for a 3 s turn): in
    a thread that would still stall the event loop, and with it the call's audio. A child
    process keeps the loop free and uses the second core. Requests are serialised."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def _ensure_started(self) -> asyncio.subprocess.Process:
        if self._proc is not None and self._proc.returncode is None:
            return self._proc
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")) if p
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pipelines.local_stt",
            "serve",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None
        ready = await proc.stdout.readline()
        if json.loads(ready or b"{}").get("ready") is not True:
            await _kill(proc)
            raise APIConnectionError("pocketsphinx decoder process failed to start")
        self._proc = proc
        return proc

    async def transcribe(self, pcm: Int16Array, *, timeout: float) -> str:
        async with self._lock:
            proc = await self._ensure_started()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(struct.pack("<I", pcm.nbytes) + pcm.tobytes())
                await proc.stdin.drain()
                line = await asyncio.wait_for(proc.stdout.readline(), timeout)
            except TimeoutError as exc:
                # Its state is unknown now; the next call starts a fresh one.
                await _kill(proc)
                raise APITimeoutError("pocketsphinx decoder timed out") from exc
            except (BrokenPipeError, ConnectionResetError) as exc:
                await _kill(proc)
                raise APIConnectionError("pocketsphinx decoder process died") from exc
            if not line:
                await _kill(proc)
                raise APIConnectionError("pocketsphinx decoder process died")
            reply = json.loads(line)
            if "error" in reply:
                raise APIError(str(reply["error"]), retryable=False)
            return str(reply["text"])

    async def aclose(self) -> None:
        if self._proc is not None:
            await _kill(self._proc)
            self._proc = None


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


def serve(stdin: BinaryIO, stdout: TextIO) -> int:
    """The decoder child's loop: length-prefixed 16 kHz int16 PCM in, one JSON line out."""
    engine = PocketsphinxEngine()
    engine.warm_up()
    stdout.write(json.dumps({"ready": True}) + "\n")
    stdout.flush()
    while len(header := stdin.read(4)) == 4:
        (size,) = struct.unpack("<I", header)
        pcm = np.frombuffer(stdin.read(size), dtype=np.int16)
        try:
            reply: dict[str, str] = {"text": engine.transcribe_pcm(pcm)}
        except PocketsphinxError as exc:
            reply = {"error": str(exc)}
        stdout.write(json.dumps(reply) + "\n")
        stdout.flush()
    return 0


class PocketsphinxSTT(stt.STT[Never]):
    """LiveKit batch STT on pocketsphinx.

    By default decoding runs in a child process (see ``_DecoderProcess``) so the event
    loop never stalls; ``in_process=True`` decodes in a worker thread instead, for
    callers that own no event-loop-sensitive audio (tests, offline replay)."""

    def __init__(
        self,
        *,
        language: str = "en",
        in_process: bool = False,
        engine: PocketsphinxEngine | None = None,
    ) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        _check_language(language)
        self._engine: PocketsphinxEngine | None = None
        self._child: _DecoderProcess | None = None
        if in_process:
            self._engine = engine or PocketsphinxEngine(language=language)
        else:
            self._child = _DecoderProcess()

    @property
    def model(self) -> str:
        return "pocketsphinx-en-us"

    @property
    def provider(self) -> str:
        return "local"

    def prewarm(self) -> None:
        if self._engine is not None:
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
        pcm = float_to_int16(resample(samples, rate, MODEL_SAMPLE_RATE))
        # Decoding runs at RTF ~0.2; allow for a loaded machine but not for a hang.
        timeout = max(conn_options.timeout, 2.0 * len(pcm) / MODEL_SAMPLE_RATE)
        if self._child is not None:
            text = await self._child.transcribe(pcm, timeout=timeout)
        else:
            assert self._engine is not None
            try:
                text = await asyncio.wait_for(
                    asyncio.to_thread(self._engine.transcribe_pcm, pcm), timeout
                )
            except TimeoutError as exc:
                raise APITimeoutError("pocketsphinx timed out") from exc
            except PocketsphinxError as exc:
                raise APIError(str(exc), retryable=False) from exc
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            request_id=utils.shortuuid(),
            alternatives=[stt.SpeechData(language=LanguageCode("en"), text=text)],
        )

    async def aclose(self) -> None:
        if self._child is not None:
            await self._child.aclose()
        await super().aclose()


if __name__ == "__main__":
    if sys.argv[1:] != ["serve"]:
        print("usage: python -m pipelines.local_stt serve", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(serve(sys.stdin.buffer, sys.stdout))
