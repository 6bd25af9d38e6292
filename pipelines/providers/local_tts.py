"""Offline TTS: the espeak-ng engine (``pipelines.engines.espeak``) as a LiveKit
``tts.TTS``: 22.05 kHz mono, one espeak-ng process per text, streamed from its stdout."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Never

from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    APIConnectionError,
    APIConnectOptions,
    APIError,
    tts,
    utils,
)
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import is_given

from pipelines.engines import (
    DEFAULT_VOICE,
    ESPEAK_SAMPLE_RATE,
    EspeakError,
    espeak_command,
    parse_wav_header,
)


@dataclass
class _TTSOptions:
    voice: str
    speaking_rate: float


class EspeakTTS(tts.TTS[Never]):
    """LiveKit TTS backed by espeak-ng: 22.05 kHz mono, non-streaming (one ChunkedStream
    per text; the framework's sentence tokenizer provides streaming via StreamAdapter)."""

    def __init__(self, *, voice: str = DEFAULT_VOICE, speaking_rate: float = 1.0) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=ESPEAK_SAMPLE_RATE,
            num_channels=1,
        )
        espeak_command(voice, speaking_rate)
        self._opts = _TTSOptions(voice=voice, speaking_rate=speaking_rate)

    @property
    def model(self) -> str:
        return "espeak-ng"

    @property
    def provider(self) -> str:
        return "local"

    @property
    def voice(self) -> str:
        return self._opts.voice

    def update_options(
        self,
        *,
        voice: NotGivenOr[str] = NOT_GIVEN,
        speaking_rate: NotGivenOr[float] = NOT_GIVEN,
    ) -> None:
        new_voice = voice if is_given(voice) else self._opts.voice
        new_rate = speaking_rate if is_given(speaking_rate) else self._opts.speaking_rate
        espeak_command(new_voice, new_rate)
        self._opts.voice, self._opts.speaking_rate = new_voice, new_rate

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> EspeakChunkedStream:
        return EspeakChunkedStream(
            tts=self, input_text=text, conn_options=conn_options, opts=replace(self._opts)
        )


class EspeakChunkedStream(tts.ChunkedStream):
    def __init__(
        self,
        *,
        tts: EspeakTTS,
        input_text: str,
        conn_options: APIConnectOptions,
        opts: _TTSOptions,
    ) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._opts = opts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(
            request_id=utils.shortuuid(),
            sample_rate=ESPEAK_SAMPLE_RATE,
            num_channels=1,
            mime_type="audio/pcm",
        )
        # An asyncio subprocess streams stdout without a thread; the event loop never blocks.
        try:
            proc = await asyncio.create_subprocess_exec(
                *espeak_command(self._opts.voice, self._opts.speaking_rate),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except (OSError, EspeakError) as exc:
            raise APIConnectionError(f"cannot start espeak-ng: {exc}", retryable=False) from exc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(self._input_text.encode())
            await proc.stdin.drain()
            proc.stdin.close()
            buf, header = b"", None
            while chunk := await proc.stdout.read(4410):
                buf += chunk
                if header is None:
                    header = parse_wav_header(buf)
                    if header is None:
                        continue
                    if header[0] != ESPEAK_SAMPLE_RATE:
                        raise EspeakError(
                            f"espeak-ng wrote {header[0]} Hz, expected {ESPEAK_SAMPLE_RATE}"
                        )
                    buf = buf[header[1] :]
                usable = len(buf) - len(buf) % 2
                if usable:
                    output_emitter.push(buf[:usable])
                    buf = buf[usable:]
            if await proc.wait() != 0:
                stderr = await proc.stderr.read() if proc.stderr else b""
                raise APIError(f"espeak-ng exited {proc.returncode}: {stderr.decode()[:200]}")
        except EspeakError as exc:
            raise APIError(str(exc), retryable=False) from exc
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        output_emitter.flush()
