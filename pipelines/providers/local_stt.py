"""Offline STT: the pocketsphinx engine (``pipelines.engines.pocketsphinx``) as a LiveKit
``stt.STT``.

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
    POCKETSPHINX_SAMPLE_RATE,
    PocketsphinxEngine,
    PocketsphinxError,
    check_language,
)


def buffer_to_samples(buffer: AudioBuffer) -> tuple[Float32Array, int]:
    """Mono float32 samples and their rate from LiveKit frames (channels are averaged)."""
    frame = rtc.combine_audio_frames(buffer)
    pcm = np.frombuffer(frame.data, dtype=np.int16)
    if frame.num_channels > 1:
        pcm = pcm.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
    return int16_to_float(pcm), frame.sample_rate


class _DecoderProcess:
    """A ``python -m pipelines.engines.pocketsphinx serve`` child that decodes for one STT instance.

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
            p for p in (str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH")) if p
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pipelines.engines.pocketsphinx",
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
        check_language(language)
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
                check_language(language)
            except ValueError as exc:
                raise APIError(str(exc), retryable=False) from exc
        samples, rate = buffer_to_samples(buffer)
        pcm = float_to_int16(resample(samples, rate, POCKETSPHINX_SAMPLE_RATE))
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
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            request_id=utils.shortuuid(),
            alternatives=[stt.SpeechData(language=LanguageCode("en"), text=text)],
        )

    async def aclose(self) -> None:
        if self._child is not None:
            await self._child.aclose()
        await super().aclose()
