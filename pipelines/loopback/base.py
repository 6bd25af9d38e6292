"""Local servers that speak the vendors' wire protocols, backed by the offline engines.

The real LiveKit plugins (deepgram, elevenlabs, openai) connect to these unchanged through
their ``base_url`` options, so the plugins' own code paths (connect, stream, retry, error
mapping) run against real sockets on 127.0.0.1. Every server keeps a request log and has
``Knobs`` for fault injection and fixed delays that tests, ``bench`` and ``replay --fault``
flip at run time.

    vendors.deepgram.DeepgramServer        /v1/listen (live WebSocket and pre-recorded POST)
    vendors.elevenlabs.ElevenLabsServer    /v1/text-to-speech/{voice}/multi-stream-input, .../stream
    vendors.openai_compat.OpenAIServer     /v1/chat/completions, /v1/models, /v1/audio/*
    vendors.speechify.SpeechifyServer      /v1/audio/stream/with-timestamps, /v1/audio/speech
    vendors.cartesia.CartesiaServer        /tts/websocket, /tts/bytes
    vendors.anthropic.AnthropicServer      /v1/messages, /v1/models

The TTS servers build on ``synthesis.SynthesisServer`` (engine, voice map, PCM chunks).

This module holds what they all share: the server lifecycle, the request log, the knobs and
the pacing of responses. Each vendor is a module of ``pipelines.loopback.vendors``; import
the servers from ``pipelines.loopback``.

Engines are thread-safe (``PocketsphinxEngine`` pools decoders, ``EspeakEngine`` runs one
process per call), so the servers call them with ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
import uuid
import wave
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import numpy as np
from aiohttp import web

from pipelines.audio import Audio, Float32Array, float_to_int16, int16_to_float, resample

logger = logging.getLogger(__name__)

SECRET_HEADERS = frozenset({"authorization", "xi-api-key", "api-key", "cookie", "x-api-key"})
"""Headers whose values never reach the request log."""


class SpeechToText(Protocol):
    """What the STT-backed servers need from an engine (``local_stt.PocketsphinxEngine``)."""

    def transcribe(self, samples: Float32Array, sample_rate: int) -> str: ...


class TextToSpeech(Protocol):
    """What the TTS-backed servers need from an engine (``local_tts.EspeakEngine``)."""

    def synthesize(
        self, text: str, *, voice: str | None = None, speaking_rate: float | None = None
    ) -> Audio: ...


@dataclass
class Knobs:
    """Fault injection and fixed delays; a server reads them on every request and message,
    so a test can flip them mid-call (like livekit's ``fake_stt.fake_exception``)."""

    first_response_delay: float = 0.0
    """Seconds before the first response message of a request or stream (time to first
    byte/token/transcript)."""
    response_delay: float = 0.0
    """Seconds between later response messages (per token, per audio chunk, per result)."""
    fail_with_status: int | None = None
    """Reject requests (HTTP status, or the WebSocket handshake) with this status."""
    fail_count: int | None = None
    """How many requests ``fail_with_status`` rejects before letting requests through
    again; None rejects all of them."""
    stall_after: int | None = None
    """After this many response messages, stop responding but keep the connection open."""
    close_after: int | None = None
    """After this many response messages, drop the connection (TCP abort, no close frame)."""

    def clear(self) -> None:
        for f in fields(self):
            setattr(self, f.name, f.default)


@dataclass
class RequestRecord:
    """One request or WebSocket session as the server saw it."""

    path: str
    method: str
    query: dict[str, str]
    headers: dict[str, str]
    """Request headers; secret values (API keys) replaced by ``<redacted>``."""
    time: float
    """Wall-clock arrival time (``time.time()``)."""
    websocket: bool = False
    status: int | None = None
    """Status answered: an HTTP status, 101 for an accepted WebSocket."""
    fault: str | None = None
    """Which knob acted on this request: ``fail_with_status``, ``stall`` or ``close``."""
    body: Any = None
    """Parsed JSON body of an HTTP request, when it had one."""
    audio_bytes: int = 0
    """Audio bytes received (Deepgram session, uploaded files)."""
    text: str = ""
    """Text received for synthesis (ElevenLabs contexts, OpenAI speech input)."""
    control: list[str] = field(default_factory=list)
    """Control messages received on a WebSocket (``KeepAlive``, ``Finalize``, ``flush``...)."""
    messages_sent: int = 0
    """Response messages sent: WebSocket messages, SSE events, audio chunks."""
    closed: bool = False
    """The request or session has ended."""
    cancelled: bool = False
    """The client went away before the response ended (it gave up on the request)."""


RECORD = web.RequestKey("wire_record", RequestRecord)
"""The request's log record, set by the middleware."""
REQUEST_ID = web.RequestKey("wire_request_id", str)
RESPONSE = web.RequestKey("wire_response", web.StreamResponse)
"""A streamed response already started, which a drop must hand back to aiohttp."""


class Dropped(Exception):
    """The knobs dropped the connection; the handler unwinds without answering."""


class ClientGone(ConnectionResetError):
    """The client closed the connection while the server still owed it a response."""


def _client_gone(request: web.BaseRequest) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


class WireServer:
    """Base of the vendor servers: an aiohttp app on 127.0.0.1, a request log, knobs."""

    vendor: str = ""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, knobs: Knobs | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.knobs = knobs if knobs is not None else Knobs()
        self.requests: list[RequestRecord] = []
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self._sessions: set[web.WebSocketResponse] = set()

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    def error_body(self, status: int) -> dict[str, Any]:
        """The vendor's JSON error shape for an injected failure."""
        return {"error": {"message": f"injected failure {status}", "code": status}}

    @property
    def url(self) -> str:
        """Base URL (``http://127.0.0.1:PORT``); valid after ``start()``."""
        if self._runner is None:
            raise RuntimeError(f"{self.vendor} server not started")
        return f"http://{self.host}:{self.port}"

    async def start(self) -> str:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024**2)
        app.add_routes(self.routes())
        self._stopping = asyncio.Event()
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = int(server.sockets[0].getsockname()[1])
        self._runner = runner
        logger.info("%s wire server listening on %s", self.vendor, self.url)
        return self.url

    async def stop(self) -> None:
        if self._runner is None:
            return
        self._stopping.set()
        for ws in list(self._sessions):
            with contextlib.suppress(Exception):
                await ws.close()
        await self._runner.cleanup()
        self._runner = None

    async def __aenter__(self) -> WireServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def records(self, path_contains: str = "") -> list[RequestRecord]:
        """The request log, optionally only requests whose path contains a string."""
        return [r for r in self.requests if path_contains in r.path]

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        is_ws = request.headers.get("Upgrade", "").lower() == "websocket"
        record = RequestRecord(
            path=request.path,
            method=request.method,
            query=dict(request.query),
            headers={
                k: ("<redacted>" if k.lower() in SECRET_HEADERS else v)
                for k, v in request.headers.items()
            },
            time=time.time(),
            websocket=is_ws,
        )
        self.requests.append(record)
        request[RECORD] = record
        request_id = request[REQUEST_ID] = uuid.uuid4().hex
        status = self.knobs.fail_with_status
        if status is not None and self.knobs.fail_count != 0:
            if self.knobs.fail_count is not None:
                self.knobs.fail_count -= 1
            record.fault = "fail_with_status"
            record.status = status
            record.closed = True
            return web.json_response(self.error_body(status), status=status)
        try:
            response = await handler(request)
        except (Dropped, ConnectionResetError) as exc:
            record.closed = True
            record.cancelled = not isinstance(exc, Dropped)
            # the transport is gone: hand aiohttp the response already started, if any
            started = request.get(RESPONSE)
            if isinstance(started, web.StreamResponse):
                record.status = started.status
                return started
            return web.Response(status=499)
        except web.HTTPException as exc:
            record.status = exc.status
            record.closed = True
            raise
        if record.status is None:
            record.status = response.status
        if not response.prepared:
            response.headers.setdefault("x-request-id", request_id)
        record.closed = True
        return response

    # pacing shared by every streaming response

    async def pace(
        self, record: RequestRecord, request: web.BaseRequest, *, delays: bool = True
    ) -> None:
        """Waits before sending response message number ``record.messages_sent``, applying
        the delay (unless ``delays`` is False: the caller paced the message itself), stall
        and close knobs; raises ``Dropped`` after aborting the transport."""
        k = self.knobs
        n = record.messages_sent
        if delays:
            await self.response_delay(first=n == 0, request=request)
        if k.close_after is not None and n >= k.close_after:
            record.fault = "close"
            self.drop(request)
        if k.stall_after is not None and n >= k.stall_after:
            record.fault = "stall"
            await self._sleep(None, request)
            self.drop(request)

    async def open_stream(
        self, request: web.Request, response: web.StreamResponse
    ) -> web.StreamResponse:
        """Starts a streamed HTTP response (SSE, chunked audio) that ``pace`` may drop."""
        request[RESPONSE] = response
        response.headers.setdefault("x-request-id", request[REQUEST_ID])
        await response.prepare(request)
        return response

    def drop(self, request: web.BaseRequest) -> None:
        transport = request.transport
        if transport is not None:
            transport.abort()
        raise Dropped

    async def response_delay(self, *, first: bool, request: web.BaseRequest | None = None) -> None:
        """Sleeps the knobs' delay before a first or a later response message (raising
        ``ClientGone`` if the client of ``request`` goes away meanwhile)."""
        delay = self.knobs.first_response_delay if first else self.knobs.response_delay
        if delay > 0:
            await self._sleep(delay, request)

    async def _sleep(self, seconds: float | None, request: web.BaseRequest | None = None) -> None:
        """Waits ``seconds`` (None: until the server stops); with ``request``, raises
        ``ClientGone`` once its client closed the connection (checked every 20 ms)."""
        loop = asyncio.get_running_loop()
        end = None if seconds is None else loop.time() + seconds
        while not self._stopping.is_set():
            if request is not None and _client_gone(request):
                raise ClientGone(request.path)
            remaining = 0.02 if end is None else min(0.02, end - loop.time())
            if remaining <= 0:
                return
            if request is None and end is not None:
                remaining = end - loop.time()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), remaining)

    @contextlib.asynccontextmanager
    async def websocket(
        self, request: web.Request, *, heartbeat: float | None = None, delays: bool = True
    ) -> AsyncIterator[tuple[web.WebSocketResponse, WsOutbox]]:
        """Accepts a WebSocket and gives a paced outbox for it (``delays=False``: the
        server applies the delay knobs itself, e.g. per multiplexed stream)."""
        ws = web.WebSocketResponse(heartbeat=heartbeat, max_msg_size=16 * 1024**2)
        await ws.prepare(request)
        record = request[RECORD]
        record.status = 101
        outbox = WsOutbox(self, ws, request, record, delays=delays)
        self._sessions.add(ws)
        try:
            yield ws, outbox
        finally:
            self._sessions.discard(ws)
            await outbox.aclose()
            record.closed = True


