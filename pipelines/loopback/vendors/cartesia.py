"""Cartesia text-to-speech: the WebSocket (``/tts/websocket``) and bytes (``/tts/bytes``) APIs.

Speaks what ``livekit.plugins.cartesia.TTS`` uses. ``stream()`` opens (and pools) one
WebSocket ``/tts/websocket?cartesia_version=...`` and sends, per sentence, ``{"model_id",
"voice": {"mode": "id", "id"}, "output_format": {"container": "raw", "encoding":
"pcm_s16le", "sample_rate"}, "language", "generation_config": {"speed"}, "add_timestamps",
"context_id", "transcript", "continue": true}``, then one ``"continue": false``; the
server answers per context ``{"type": "chunk", "data": base64 PCM, "done": false}``,
``{"type": "timestamps", "word_timestamps": {"words", "start", "end"}}`` and finally
``{"type": "done", "done": true}``. ``{"context_id", "cancel": true}`` drops a context.
``synthesize()`` POSTs the same options with ``transcript`` to ``/tts/bytes`` and reads
raw PCM.

The speed is ``generation_config.speed`` (sonic-3) or the older
``voice.__experimental_controls.speed`` (a number or ``slowest`` .. ``fastest``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from pipelines.loopback.base import RECORD, RequestRecord, WsOutbox, pcm16
from pipelines.loopback.synthesis import SynthesisServer, word_timings

PCM_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
NAMED_SPEEDS = {"slowest": 0.6, "slow": 0.8, "normal": 1.0, "fast": 1.25, "fastest": 1.5}


@dataclass(frozen=True, slots=True)
class Options:
    """What one request (a bytes POST or a context's message) asks for."""

    voice_id: str
    sample_rate: int
    speed: float


def read_options(body: Any) -> Options:
    """The voice, output rate and speed of a request; ValueError names a bad field."""
    if not isinstance(body, dict):
        raise ValueError("request must be a JSON object")
    voice = body.get("voice")
    if not isinstance(voice, dict) or voice.get("mode", "id") != "id" or not voice.get("id"):
        raise ValueError("voice: needs {'mode': 'id', 'id': ...} (embeddings are not served)")
    fmt = body.get("output_format")
    if not isinstance(fmt, dict) or fmt.get("container") != "raw":
        raise ValueError("output_format: the local server serves container 'raw' only")
    if fmt.get("encoding") != "pcm_s16le" or fmt.get("sample_rate") not in PCM_RATES:
        raise ValueError(f"output_format: pcm_s16le at one of {PCM_RATES}")
    speed: Any = (body.get("generation_config") or {}).get("speed")
    if speed is None:
        speed = (voice.get("__experimental_controls") or {}).get("speed")
    if isinstance(speed, str):
        if speed not in NAMED_SPEEDS:
            raise ValueError(f"speed {speed!r}: a number or one of {', '.join(NAMED_SPEEDS)}")
        speed = NAMED_SPEEDS[speed]
    if speed is not None and not (isinstance(speed, int | float) and speed > 0):
        raise ValueError("generation_config.speed: must be a positive number")
    return Options(str(voice["id"]), int(fmt["sample_rate"]), float(speed or 1.0))


@dataclass(frozen=True, slots=True)
class _Job:
    context_id: str
    text: str
    options: Options
    final: bool


class CartesiaServer(SynthesisServer):
    """Cartesia TTS backed by an offline TTS engine."""

    vendor = "cartesia"

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/tts/websocket", self._websocket),
            web.post("/tts/bytes", self._bytes),
        ]

    def error_body(self, status: int) -> dict[str, Any]:
        return {"error": f"injected failure {status}", "status_code": status}

    async def _bytes(self, request: web.Request) -> web.StreamResponse:
        record = request[RECORD]
        try:
            body = await request.json()
            options = read_options(body)
            text = str(body["transcript"])
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        record.body, record.text = body, text
        audio = await self.synthesize(text, options.voice_id, options.speed)
        return await self.stream_pcm(
            request, audio, options.sample_rate, content_type="application/octet-stream"
        )

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        # time to first byte is per context (per request), not per socket
        async with self.websocket(request, delays=False) as (ws, outbox):
            await _Session(self, outbox, request[RECORD]).run(ws)
        return ws


