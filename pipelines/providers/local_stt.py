"""Offline STT: Moonshine base-en (``pipelines.engines.moonshine``, the default) and
pocketsphinx (``pipelines.engines.pocketsphinx``, its fallback) as LiveKit ``stt.STT``s.

Both transcribe in a child process (see ``DecoderProcess``): pocketsphinx holds the GIL
while decoding, and Moonshine keeps memory after every transcription.

Streaming in a LiveKit session comes from the framework: both are batch recognizers
(``capabilities.streaming=False``); wrap one with a VAD to get a streaming STT::

    stt.StreamAdapter(stt=MoonshineSTT(), vad=WebRTCVAD())   # any livekit vad.VAD
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
import sys
from pathlib import Path
from typing import Never

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

from pipelines.audio import Float32Array, Int16Array, float_to_int16, int16_to_float, resample
from pipelines.engines import (
    MOONSHINE_SAMPLE_RATE,
    POCKETSPHINX_SAMPLE_RATE,
    PocketsphinxEngine,
    PocketsphinxError,
    check_language,
)
from pipelines.providers.segment_stream import INTERIM_EVERY


def buffer_to_samples(buffer: AudioBuffer) -> tuple[Float32Array, int]:
    """Mono float32 samples and their rate from LiveKit frames (channels are averaged)."""
    frame = rtc.combine_audio_frames(buffer)
    pcm = np.frombuffer(frame.data, dtype=np.int16)
    if frame.num_channels > 1:
        pcm = pcm.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
    return int16_to_float(pcm), frame.sample_rate


class DecoderProcess:
    """A ``python -m <engine> serve`` child (``pipelines.engines.decoder_child``) that
    transcribes for one STT instance. Requests are serialised.

    pocketsphinx holds the GIL while it decodes (RTF ~0.2, so ~0.6 s for a 3 s turn): in
    a thread that would still stall the event loop, and with it the call's audio. A child
    process keeps the loop free and uses the second core. Moonshine keeps memory after
    every transcription: with ``max_rss_mb`` the child that grew past it is replaced as
    soon as it answers, its successor warming up while the call goes on."""

    def __init__(self, module: str, *, name: str, max_rss_mb: float | None = None) -> None:
        self.module = module
        self.name = name
        self.max_rss_mb = max_rss_mb
        self.rss_mb = 0.0
        """The child's resident memory after its last answer."""
        self.recycled = 0
        """Children replaced for their memory so far."""
        self._proc: asyncio.subprocess.Process | None = None
        self._starting: asyncio.Task[asyncio.subprocess.Process] | None = None
        self._spawns: set[asyncio.Task[asyncio.subprocess.Process]] = set()
        """Every start still running (one cancelled by a caller's timeout too), for aclose."""
        self._lock = asyncio.Lock()

    def start_soon(self) -> None:
        """Starts the child in the background (it loads and warms its model)."""
        if self._starting is None and (self._proc is None or self._proc.returncode is not None):
            self._starting = asyncio.create_task(self._spawn())
            self._spawns.add(self._starting)
            self._starting.add_done_callback(self._spawns.discard)

    async def _spawn(self) -> asyncio.subprocess.Process:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH")) if p
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            self.module,
            "serve",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None
        try:
            ready = await proc.stdout.readline()
        except BaseException:
            await _kill(proc)
            raise
        if json.loads(ready or b"{}").get("ready") is not True:
            await _kill(proc)
            raise APIConnectionError(f"{self.name} decoder process failed to start")
        return proc

    async def _ensure_started(self) -> asyncio.subprocess.Process:
        if self._proc is not None and self._proc.returncode is None:
            return self._proc
        self.start_soon()
        assert self._starting is not None
        try:
            self._proc = await self._starting
        finally:
            self._starting = None
        return self._proc

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
                raise APITimeoutError(f"{self.name} decoder timed out") from exc
            except asyncio.CancelledError:
                # an answer may still come for this request: never read it as the next one's
                proc.kill()
                self._proc = None
                raise
            except (BrokenPipeError, ConnectionResetError) as exc:
                await _kill(proc)
                raise APIConnectionError(f"{self.name} decoder process died") from exc
            if not line:
                await _kill(proc)
                raise APIConnectionError(f"{self.name} decoder process died")
            reply = json.loads(line)
            self.rss_mb = float(reply.get("rss_mb", 0.0))
            if self.max_rss_mb is not None and self.rss_mb > self.max_rss_mb:
                await _kill(proc)
                self._proc = None
                self.recycled += 1
                self.start_soon()
            if "error" in reply:
                raise APIError(str(reply["error"]), retryable=False)
            return str(reply["text"])

    async def aclose(self) -> None:
        self._starting = None
        for starting in list(self._spawns):
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, APIConnectionError):
                proc = await starting
                await _kill(proc)
        if self._proc is not None:
            await _kill(self._proc)
            self._proc = None


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