class WsOutbox:
    """Outgoing WebSocket messages, sent in order by one task so that delays and stalls
    never block the receive loop."""

    def __init__(
        self,
        server: WireServer,
        ws: web.WebSocketResponse,
        request: web.BaseRequest,
        record: RequestRecord,
        *,
        delays: bool = True,
    ) -> None:
        self._server = server
        self._delays = delays
        self._ws = ws
        self._request = request
        self._record = record
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._run())
        self.dropped = asyncio.Event()
        """Set when the knobs dropped the connection; the receive loop should end."""

    def send(self, message: dict[str, Any]) -> None:
        self._queue.put_nowait(message)

    async def drain(self) -> None:
        """Waits until every queued message was sent (or the connection dropped)."""
        done = asyncio.Event()
        self._queue.put_nowait({"__drained__": done})
        waiter = asyncio.create_task(done.wait())
        await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()

    async def aclose(self) -> None:
        self._queue.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self._task), 5.0)
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def _run(self) -> None:
        while True:
            message = await self._queue.get()
            if message is None:
                return
            marker = message.get("__drained__")
            if isinstance(marker, asyncio.Event):
                marker.set()
                continue
            if self._ws.closed:
                continue
            try:
                await self._server.pace(self._record, self._request, delays=self._delays)
                await self._ws.send_json(message)
            except Dropped:
                self.dropped.set()
                with contextlib.suppress(Exception):
                    await self._ws.close()
                return
            except (ConnectionError, RuntimeError):
                return
            self._record.messages_sent += 1


