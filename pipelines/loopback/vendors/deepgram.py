"""Deepgram ``/v1/listen`` (Nova: live WebSocket and pre-recorded POST) and ``/v2/listen``
(Flux: live WebSocket with its own end-of-turn).

v1 speaks what ``livekit.plugins.deepgram.STT`` sends and expects: binary linear16 audio,
``KeepAlive``/``Finalize``/``CloseStream`` text messages, and ``Results``,
``SpeechStarted``, ``UtteranceEnd`` and ``Metadata`` messages back. v2 speaks what
``deepgram.STTv2`` expects: ``Connected``, then ``TurnInfo`` messages whose ``event`` is
``StartOfTurn`` (with the first words), ``Update`` and ``EndOfTurn``; ``Configure`` is
answered ``ConfigureSuccess``, ``CloseStream`` ends the session. Both cut utterances with
the shared energy segmenter (``pipelines.loopback.streaming``).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from aiohttp import web

from pipelines.loopback.base import RECORD, decode_upload
from pipelines.loopback.streaming import (
    Job,
    SegmentingSession,
    SpeechServer,
    even_words,
    formatted,
)

MODEL_INFO = {"name": "local-pocketsphinx", "version": "1", "arch": "pocketsphinx"}


def _words(
    transcript: str, start: float, duration: float, *, punctuate: bool
) -> list[dict[str, Any]]:
    """Deepgram v1 word entries."""
    spans = even_words(transcript, start, duration)
    out = []
    for i, (tok, begin, end) in enumerate(spans):
        word: dict[str, Any] = {
            "word": tok.lower(),
            "start": round(begin, 3),
            "end": round(end, 3),
            "confidence": 0.9,
        }
        if punctuate:
            shown = tok.capitalize() if i == 0 else tok
            word["punctuated_word"] = shown + ("." if i == len(spans) - 1 else "")
        out.append(word)
    return out


def _formatted(transcript: str, *, punctuate: bool, final: bool = True) -> str:
    return formatted(transcript, final=final) if punctuate else " ".join(transcript.split())


def _query_bool(query: Any, name: str, default: bool) -> bool:
    value = query.get(name)
    return default if value is None else value.lower() == "true"


def _bad_request(message: str) -> web.Response:
    return web.json_response({"err_code": "Bad Request", "err_msg": message}, status=400)


class DeepgramServer(SpeechServer):
    """Deepgram ``/v1/listen`` and ``/v2/listen`` backed by an offline STT engine."""

    vendor = "deepgram"

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/listen", self._listen),
            web.post("/v1/listen", self._prerecorded),
            web.get("/v2/listen", self._listen_v2),
        ]

    def error_body(self, status: int) -> dict[str, Any]:
        return {
            "err_code": "INJECTED_FAILURE",
            "err_msg": f"injected failure {status}",
            "request_id": str(uuid.uuid4()),
        }

    async def _prerecorded(self, request: web.Request) -> web.StreamResponse:
        record = request[RECORD]
        raw = await request.read()
        record.audio_bytes = len(raw)
        try:
            samples, rate = decode_upload(raw, request.query)
        except ValueError as exc:
            return _bad_request(str(exc))
        punctuate = _query_bool(request.query, "punctuate", False)
        transcript = await self.transcribe(samples, rate)
        duration = len(samples) / rate
        await self.pace(record, request)
        record.messages_sent += 1
        request_id = str(uuid.uuid4())
        return web.json_response(
            {
                "metadata": {
                    "request_id": request_id,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "duration": duration,
                    "channels": 1,
                    "models": [MODEL_INFO["name"]],
                },
                "results": {
                    "channels": [
                        {
                            "alternatives": [
                                {
                                    "transcript": _formatted(transcript, punctuate=punctuate),
                                    "confidence": 0.9 if transcript else 0.0,
                                    "words": _words(transcript, 0.0, duration, punctuate=punctuate),
                                }
                            ]
                        }
                    ]
                },
            }
        )

    async def _listen(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        if q.get("encoding", "linear16") != "linear16":
            return _bad_request("only encoding=linear16 is supported")
        try:
            sample_rate = int(q.get("sample_rate", "16000"))
            channels = int(q.get("channels", "1"))
            endpointing = q.get("endpointing", "10")
            endpointing_ms = None if endpointing == "false" else int(endpointing)
            utterance_end = q.get("utterance_end_ms")
            utterance_end_ms = int(utterance_end) if utterance_end else None
        except ValueError as exc:
            return _bad_request(str(exc))
        async with self.websocket(request) as (ws, outbox):
            session = _ListenSession(
                self,
                outbox,
                request[RECORD],
                sample_rate=sample_rate,
                channels=channels,
                silence_ms=endpointing_ms or 0,
                interim_results=_query_bool(q, "interim_results", False),
                utterance_end_ms=utterance_end_ms,
                speech_final=endpointing_ms is not None,
            )
            session.vad_events = _query_bool(q, "vad_events", False)
            session.punctuate = _query_bool(q, "punctuate", False) or _query_bool(
                q, "smart_format", False
            )
            await session.run(ws)
        return ws

    async def _listen_v2(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        if not q.get("model", "").startswith("flux"):
            return _bad_request("v2/listen serves the flux models only")
        if q.get("encoding", "linear16") != "linear16":
            return _bad_request("only encoding=linear16 is supported")
        try:
            sample_rate = int(q.get("sample_rate", "16000"))
        except ValueError as exc:
            return _bad_request(str(exc))
        async with self.websocket(request) as (ws, outbox):
            session = _FluxSession(
                self,
                outbox,
                request[RECORD],
                sample_rate=sample_rate,
                silence_ms=0,
                interim_results=True,
            )
            outbox.send({"type": "Connected", "request_id": session.request_id, "sequence_id": 0})
            await session.run(ws)
        return ws


class _ListenSession(SegmentingSession):
    """One v1 live-transcription WebSocket."""

    vad_events = False
    punctuate = False

    def speech_started(self, seconds: float) -> None:
        if self.vad_events:
            self.outbox.send({"type": "SpeechStarted", "channel": [0], "timestamp": seconds})

    def utterance_end(self, last_word_end: float) -> None:
        self.outbox.send(
            {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": last_word_end}
        )

    def on_control(self, data: dict[str, Any]) -> str:
        kind = str(data.get("type", ""))
        if kind == "Finalize":
            self.finalize()
        elif kind == "CloseStream":
            self.close()
        return kind

    def results(self, job: Job, transcript: str) -> list[dict[str, Any]]:
        final = job.kind == "final"
        if final and not transcript and not job.from_finalize:
            return []  # a noise burst: nothing to report, like Deepgram's empty finals skipped
        duration = self.seconds(job)
        return [
            {
                "type": "Results",
                "channel_index": [0, 1],
                "duration": round(duration, 3),
                "start": round(job.start, 3),
                "is_final": final,
                "speech_final": final and job.speech_final,
                "from_finalize": job.from_finalize,
                "channel": {
                    "alternatives": [
                        {
                            "transcript": _formatted(
                                transcript, punctuate=self.punctuate, final=final
                            ),
                            "confidence": 0.9 if transcript else 0.0,
                            "words": _words(
                                transcript, job.start, duration, punctuate=self.punctuate
                            ),
                        }
                    ]
                },
                "metadata": {
                    "request_id": self.request_id,
                    "model_info": MODEL_INFO,
                    "model_uuid": "00000000-0000-0000-0000-000000000000",
                },
            }
        ]

    def closing(self) -> list[dict[str, Any]]:
        return [
            {
                "type": "Metadata",
                "transaction_key": "deprecated",
                "request_id": self.request_id,
                "sha256": "",
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "duration": round(self.segmenter.position / self.sample_rate, 3),
                "channels": self.channels,
                "models": [MODEL_INFO["name"]],
                "model_info": {},
            }
        ]


class _FluxSession(SegmentingSession):
    """One v2 (Flux) WebSocket: a turn opens as speech begins (``StartOfTurn``), grows
    (``Update``) and closes at the end of the utterance (``EndOfTurn``), which the plugin
    turns into the final transcript and the end of speech."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sequence = 0
        self.turn_index = -1
        self.open_segment: int | None = None

    def speech_started(self, seconds: float) -> None:
        # Flux's StartOfTurn fires as speech begins, before its words are transcribed; with
        # the previous turn still closing, the first words open it instead (keeps the order)
        if self.open_segment is None:
            self.turn_index += 1
            self.open_segment = self.segment_id
            self.outbox.send(self._turn("StartOfTurn", Job("interim", start=seconds), ""))

    def on_control(self, data: dict[str, Any]) -> str:
        kind = str(data.get("type", ""))
        if kind == "CloseStream":
            self.close()
        elif kind == "Configure":
            self.outbox.send(self._message({"type": "ConfigureSuccess"}))
        return kind

    def _message(self, body: dict[str, Any]) -> dict[str, Any]:
        self.sequence += 1
        return {**body, "request_id": self.request_id, "sequence_id": self.sequence}

    def _turn(self, event: str, job: Job, transcript: str) -> dict[str, Any]:
        text = " ".join(transcript.split())
        return self._message(
            {
                "type": "TurnInfo",
                "event": event,
                "turn_index": self.turn_index,
                "audio_window_start": round(job.start, 3),
                "audio_window_end": round(job.start + self.seconds(job), 3),
                "transcript": text,
                "words": [{"word": w, "confidence": 0.9} for w in text.split()],
                "end_of_turn_confidence": 0.9 if event == "EndOfTurn" else 0.1,
            }
        )

    def results(self, job: Job, transcript: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if transcript and self.open_segment != job.segment:
            self.turn_index += 1
            self.open_segment = job.segment
            out.append(self._turn("StartOfTurn", job, transcript))
        elif transcript and job.kind == "interim":
            out.append(self._turn("Update", job, transcript))
        if job.kind == "final" and self.open_segment == job.segment:
            self.open_segment = None
            out.append(self._turn("EndOfTurn", job, transcript))
        return out