class _Session:
    """One WebSocket: each transcript message is synthesized as it comes, in order; a
    context is done once its ``continue: false`` message was spoken."""

    def __init__(self, server: CartesiaServer, outbox: WsOutbox, record: RequestRecord) -> None:
        self.server = server
        self.outbox = outbox
        self.record = record
        self.jobs: asyncio.Queue[_Job | None] = asyncio.Queue()
        self.cancelled: set[str] = set()
        self.started: set[str] = set()
        self.clock: dict[str, float] = {}
        """Seconds of audio sent per context: where the next sentence's words start."""

    async def run(self, ws: web.WebSocketResponse) -> None:
        worker = asyncio.create_task(self._synthesize_loop())
        dropped = asyncio.create_task(self.outbox.dropped.wait())
        try:
            while True:
                receive = asyncio.create_task(ws.receive())
                done, _ = await asyncio.wait(
                    {receive, dropped}, return_when=asyncio.FIRST_COMPLETED
                )
                if receive not in done:
                    receive.cancel()
                    break
                msg = receive.result()
                if msg.type != WSMsgType.TEXT:
                    break
                self._on_message(msg.data)
        finally:
            dropped.cancel()
            self.jobs.put_nowait(None)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(worker), 0.5)
            worker.cancel()
            with contextlib.suppress(BaseException):
                await worker

    def _error(self, context_id: str | None, message: str, status: int = 400) -> None:
        self.outbox.send(
            {
                "type": "error",
                "context_id": context_id,
                "status_code": status,
                "done": True,
                "error": message,
            }
        )

    def _on_message(self, raw: str) -> None:
        try:
            data = json.loads(raw)
        except ValueError:
            self._error(None, "message is not JSON")
            return
        if not isinstance(data, dict):
            self._error(None, "message must be a JSON object")
            return
        context_id = str(data.get("context_id") or "")
        if data.get("cancel"):
            self.record.control.append("cancel")
            self.cancelled.add(context_id)
            return
        try:
            options = read_options(data)
        except ValueError as exc:
            self._error(context_id, str(exc))
            return
        text = str(data.get("transcript") or "")
        self.record.text += text
        final = not data.get("continue", False)
        if final:
            self.record.control.append("continue=false")
        self.jobs.put_nowait(_Job(context_id, text, options, final))

    async def _synthesize_loop(self) -> None:
        while (job := await self.jobs.get()) is not None:
            if job.context_id in self.cancelled:
                continue
            text = job.text.strip()
            if text:
                audio = await self.server.synthesize(text, job.options.voice_id, job.options.speed)
                rate = job.options.sample_rate
                for chunk in self.server.chunks(pcm16(audio, rate), rate):
                    await self.server.response_delay(first=job.context_id not in self.started)
                    self.started.add(job.context_id)
                    if job.context_id in self.cancelled:
                        break
                    self.outbox.send(
                        {
                            "type": "chunk",
                            "data": base64.b64encode(chunk).decode(),
                            "done": False,
                            "status_code": 206,
                            "step_time": 0.0,
                            "context_id": job.context_id,
                        }
                    )
                marks = word_timings(text, audio.duration * 1000)
                offset = self.clock.get(job.context_id, 0.0)
                self.clock[job.context_id] = offset + audio.duration
                self.outbox.send(
                    {
                        "type": "timestamps",
                        "done": False,
                        "status_code": 206,
                        "context_id": job.context_id,
                        "word_timestamps": {
                            "words": [m["value"] for m in marks],
                            "start": [offset + m["start_time"] / 1000 for m in marks],
                            "end": [offset + m["end_time"] / 1000 for m in marks],
                        },
                    }
                )
            if job.final:
                self.clock.pop(job.context_id, None)
                self.outbox.send(
                    {"type": "done", "done": True, "status_code": 200, "context_id": job.context_id}
                )