def pcm16(audio: Audio, sample_rate: int) -> bytes:
    """Engine audio as 16-bit little-endian mono PCM at ``sample_rate``."""
    samples = resample(audio.samples, audio.sample_rate, sample_rate)
    return float_to_int16(samples).astype("<i2").tobytes()


def decode_upload(raw: bytes, query: Mapping[str, str]) -> tuple[Float32Array, int]:
    """Uploaded audio as mono float samples: a 16-bit WAV, or raw linear16 described by
    the ``encoding``/``sample_rate``/``channels`` query (Deepgram's convention)."""
    if raw[:4] == b"RIFF":
        try:
            with wave.open(io.BytesIO(raw), "rb") as wf:
                if wf.getsampwidth() != 2:
                    raise ValueError("only 16-bit PCM WAV is supported")
                channels, rate = wf.getnchannels(), wf.getframerate()
                pcm = np.frombuffer(wf.readframes(wf.getnframes()), dtype="<i2")
        except wave.Error as exc:
            raise ValueError(f"unreadable WAV: {exc}") from exc
    else:
        if query.get("encoding") != "linear16" or "sample_rate" not in query:
            raise ValueError("raw audio needs encoding=linear16 and sample_rate")
        channels, rate = int(query.get("channels", "1")), int(query["sample_rate"])
        pcm = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2")
    samples = int16_to_float(pcm.astype(np.int16))
    if channels > 1:
        samples = samples[: len(samples) // channels * channels].reshape(-1, channels).mean(1)
    return samples.astype(np.float32), rate
