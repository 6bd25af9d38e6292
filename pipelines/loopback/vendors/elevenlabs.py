"""ElevenLabs text-to-speech: the multi-stream-input WebSocket and the HTTP stream.

Speaks what ``livekit.plugins.elevenlabs.TTS`` uses: ``stream()`` opens one shared
WebSocket ``/v1/text-to-speech/{voice_id}/multi-stream-input`` and multiplexes contexts
over it (init packet ``{"text": " ", "context_id"}``, text chunks, ``flush``,
``close_context``); the server answers ``{"audio": base64, "alignment", "contextId"}`` per
chunk and ``{"isFinal": true, "contextId"}`` once a closed context is done.
``synthesize()`` POSTs to ``/v1/text-to-speech/{voice_id}/stream`` and reads audio bytes.

Only ``pcm_<rate>`` output formats are produced (the plugin's default is mp3): the plugin
must be built with ``encoding="pcm_22050"`` (or another rate).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from pipelines.loopback.base import RECORD, RequestRecord, WsOutbox, pcm16
from pipelines.loopback.synthesis import SynthesisServer

PCM_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")


def output_rate(output_format: str) -> int:
    """Sample rate of a ``pcm_<rate>`` output format; ValueError for anything else."""
    kind, _, rest = output_format.partition("_")
    rate = rest.split("_")[0]
    if kind != "pcm" or not rate.isdigit() or int(rate) not in PCM_RATES:
        raise ValueError(
            f"output_format {output_format!r} not supported by the local server; "
            f"use one of {', '.join(f'pcm_{r}' for r in PCM_RATES)}"
        )
    return int(rate)


def alignment(text: str, start_ms: float, duration_ms: float) -> dict[str, list[Any]]:
    """Per-character timings spread evenly over the audio (espeak gives none)."""
    chars = list(text)
    step = duration_ms / max(1, len(chars))
    return {
        "chars": chars,
        "charStartTimesMs": [round(start_ms + i * step) for i in range(len(chars))],
        "charDurationsMs": [max(1, round(step)) for _ in chars],
    }


@dataclass
class _Context:
    buffer: str = ""
    clock_ms: float = 0.0
    voice_speed: float = 1.0


@dataclass
class _Job:
    context_id: str
    text: str
    final: bool


class ElevenLabsServer(SynthesisServer):
    """ElevenLabs TTS backed by an offline TTS engine."""

    vendor = "elevenlabs"

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/text-to-speech/{voice_id}/multi-stream-input", self._multi_stream),
            web.post("/v1/text-to-speech/{voice_id}/stream", self._http_stream),
            web.post("/v1/text-to-speech/{voice_id}", self._http_stream),
            web.get("/v1/voices", self._voices),
        ]

    def error_body(self, status: int) -> dict[str, Any]:
        return {"detail": {"status": "injected_failure", "message": f"injected failure {status}"}}

    async def _voices(self, request: web.Request) -> web.StreamResponse:
        ids = sorted(set(self.voice_map) | {"local"})
        return web.json_response(
            {"voices": [{"voice_id": v, "name": v, "category": "premade"} for v in ids]}
        )

    async def _http_stream(self, request: web.Request) -> web.StreamResponse:
        record = request[RECORD]
        try:
            rate = output_rate(request.query.get("output_format", "mp3_44100_128"))
            body = await request.json()
            text = str(body["text"])
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response(
                {"detail": {"status": "invalid_request", "message": str(exc)}}, status=400
            )
        record.body = body
        record.text = text
        settings = body.get("voice_settings") or {}
        audio = await self.synthesize(text, request.match_info["voice_id"], _speed(settings))
        return await self.stream_pcm(request, audio, rate, content_type="audio/pcm")

    async def _multi_stream(self, request: web.Request) -> web.StreamResponse:
        try:
            rate = output_rate(request.query.get("output_format", "mp3_44100_128"))
            inactivity = float(request.query.get("inactivity_timeout", "20"))
        except ValueError as exc:
            return web.json_response(
                {"detail": {"status": "invalid_request", "message": str(exc)}}, status=400
            )
        voice_id = request.match_info["voice_id"]
        # time to first byte is per context (per request), not per socket
        async with self.websocket(request, delays=False) as (ws, outbox):
            session = _MultiStreamSession(self, outbox, request[RECORD], voice_id, rate)
            await session.run(ws, inactivity)
        return ws


def _speed(settings: Any) -> float:
    if isinstance(settings, dict) and isinstance(settings.get("speed"), int | float):
        return float(settings["speed"])
    return 1.0


class _MultiStreamSession:
    """One multi-stream-input WebSocket: contexts buffer text; each context is synthesized
    in order by its own task, paced by the delay knobs (first audio of a context after
    ``first_response_delay``, later chunks after ``response_delay``)."""

    def __init__(
        self,
        server: ElevenLabsServer,
        outbox: WsOutbox,
        record: RequestRecord,
        voice_id: str,
        rate: int,
    ) -> None:
        self.server = server
        self.outbox = outbox
        self.record = record
        self.voice_id = voice_id
        self.rate = rate
        self.contexts: dict[str, _Context] = {}
        self.jobs: asyncio.Queue[_Job | None] = asyncio.Queue()

    async def run(self, ws: web.WebSocketResponse, inactivity: float) -> None:
        worker = asyncio.create_task(self._synthesize_loop(ws))
        dropped = asyncio.create_task(self.outbox.dropped.wait())
        try:
            while True:
                receive = asyncio.create_task(ws.receive(timeout=inactivity))
                done, _ = await asyncio.wait(
                    {receive, dropped, worker}, return_when=asyncio.FIRST_COMPLETED
                )
                if receive not in done:
                    receive.cancel()
                    break
                try:
                    msg = receive.result()
                except TimeoutError:
                    self.record.control.append("inactivity_timeout")
                    break
                if msg.type != WSMsgType.TEXT:
                    break
                if self._on_message(msg.data):
                    continue
        finally:
            dropped.cancel()
            if not worker.done():
                self.jobs.put_nowait(None)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(worker), 0.5)
                worker.cancel()
            with contextlib.suppress(BaseException):
                await worker

    def _on_message(self, raw: str) -> bool:
        try:
            data = json.loads(raw)
        except ValueError:
            self.outbox.send({"error": "invalid_json", "message": "message is not JSON"})
            return False
        if not isinstance(data, dict):
            return False
        context_id = str(data.get("context_id") or data.get("contextId") or "default")
        if data.get("close_socket"):
            self.record.control.append("close_socket")
            for cid in list(self.contexts):
                self._close_context(cid)
            self.jobs.put_nowait(None)
            return True
        if data.get("keep_alive"):
            self.record.control.append("keep_alive")
            return False
        ctx = self.contexts.get(context_id)
        if ctx is None:
            ctx = self.contexts[context_id] = _Context(
                voice_speed=_speed(data.get("voice_settings"))
            )
        if data.get("close_context"):
            self.record.control.append("close_context")
            self._close_context(context_id)
            return False
        text = data.get("text")
        if isinstance(text, str) and text.strip():
            self.record.text += text
            ctx.buffer += text
            *sentences, ctx.buffer = _SENTENCE_END.split(ctx.buffer)
            if sentences:
                self.jobs.put_nowait(_Job(context_id, " ".join(sentences), final=False))
        if data.get("flush"):
            self.record.control.append("flush")
            if ctx.buffer.strip():
                self.jobs.put_nowait(_Job(context_id, ctx.buffer, final=False))
            ctx.buffer = ""
        return False

    def _close_context(self, context_id: str) -> None:
        ctx = self.contexts.get(context_id)
        if ctx is None:
            return
        self.jobs.put_nowait(_Job(context_id, ctx.buffer, final=True))
        ctx.buffer = ""

    async def _synthesize_loop(self, ws: web.WebSocketResponse) -> None:
        """Contexts are synthesized concurrently, as ElevenLabs does (a context the client
        gave up on does not hold up the next one); jobs of one context stay in order."""
        per_context: dict[str, asyncio.Queue[_Job | None]] = {}
        workers: set[asyncio.Task[None]] = set()
        try:
            while True:
                job = await self.jobs.get()
                if job is None:
                    for pending in per_context.values():
                        pending.put_nowait(None)
                    if workers:
                        await asyncio.wait(workers)
                    await self.outbox.drain()
                    await ws.close()
                    return
                queue = per_context.get(job.context_id)
                if queue is None:
                    queue = per_context[job.context_id] = asyncio.Queue()
                    task = asyncio.create_task(self._context_loop(queue))
                    workers.add(task)
                    task.add_done_callback(workers.discard)
                queue.put_nowait(job)
                if job.final:
                    per_context.pop(job.context_id, None)
                    queue.put_nowait(None)
        finally:
            for task in workers:
                task.cancel()

    async def _context_loop(self, queue: asyncio.Queue[_Job | None]) -> None:
        first = True
        while (job := await queue.get()) is not None:
            ctx = self.contexts.get(job.context_id)
            if ctx is None:
                continue
            text = job.text.strip()
            if text:
                audio = await self.server.synthesize(text, self.voice_id, ctx.voice_speed)
                chunks = self.server.chunks(pcm16(audio, self.rate), self.rate)
                duration_ms = audio.duration * 1000
                timing = alignment(text + " ", ctx.clock_ms, duration_ms)
                for i, chunk in enumerate(chunks):
                    await self.server.response_delay(first=first)
                    first = False
                    message: dict[str, Any] = {
                        "audio": base64.b64encode(chunk).decode(),
                        "contextId": job.context_id,
                        "isFinal": None,
                    }
                    if i == 0:
                        message["alignment"] = timing
                        message["normalizedAlignment"] = timing
                    self.outbox.send(message)
                ctx.clock_ms += duration_ms
            if job.final:
                self.contexts.pop(job.context_id, None)
                self.outbox.send({"isFinal": True, "contextId": job.context_id})
