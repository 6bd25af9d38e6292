"""What the text-to-speech wire servers share (ElevenLabs, Speechify, Cartesia): an
offline engine behind them, a map from vendor voice ids to engine voices, chunking of
the PCM they send and evenly spread word timings (espeak gives none).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import web

from pipelines.audio import Audio
from pipelines.loopback.base import RECORD, Knobs, TextToSpeech, WireServer, pcm16

_WORD = re.compile(r"\S+")


class SynthesisServer(WireServer):
    """Base of the TTS wire servers: ``synthesize`` (a vendor voice id and a speed in,
    engine audio out) and ``chunks`` (response-sized PCM pieces)."""

    def __init__(
        self,
        engine: TextToSpeech | None = None,
        *,
        voice_map: dict[str, str] | None = None,
        chunk_ms: int = 200,
        host: str = "127.0.0.1",
        port: int = 0,
        knobs: Knobs | None = None,
    ) -> None:
        """``voice_map`` maps vendor voice ids to engine voices; an unmapped id is tried
        as an engine voice, then falls back to the engine's default voice. ``chunk_ms``
        is the audio length of one response message."""
        super().__init__(host=host, port=port, knobs=knobs)
        self._engine = engine
        self.voice_map = dict(voice_map or {})
        self.chunk_ms = chunk_ms

    @property
    def engine(self) -> TextToSpeech:
        if self._engine is None:
            from pipelines.engines import EspeakEngine

            self._engine = EspeakEngine()
        return self._engine

    async def synthesize(self, text: str, voice_id: str, speed: float) -> Audio:
        voice = self.voice_map.get(voice_id, voice_id)
        try:
            return await asyncio.to_thread(
                self.engine.synthesize, text, voice=voice, speaking_rate=speed
            )
        except ValueError:
            # not an engine voice (a real vendor id): speak with the default voice
            return await asyncio.to_thread(self.engine.synthesize, text, speaking_rate=speed)

    def chunks(self, pcm: bytes, rate: int) -> list[bytes]:
        size = max(2, rate * self.chunk_ms // 1000 * 2)
        return [pcm[i : i + size] for i in range(0, len(pcm), size)]

    async def stream_pcm(
        self, request: web.Request, audio: Audio, rate: int, *, content_type: str
    ) -> web.StreamResponse:
        """``audio`` as a chunked HTTP response of raw 16-bit PCM at ``rate``, paced."""
        record = request[RECORD]
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await self.open_stream(request, response)
        for chunk in self.chunks(pcm16(audio, rate), rate):
            await self.pace(record, request)
            await response.write(chunk)
            record.messages_sent += 1
        await response.write_eof()
        return response


def word_timings(text: str, duration_ms: float) -> list[dict[str, Any]]:
    """``{"value", "start", "end", "start_time", "end_time"}`` per word of ``text``
    (character offsets; milliseconds spread over the audio by word length)."""
    words = list(_WORD.finditer(text))
    total = sum(len(m.group()) for m in words) or 1
    out: list[dict[str, Any]] = []
    clock = 0.0
    for m in words:
        span = duration_ms * len(m.group()) / total
        out.append(
            {
                "value": m.group(),
                "start": m.start(),
                "end": m.end(),
                "start_time": round(clock),
                "end_time": round(clock + span),
            }
        )
        clock += span
    return out
