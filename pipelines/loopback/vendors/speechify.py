"""Speechify text-to-speech: the streaming route with speech marks and the one-shot route.

Speaks what ``livekit.plugins.speechify.TTS`` (through the ``speechify-api`` SDK) uses:
``POST /v1/audio/stream/with-timestamps`` with ``{"input", "voice_id", "model",
"output_format": "pcm_24000"}`` answers Server-Sent Events: ``speech.chunk`` events
(``{"type", "audio": base64 PCM, "speech_marks": [...]}``), then one ``speech.done``
(``{"billable_characters_count", "audio_duration_ms"}``). The legacy models use
``POST /v1/audio/speech`` (one JSON: ``audio_data`` base64, ``speech_marks``).
``GET /health`` (the plugin's prewarm) and ``GET /v1/voices`` are served too.

``input`` may be SSML: ``<prosody rate>`` is read (a relative ``+20%``/``-25%``, or
``x-slow`` .. ``x-fast``) and sets the engine's speaking rate; tags are stripped.
"""

from __future__ import annotations

import base64
import html
import json
import re
from typing import Any

from aiohttp import web

from pipelines.loopback.base import RECORD, pcm16
from pipelines.loopback.synthesis import SynthesisServer, word_timings

PCM_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
NAMED_RATES = {"x-slow": 0.5, "slow": 0.75, "medium": 1.0, "fast": 1.25, "x-fast": 1.75}
_RATE = re.compile(r"<prosody\b[^>]*\brate\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")


def prosody_rate(value: str) -> float:
    """A ``<prosody rate>`` value as a speaking-rate factor (``+20%`` -> 1.2)."""
    value = value.strip().lower()
    if value in NAMED_RATES:
        return NAMED_RATES[value]
    if value.endswith("%"):
        number = float(value[:-1])
        # "+20%"/"-25%" are relative changes; a bare "120%" is a fraction of the default
        factor = 1.0 + number / 100 if value[0] in "+-" else number / 100
        if factor > 0:
            return factor
    raise ValueError(f"prosody rate {value!r} is not x-slow..x-fast or a percentage")


def read_input(text: str) -> tuple[str, float]:
    """Plain text and speaking rate of an ``input`` that may be SSML."""
    if not text.lstrip().startswith("<speak"):
        return text, 1.0
    match = _RATE.search(text)
    rate = prosody_rate(match.group(1)) if match else 1.0
    return html.unescape(_TAG.sub("", text)).strip(), rate


class SpeechifyServer(SynthesisServer):
    """Speechify TTS backed by an offline TTS engine."""

    vendor = "speechify"

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/audio/stream/with-timestamps", self._stream),
            web.post("/v1/audio/speech", self._speech),
            web.get("/v1/voices", self._voices),
            web.get("/health", self._health),
        ]

    def error_body(self, status: int) -> dict[str, Any]:
        return {"error": {"code": "internal_error", "message": f"injected failure {status}"}}

    async def _request(self, request: web.Request) -> tuple[dict[str, Any], str, float, int]:
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("input"), str):
            raise ValueError("input: required string")
        if not isinstance(body.get("voice_id"), str) or not body["voice_id"]:
            raise ValueError("voice_id: required string")
        fmt = str(body.get("output_format") or "pcm_24000")
        kind, _, rate = fmt.partition("_")
        if kind != "pcm" or not rate.isdigit() or int(rate) not in PCM_RATES:
            raise ValueError(f"output_format {fmt!r}: the local server serves pcm_<rate> only")
        text, speed = read_input(body["input"])
        record = request[RECORD]
        record.body, record.text = body, text
        return body, text, speed, int(rate)

    @staticmethod
    def _invalid(exc: Exception) -> web.Response:
        return web.json_response(
            {"error": {"code": "validation_failed", "message": str(exc)}}, status=400
        )

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        record = request[RECORD]
        try:
            body, text, speed, rate = await self._request(request)
        except (ValueError, TypeError) as exc:
            return self._invalid(exc)
        audio = await self.synthesize(text, body["voice_id"], speed)
        marks = word_timings(text, audio.duration * 1000)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "Speechify-Audio-Content-Type": "audio/pcm",
            }
        )
        await self.open_stream(request, response)
        for i, chunk in enumerate(self.chunks(pcm16(audio, rate), rate)):
            await self.pace(record, request)
            event: dict[str, Any] = {
                "type": "speech.chunk",
                "audio": base64.b64encode(chunk).decode(),
            }
            if i == 0:
                event["speech_marks"] = marks
            await response.write(_sse(event))
            record.messages_sent += 1
        done = {
            "type": "speech.done",
            "billable_characters_count": len(text),
            "audio_duration_ms": round(audio.duration * 1000),
        }
        await response.write(_sse(done))
        await response.write_eof()
        return response

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        record = request[RECORD]
        try:
            body, text, speed, _ = await self._request(request)
        except (ValueError, TypeError) as exc:
            return self._invalid(exc)
        audio = await self.synthesize(text, body["voice_id"], speed)
        await self.pace(record, request)
        duration = audio.duration * 1000
        record.messages_sent += 1
        return web.json_response(
            {
                "audio_data": base64.b64encode(pcm16(audio, 24000)).decode(),
                "audio_format": "pcm",
                "billable_characters_count": len(text),
                "speech_marks": {
                    "chunks": word_timings(text, duration),
                    "start": 0,
                    "end": len(text),
                    "start_time": 0,
                    "end_time": round(duration),
                    "type": "sentence",
                    "value": text,
                },
            }
        )

    async def _voices(self, request: web.Request) -> web.StreamResponse:
        ids = sorted(set(self.voice_map) | {"local"})
        return web.json_response(
            [
                {
                    "id": v,
                    "type": "shared",
                    "display_name": v,
                    "gender": "not_specified",
                    "locale": "en-US",
                    "models": [{"name": "simba-3.2", "languages": []}],
                }
                for v in ids
            ]
        )

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok"})


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
