"""Baseten's streaming Whisper truss (``.../environments/production/websocket``).

Speaks what ``livekit.plugins.baseten.STT`` (model ``whisper``) sends and expects: an
``Authorization: Api-Key ...`` handshake, one JSON metadata message first
(``whisper_params``, ``streaming_params``, ``streaming_vad_config``; unknown keys are
refused, as the truss's ``extra="forbid"`` model does), then binary ``pcm_s16le`` audio;
back come ``{"type": "transcription", "is_final": ..., "segments": [...]}`` messages,
partial ones every ``partial_transcript_interval_s`` of speech when enabled. Utterances end
after the metadata's ``min_silence_duration_ms`` (the server's VAD); the plugin has no end
of turn of its own. ``{"terminate_session": true}`` flushes and closes.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import WSMsgType, web

from pipelines.loopback.base import RECORD
from pipelines.loopback.streaming import Job, SegmentingSession, SpeechServer, even_words

METADATA_KEYS = frozenset({"whisper_params", "streaming_params", "streaming_vad_config"})
ENDPOINT = "/environments/{environment}/websocket"
"""The path of a truss or chain deployment's WebSocket."""


def _metadata_error(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "the first message must be the JSON metadata object"
    unknown = sorted(set(data) - METADATA_KEYS)
    if unknown:
        return f"metadata: extra fields not permitted: {', '.join(unknown)}"
    streaming = data.get("streaming_params") or {}
    if streaming.get("encoding", "pcm_s16le") != "pcm_s16le":
        return "streaming_params.encoding: only pcm_s16le is supported"
    return None


class BasetenServer(SpeechServer):
    """Baseten's streaming Whisper WebSocket backed by an offline STT engine."""

    vendor = "baseten"

    def routes(self) -> list[web.RouteDef]:
        return [web.get(ENDPOINT, self._websocket)]

    def error_body(self, status: int) -> dict[str, Any]:
        return {"error": f"injected failure {status}"}

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if not request.headers.get("Authorization", "").startswith(("Api-Key ", "Bearer ")):
            return web.json_response({"error": "missing Api-Key authorization"}, status=401)
        async with self.websocket(request) as (ws, outbox):
            first = await ws.receive()
            try:
                data = json.loads(first.data) if first.type == WSMsgType.TEXT else None
            except ValueError:
                data = None
            error = _metadata_error(data)
            if error is not None or not isinstance(data, dict):
                await ws.send_json({"type": "error", "message": error})
                await ws.close(code=1008, message=b"invalid metadata")
                return ws
            request[RECORD].control.append("metadata")
            whisper = data.get("whisper_params") or {}
            streaming = data.get("streaming_params") or {}
            vad = data.get("streaming_vad_config") or {}
            session = _WhisperSession(
                self,
                outbox,
                request[RECORD],
                sample_rate=int(streaming.get("sample_rate", 16000)),
                silence_ms=int(vad.get("min_silence_duration_ms", 300)),
                interim_results=bool(streaming.get("enable_partial_transcripts", False)),
                interim_interval=float(streaming.get("partial_transcript_interval_s", 1.0)),
            )
            session.language = str(whisper.get("audio_language") or "en")
            session.word_timestamps = bool(whisper.get("show_word_timestamps", True))
            await session.run(ws)
        return ws


class _WhisperSession(SegmentingSession):
    language = "en"
    word_timestamps = True

    def on_control(self, data: dict[str, Any]) -> str:
        if data.get("terminate_session"):
            self.close()
            return "terminate_session"
        return "unknown"

    def results(self, job: Job, transcript: str) -> list[dict[str, Any]]:
        text = " ".join(transcript.split())
        if not text:
            return []  # silence or a noise burst: the truss sends nothing
        duration = self.seconds(job)
        segment: dict[str, Any] = {
            "text": text,
            "start_time": round(job.start, 3),
            "end_time": round(job.start + duration, 3),
        }
        if self.word_timestamps:
            segment["word_timestamps"] = [
                {"word": w, "start_time": round(s, 3), "end_time": round(e, 3)}
                for w, s, e in even_words(text, job.start, duration)
            ]
        return [
            {
                "type": "transcription",
                "is_final": job.kind == "final",
                "transcript": text,
                "confidence": 0.9,
                "language_code": "en" if self.language == "auto" else self.language,
                "segments": [segment],
            }
        ]