def _request_pcm(buffer: AudioBuffer, language: NotGivenOr[str], rate: int) -> Int16Array:
    """The request's audio as the engine takes it (mono int16 at ``rate``), once its
    language is checked (English only, as the bundled models)."""
    if is_given(language):
        try:
            check_language(language)
        except ValueError as exc:
            raise APIError(str(exc), retryable=False) from exc
    samples, sample_rate = buffer_to_samples(buffer)
    return float_to_int16(resample(samples, sample_rate, rate))


def _final(text: str) -> stt.SpeechEvent:
    return stt.SpeechEvent(
        type=stt.SpeechEventType.FINAL_TRANSCRIPT,
        request_id=utils.shortuuid(),
        alternatives=[stt.SpeechData(language=LanguageCode("en"), text=text)],
    )


class PocketsphinxSTT(stt.STT[Never]):
    """LiveKit batch STT on pocketsphinx.

    By default decoding runs in a child process (see ``DecoderProcess``) so the event
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
        check_language(language)
        self._engine: PocketsphinxEngine | None = None
        self._child: DecoderProcess | None = None
        if in_process:
            self._engine = engine or PocketsphinxEngine(language=language)
        else:
            self._child = DecoderProcess("pipelines.engines.pocketsphinx", name="pocketsphinx")

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
        pcm = _request_pcm(buffer, language, POCKETSPHINX_SAMPLE_RATE)
        # Decoding runs at RTF ~0.2; allow for a loaded machine but not for a hang.
        timeout = max(conn_options.timeout, 2.0 * len(pcm) / POCKETSPHINX_SAMPLE_RATE)
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
        return _final(text)

    async def aclose(self) -> None:
        if self._child is not None:
            await self._child.aclose()
        await super().aclose()


MOONSHINE_MAX_RSS_MB = 1000.0
"""Resident memory past which the Moonshine child is replaced. It holds ~130 MB idle,
~620 MB after its first segment, then grows by 50-90 MB per segment: replaced every ~5
segments, peaking near 1.06 GB (``voice-worker bench stt`` prints the figures)."""


class MoonshineSTT(stt.STT[Never]):
    """LiveKit batch STT on Moonshine base-en (``pipelines.engines.moonshine``), English only.

    Each ``recognize`` is one whole VAD segment (the chain wraps this STT in a
    ``SegmentStreamAdapter``, which also asks for interim text every ``interim_every``
    seconds of a long segment), transcribed as one piece: split into phrases, Moonshine
    loses the context that makes a phrase's last words out. It runs in a child process
    that starts (and warms its model) when the STT is made inside an event loop, and is
    replaced once it holds more than ``max_rss_mb``."""

    def __init__(
        self,
        *,
        language: str = "en",
        max_rss_mb: float = MOONSHINE_MAX_RSS_MB,
        interim_every: float = INTERIM_EVERY,
    ) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        check_language(language)
        self.interim_every = interim_every
        """Seconds of an open segment between interim transcripts (``SegmentStreamAdapter``)."""
        self._child = DecoderProcess(
            "pipelines.engines.moonshine", name="moonshine", max_rss_mb=max_rss_mb
        )
        with contextlib.suppress(RuntimeError):  # no running loop: start on first use
            asyncio.get_running_loop()
            self._child.start_soon()

    @property
    def model(self) -> str:
        return "moonshine-base-en"

    @property
    def provider(self) -> str:
        return "local"

    @property
    def child(self) -> DecoderProcess:
        """The transcriber process (its memory and how often it was replaced)."""
        return self._child

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.SpeechEvent:
        pcm = _request_pcm(buffer, language, MOONSHINE_SAMPLE_RATE)
        # ~0.1 s per second of speech on a free core; a cold child loads for seconds
        timeout = max(conn_options.timeout, 2.0 * len(pcm) / MOONSHINE_SAMPLE_RATE)
        return _final(await self._child.transcribe(pcm, timeout=timeout))

    async def aclose(self) -> None:
        await self._child.aclose()
        await super().aclose()
