"""Deepgram ``/v1/listen``: live transcription over WebSocket and the pre-recorded POST.

Speaks what ``livekit.plugins.deepgram.STT`` (v1 API) sends and expects: binary linear16
audio, ``KeepAlive``/``Finalize``/``CloseStream`` text messages, and ``Results``,
``SpeechStarted``, ``UtteranceEnd`` and ``Metadata`` messages back. Utterances are cut by an
energy segmenter on audio time (not wall time), so results do not depend on how fast the
caller pushes audio; each cut is transcribed by the offline STT engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from aiohttp import WSMsgType, web

from pipelines.audio import Float32Array, int16_to_float, rms_dbfs
from pipelines.loopback.base import (
    RECORD,
    Knobs,
    RequestRecord,
    SpeechToText,
    WireServer,
    WsOutbox,
    decode_upload,
)

MODEL_INFO = {"name": "local-pocketsphinx", "version": "1", "arch": "pocketsphinx"}


@dataclass(frozen=True, slots=True)
class SegmentEvent:
    kind: Literal["start", "end"]
    sample: int
    """Stream position of the event, in samples since the stream began."""


class EnergySegmenter:
    """Cuts a sample stream into utterances by short-term energy.

    Speech starts once ``min_speech_ms`` of frames are louder than ``threshold_dbfs`` and
    ends after ``silence_ms`` of quieter frames; event positions are in samples.
    """

    def __init__(
        self,
        sample_rate: int,
        *,
        threshold_dbfs: float = -40.0,
        min_speech_ms: int = 60,
        silence_ms: int = 400,
        frame_ms: int = 20,
    ) -> None:
        self.sample_rate = sample_rate
        self.threshold_dbfs = threshold_dbfs
        self.frame_len = max(1, sample_rate * frame_ms // 1000)
        self.min_speech_frames = max(1, min_speech_ms // frame_ms)
        self.silence_frames = max(1, silence_ms // frame_ms)
        self.reset()

    def reset(self) -> None:
        self.position = 0
        """Samples consumed so far (including the partial frame held back)."""
        self.in_speech = False
        self._pending = np.zeros(0, dtype=np.float32)
        self._loud_run = 0
        self._quiet_run = 0
        self._frames_done = 0

    def interrupt(self) -> None:
        """Ends the current utterance now (a caller's ``Finalize``); the next loud audio
        starts a new one."""
        self.in_speech = False
        self._loud_run = 0
        self._quiet_run = 0

    def push(self, samples: Float32Array) -> list[SegmentEvent]:
        self.position += len(samples)
        buf = np.concatenate([self._pending, samples]) if len(self._pending) else samples
        events: list[SegmentEvent] = []
        n_frames = len(buf) // self.frame_len
        for i in range(n_frames):
            frame = buf[i * self.frame_len : (i + 1) * self.frame_len]
            loud = rms_dbfs(frame) > self.threshold_dbfs
            frame_end = (self._frames_done + 1) * self.frame_len
            self._frames_done += 1
            if not self.in_speech:
                self._loud_run = self._loud_run + 1 if loud else 0
                if self._loud_run >= self.min_speech_frames:
                    self.in_speech = True
                    self._quiet_run = 0
                    events.append(
                        SegmentEvent("start", frame_end - self._loud_run * self.frame_len)
                    )
            else:
                self._quiet_run = 0 if loud else self._quiet_run + 1
                if self._quiet_run >= self.silence_frames:
                    self.in_speech = False
                    self._loud_run = 0
                    events.append(SegmentEvent("end", frame_end - self._quiet_run * self.frame_len))
        self._pending = buf[n_frames * self.frame_len :].copy()
        return events


def _words(
    transcript: str, start: float, duration: float, *, punctuate: bool
) -> list[dict[str, Any]]:
    """Deepgram word entries; the engine gives no word timings, so words share the span
    evenly."""
    tokens = transcript.split()
    if not tokens:
        return []
    step = duration / len(tokens)
    out = []
    for i, tok in enumerate(tokens):
        word: dict[str, Any] = {
            "word": tok.lower(),
            "start": round(start + i * step, 3),
            "end": round(start + (i + 1) * step, 3),
            "confidence": 0.9,
        }
        if punctuate:
            shown = tok.capitalize() if i == 0 else tok
            word["punctuated_word"] = shown + ("." if i == len(tokens) - 1 else "")
        out.append(word)
    return out


def _formatted(transcript: str, *, punctuate: bool, final: bool = True) -> str:
    text = " ".join(transcript.split())
    if not punctuate or not text:
        return text
    return text[0].upper() + text[1:] + ("." if final else "")


def _query_bool(query: Any, name: str, default: bool) -> bool:
    value = query.get(name)
    return default if value is None else value.lower() == "true"


@dataclass
class _Job:
    kind: Literal["interim", "final", "utterance_end", "close"]
    segment: int = 0
    samples: Float32Array | None = None
    start: float = 0.0
    from_finalize: bool = False
    speech_final: bool = False


class DeepgramServer(WireServer):
    """Deepgram ``/v1/listen`` backed by an offline STT engine."""

    vendor = "deepgram"

    def __init__(
        self,
        engine: SpeechToText | None = None,
        *,
        min_endpointing_ms: int = 300,
        interim_interval: float = 1.0,
        threshold_dbfs: float = -40.0,
        host: str = "127.0.0.1",
        port: int = 0,
        knobs: Knobs | None = None,
    ) -> None:
        """``min_endpointing_ms`` floors the caller's ``endpointing`` (the plugin asks for
        25 ms, which an energy segmenter would fire between words); ``interim_interval``
        is the audio time between interim results while someone speaks."""
        super().__init__(host=host, port=port, knobs=knobs)
        self._engine = engine
        self.min_endpointing_ms = min_endpointing_ms
        self.interim_interval = interim_interval
        self.threshold_dbfs = threshold_dbfs

    @property
    def engine(self) -> SpeechToText:
        if self._engine is None:
            from pipelines.engines import PocketsphinxEngine

            self._engine = PocketsphinxEngine()
        return self._engine

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/listen", self._listen), web.post("/v1/listen", self._prerecorded)]

    def error_body(self, status: int) -> dict[str, Any]:
        return {
            "err_code": "INJECTED_FAILURE",
            "err_msg": f"injected failure {status}",
            "request_id": str(uuid.uuid4()),
        }

    async def transcribe(self, samples: Float32Array, sample_rate: int) -> str:
        if len(samples) == 0:
            return ""
        return (await asyncio.to_thread(self.engine.transcribe, samples, sample_rate)).strip()

    async def _prerecorded(self, request: web.Request) -> web.StreamResponse:
        record = request[RECORD]
        raw = await request.read()
        record.audio_bytes = len(raw)
        try:
            samples, rate = decode_upload(raw, request.query)
        except ValueError as exc:
            return web.json_response({"err_code": "Bad Request", "err_msg": str(exc)}, status=400)
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
            return web.json_response(
                {"err_code": "Bad Request", "err_msg": "only encoding=linear16 is supported"},
                status=400,
            )
        try:
            sample_rate = int(q.get("sample_rate", "16000"))
            channels = int(q.get("channels", "1"))
            endpointing = q.get("endpointing", "10")
            endpointing_ms = None if endpointing == "false" else int(endpointing)
            utterance_end = q.get("utterance_end_ms")
            utterance_end_ms = int(utterance_end) if utterance_end else None
        except ValueError as exc:
            return web.json_response({"err_code": "Bad Request", "err_msg": str(exc)}, status=400)
        async with self.websocket(request) as (ws, outbox):
            session = _ListenSession(
                self,
                outbox,
                request[RECORD],
                sample_rate=sample_rate,
                channels=channels,
                interim_results=_query_bool(q, "interim_results", False),
                vad_events=_query_bool(q, "vad_events", False),
                punctuate=_query_bool(q, "punctuate", False)
                or _query_bool(q, "smart_format", False),
                endpointing_ms=endpointing_ms,
                utterance_end_ms=utterance_end_ms,
            )
            await session.run(ws)
        return ws


class _ListenSession:
    """One live-transcription WebSocket: segmentation in the receive loop, recognition
    in one worker task so results go out in order without blocking the audio."""

    PREROLL_S = 0.2

    def __init__(
        self,
        server: DeepgramServer,
        outbox: WsOutbox,
        record: RequestRecord,
        *,
        sample_rate: int,
        channels: int,
        interim_results: bool,
        vad_events: bool,
        punctuate: bool,
        endpointing_ms: int | None,
        utterance_end_ms: int | None,
    ) -> None:
        self.server = server
        self.outbox = outbox
        self.record = record
        self.sample_rate = sample_rate
        self.channels = max(1, channels)
        self.interim_results = interim_results
        self.vad_events = vad_events
        self.punctuate = punctuate
        self.endpointing = endpointing_ms is not None
        self.utterance_end_ms = utterance_end_ms
        silence_ms = max(endpointing_ms or 0, server.min_endpointing_ms)
        self.segmenter = EnergySegmenter(
            sample_rate, threshold_dbfs=server.threshold_dbfs, silence_ms=silence_ms
        )
        self.request_id = str(uuid.uuid4())
        self.started = time.monotonic()
        self.jobs: asyncio.Queue[_Job] = asyncio.Queue()
        self.segment_id = 0
        self.segment_start = 0
        self.segment: list[Float32Array] = []
        self.preroll: deque[Float32Array] = deque()
        self.preroll_len = 0
        self.finalized: set[int] = set()
        self.interim_pending = False
        self.last_interim_len = 0
        self.utterance_end_at: int | None = None
        self.pending_bytes = b""

    async def run(self, ws: web.WebSocketResponse) -> None:
        worker = asyncio.create_task(self._recognize_loop(ws))
        dropped = asyncio.create_task(self.outbox.dropped.wait())
        try:
            while True:
                receive = asyncio.create_task(ws.receive())
                done, _ = await asyncio.wait(
                    {receive, dropped, worker}, return_when=asyncio.FIRST_COMPLETED
                )
                if receive not in done:
                    receive.cancel()
                    break
                msg = receive.result()
                if msg.type == WSMsgType.BINARY:
                    self._on_audio(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    if self._on_control(msg.data):
                        # CloseStream: keep reading until the worker closed the socket
                        continue
                else:
                    break
        finally:
            dropped.cancel()
            if not worker.done():
                worker.cancel()
            with contextlib.suppress(BaseException):
                await worker

    # receive side

    def _on_audio(self, data: bytes) -> None:
        self.record.audio_bytes += len(data)
        data = self.pending_bytes + data
        usable = len(data) // (2 * self.channels) * (2 * self.channels)
        self.pending_bytes = data[usable:]
        pcm = np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)
        samples = int16_to_float(pcm)
        if self.channels > 1:
            samples = samples.reshape(-1, self.channels).mean(axis=1).astype(np.float32)
        chunk_start = self.segmenter.position
        events = self.segmenter.push(samples)
        cursor = 0
        for event in events:
            offset = max(0, min(len(samples), event.sample - chunk_start))
            self._take(samples[cursor:offset])
            cursor = offset
            if event.kind == "start":
                self._begin_segment(event.sample, chunk_start + cursor)
            else:
                self._end_segment(event.sample, speech_final=self.endpointing)
        self._take(samples[cursor:])
        if (
            self.utterance_end_at is not None
            and not self.segmenter.in_speech
            and self.segmenter.position >= self.utterance_end_at
        ):
            self.utterance_end_at = None
            self.jobs.put_nowait(_Job("utterance_end", start=self.segmenter.position))
        self._maybe_interim()

    def _take(self, samples: Float32Array) -> None:
        if len(samples) == 0:
            return
        if self.segmenter.in_speech or self.segment:
            self.segment.append(samples)
            return
        self.preroll.append(samples)
        self.preroll_len += len(samples)
        limit = int(self.PREROLL_S * self.sample_rate)
        while self.preroll and self.preroll_len - len(self.preroll[0]) >= limit:
            self.preroll_len -= len(self.preroll.popleft())

    def _begin_segment(self, sample: int, position: int) -> None:
        self.segment_id += 1
        self.segment = list(self.preroll)
        self.segment_start = position - self.preroll_len
        self.preroll.clear()
        self.preroll_len = 0
        self.last_interim_len = 0
        self.utterance_end_at = None
        if self.vad_events:
            self.outbox.send(
                {
                    "type": "SpeechStarted",
                    "channel": [0],
                    "timestamp": round(sample / self.sample_rate, 3),
                }
            )

    def _end_segment(self, sample: int, *, speech_final: bool, from_finalize: bool = False) -> None:
        if not self.segment:
            return
        samples = np.concatenate(self.segment)
        self.segment = []
        self.jobs.put_nowait(
            _Job(
                "final",
                segment=self.segment_id,
                samples=samples,
                start=self.segment_start / self.sample_rate,
                speech_final=speech_final,
                from_finalize=from_finalize,
            )
        )
        if self.utterance_end_ms is not None:
            self.utterance_end_at = sample + self.utterance_end_ms * self.sample_rate // 1000

    def _maybe_interim(self) -> None:
        if not (self.interim_results and self.segment and self.segmenter.in_speech):
            return
        length = sum(len(s) for s in self.segment)
        if self.interim_pending or length - self.last_interim_len < (
            self.server.interim_interval * self.sample_rate
        ):
            return
        self.last_interim_len = length
        self.interim_pending = True
        self.jobs.put_nowait(
            _Job(
                "interim",
                segment=self.segment_id,
                samples=np.concatenate(self.segment),
                start=self.segment_start / self.sample_rate,
            )
        )

    def _on_control(self, text: str) -> bool:
        try:
            kind = str(json.loads(text).get("type", ""))
        except (ValueError, AttributeError):
            kind = "invalid"
        self.record.control.append(kind)
        if kind == "Finalize":
            self._end_segment(self.segmenter.position, speech_final=False, from_finalize=True)
            self.segmenter.interrupt()
        elif kind == "CloseStream":
            self._end_segment(self.segmenter.position, speech_final=False, from_finalize=True)
            self.jobs.put_nowait(_Job("close"))
            return True
        return False

    # send side

    async def _recognize_loop(self, ws: web.WebSocketResponse) -> None:
        while True:
            job = await self.jobs.get()
            if job.kind == "close":
                self.outbox.send(self._metadata())
                await self.outbox.drain()
                await ws.close()
                return
            if job.kind == "utterance_end":
                self.outbox.send(
                    {
                        "type": "UtteranceEnd",
                        "channel": [0, 1],
                        "last_word_end": round(job.start / self.sample_rate, 3),
                    }
                )
                continue
            if job.kind == "interim":
                self.interim_pending = False
                if job.segment in self.finalized:
                    continue
            assert job.samples is not None
            transcript = await self.server.transcribe(job.samples, self.sample_rate)
            if job.kind == "interim" and job.segment in self.finalized:
                continue
            if job.kind == "final":
                self.finalized.add(job.segment)
                if not transcript and not job.from_finalize:
                    # a noise burst: nothing to report, like Deepgram's empty finals skipped
                    continue
            self.outbox.send(self._results(job, transcript))

    def _results(self, job: _Job, transcript: str) -> dict[str, Any]:
        assert job.samples is not None
        duration = len(job.samples) / self.sample_rate
        final = job.kind == "final"
        return {
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
                        "transcript": _formatted(transcript, punctuate=self.punctuate, final=final),
                        "confidence": 0.9 if transcript else 0.0,
                        "words": _words(transcript, job.start, duration, punctuate=self.punctuate),
                    }
                ]
            },
            "metadata": {
                "request_id": self.request_id,
                "model_info": MODEL_INFO,
                "model_uuid": "00000000-0000-0000-0000-000000000000",
            },
        }

    def _metadata(self) -> dict[str, Any]:
        return {
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
