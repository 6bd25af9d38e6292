"""AssemblyAI Universal Streaming (v3: ``/v3/ws``).

Speaks what ``livekit.plugins.assemblyai.STT`` sends and expects: the session settings in
the query (``sample_rate``, ``encoding=pcm_s16le``, ``speech_model``, ``format_turns``,
``min_turn_silence``...), the key in the ``Authorization`` header, binary audio; back come
``Begin``, then ``Turn`` messages (cumulative ``words`` with millisecond timings while the
caller speaks, ``end_of_turn: true`` with the transcript when the turn ends, formatted when
``format_turns`` is on) and ``Termination`` after the caller's ``Terminate``.
``ForceEndpoint`` ends the turn in progress. Turns end after ``min_turn_silence`` of quiet
(400 ms when unset).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from aiohttp import web

from pipelines.loopback.base import RECORD
from pipelines.loopback.streaming import (
    Job,
    SegmentingSession,
    SpeechServer,
    even_words,
    formatted,
)

DEFAULT_TURN_SILENCE_MS = 400


class AssemblyAIServer(SpeechServer):
    """AssemblyAI's v3 streaming WebSocket backed by an offline STT engine."""

    vendor = "assemblyai"

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v3/ws", self._websocket)]

    def error_body(self, status: int) -> dict[str, Any]:
        return {"error": f"injected failure {status}"}

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        if not request.headers.get("Authorization"):
            return web.json_response({"error": "Missing authorization"}, status=401)
        if q.get("encoding", "pcm_s16le") != "pcm_s16le":
            return web.json_response({"error": "only pcm_s16le is supported"}, status=400)
        try:
            sample_rate = int(q["sample_rate"])
            silence = int(q.get("min_turn_silence") or DEFAULT_TURN_SILENCE_MS)
        except (KeyError, ValueError) as exc:
            return web.json_response({"error": f"invalid parameter: {exc}"}, status=400)
        async with self.websocket(request) as (ws, outbox):
            session = _TurnSession(
                self,
                outbox,
                request[RECORD],
                sample_rate=sample_rate,
                silence_ms=silence,
                interim_results=True,
            )
            session.format_turns = q.get("format_turns") == "true"
            outbox.send(
                {"type": "Begin", "id": str(uuid.uuid4()), "expires_at": int(time.time()) + 3600}
            )
            await session.run(ws)
        return ws


class _TurnSession(SegmentingSession):
    format_turns = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.turn_order = 0
        self.opened = time.monotonic()

    def on_control(self, data: dict[str, Any]) -> str:
        kind = str(data.get("type", ""))
        if kind == "Terminate":
            self.close()
        elif kind == "ForceEndpoint":
            self.finalize()
        return kind

    def results(self, job: Job, transcript: str) -> list[dict[str, Any]]:
        text = " ".join(transcript.split())
        final = job.kind == "final"
        if not text:
            return []  # no words: AssemblyAI sends no empty turn
        words = [
            {
                "start": round(s * 1000),
                "end": round(e * 1000),
                "text": w,
                "confidence": 0.9,
                "word_is_final": final,
            }
            for w, s, e in even_words(text, job.start, self.seconds(job))
        ]
        shown = formatted(text) if final and self.format_turns else text
        message = {
            "type": "Turn",
            "turn_order": self.turn_order,
            "turn_is_formatted": final and self.format_turns,
            "end_of_turn": final,
            "end_of_turn_confidence": 0.9 if final else 0.1,
            "transcript": shown,
            "utterance": "",
            "language_code": "en",
            "words": words,
        }
        if final:
            self.turn_order += 1
        return [message]

    def closing(self) -> list[dict[str, Any]]:
        return [
            {
                "type": "Termination",
                "audio_duration_seconds": round(self.segmenter.position / self.sample_rate, 3),
                "session_duration_seconds": round(time.monotonic() - self.opened, 3),
            }
        ]
