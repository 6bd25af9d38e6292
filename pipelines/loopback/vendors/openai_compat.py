"""An OpenAI-compatible server: chat completions, models, speech and transcriptions.

Chat replies are either scripted (a fixed answer streamed token by token after the
configured first-token and per-token delays: provider-independent latency benchmarks) or
proxied to an upstream OpenAI-compatible server (the llama.cpp server), with the same knobs
applied to the relayed stream. ``/v1/audio/speech`` and ``/v1/audio/transcriptions`` are
backed by the offline engines so ``livekit.plugins.openai.TTS``/``STT`` work too.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
import uuid
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from pipelines.audio import Audio
from pipelines.loopback.base import (
    RECORD,
    Knobs,
    RequestRecord,
    SpeechToText,
    TextToSpeech,
    WireServer,
    decode_upload,
    pcm16,
)

DEFAULT_REPLY = "Sure, I can help with that. What would you like to know?"
SPEECH_SAMPLE_RATE = 24000
"""OpenAI's ``pcm`` speech format: 24 kHz mono 16-bit little-endian."""
_TOKEN = re.compile(r"\s*\S+")


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ScriptedReply:
    """One scripted assistant turn: text, tool calls, or both."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = field(default_factory=tuple)


Script = str | ScriptedReply | Callable[[dict[str, Any]], "str | ScriptedReply"]
"""A fixed reply, or a function of the request body (messages, tools) returning one."""


def tokens(text: str) -> list[str]:
    """Word-sized pieces with their leading whitespace, so joining them gives the text."""
    found = _TOKEN.findall(text)
    return found if found else ([text] if text else [])


def _error(status: int, message: str, param: str | None = None) -> web.Response:
    return web.json_response(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error" if status < 500 else "server_error",
                "param": param,
                "code": None,
            }
        },
        status=status,
    )


class OpenAIServer(WireServer):
    """OpenAI-compatible ``/v1`` API; point a client at ``f"{url}/v1"``."""

    vendor = "openai"

    def __init__(
        self,
        *,
        reply: Script = DEFAULT_REPLY,
        upstream: str | None = None,
        upstream_api_key: str | None = None,
        upstream_model: str | None = None,
        models: tuple[str, ...] = ("local-scripted",),
        stt_engine: SpeechToText | None = None,
        tts_engine: TextToSpeech | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        knobs: Knobs | None = None,
    ) -> None:
        """``upstream`` (e.g. ``http://127.0.0.1:8080/v1``) switches chat completions from
        the scripted ``reply`` to relaying; ``upstream_model`` replaces the requested model
        name when relaying."""
        super().__init__(host=host, port=port, knobs=knobs)
        self.reply = reply
        self.upstream = upstream.rstrip("/") if upstream else None
        self.upstream_api_key = upstream_api_key
        self.upstream_model = upstream_model
        self.models = models
        self._stt = stt_engine
        self._tts = tts_engine
        self._client: aiohttp.ClientSession | None = None

    @property
    def stt_engine(self) -> SpeechToText:
        if self._stt is None:
            from pipelines.engines import PocketsphinxEngine

            self._stt = PocketsphinxEngine()
        return self._stt

    @property
    def tts_engine(self) -> TextToSpeech:
        if self._tts is None:
            from pipelines.engines import EspeakEngine

            self._tts = EspeakEngine()
        return self._tts

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/chat/completions", self._chat),
            web.get("/v1/models", self._models),
            web.post("/v1/audio/speech", self._speech),
            web.post("/v1/audio/transcriptions", self._transcriptions),
        ]

    def error_body(self, status: int) -> dict[str, Any]:
        return {
            "error": {
                "message": f"injected failure {status}",
                "type": "server_error" if status >= 500 else "invalid_request_error",
                "param": None,
                "code": None,
            }
        }

    async def stop(self) -> None:
        await super().stop()
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _models(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": "local"}
                    for m in self.models
                ],
            }
        )

    # chat completions

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        record = request[RECORD]
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "request body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "'messages' is required", "messages")
        record.body = body
        if self.upstream is not None:
            return await self._relay(request, record, body)
        script = self.reply(body) if callable(self.reply) else self.reply
        scripted = ScriptedReply(text=script) if isinstance(script, str) else script
        if body.get("stream"):
            return await self._stream_scripted(request, record, body, scripted)
        await self.pace(record, request)
        record.messages_sent += 1
        message: dict[str, Any] = {"role": "assistant", "content": scripted.text or None}
        if scripted.tool_calls:
            message["tool_calls"] = [
                {
                    "id": f"call_{i}_{uuid.uuid4().hex[:8]}",
                    "type": "function",
                    "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                }
                for i, c in enumerate(scripted.tool_calls)
            ]
        return web.json_response(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": str(body.get("model", self.models[0])),
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": "tool_calls" if scripted.tool_calls else "stop",
                    }
                ],
                "usage": _usage(body, scripted),
            }
        )

    async def _stream_scripted(
        self,
        request: web.Request,
        record: RequestRecord,
        body: dict[str, Any],
        scripted: ScriptedReply,
    ) -> web.StreamResponse:
        response = await self.open_stream(request, _sse_response())
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": str(body.get("model", self.models[0])),
            "system_fingerprint": None,
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**base, "choices": [choice]}

        events: list[dict[str, Any]] = []
        for i, tok in enumerate(tokens(scripted.text)):
            events.append(
                chunk({"role": "assistant", "content": tok} if i == 0 else {"content": tok})
            )
        for i, call in enumerate(scripted.tool_calls):
            call_id = f"call_{i}_{uuid.uuid4().hex[:8]}"
            header = {"index": i, "id": call_id, "type": "function"}
            function = {"name": call.name, "arguments": ""}
            events.append(
                chunk({"role": "assistant", "tool_calls": [{**header, "function": function}]})
            )
            for piece in tokens(json.dumps(call.arguments)):
                events.append(
                    chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
                )
        events.append(chunk({}, "tool_calls" if scripted.tool_calls else "stop"))
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            events.append({**base, "choices": [], "usage": _usage(body, scripted)})
        for event in events:
            await self.pace(record, request)
            await response.write(f"data: {json.dumps(event)}\n\n".encode())
            record.messages_sent += 1
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _relay(
        self, request: web.Request, record: RequestRecord, body: dict[str, Any]
    ) -> web.StreamResponse:
        if self._client is None:
            self._client = aiohttp.ClientSession()
        upstream_body = dict(body)
        if self.upstream_model:
            upstream_body["model"] = self.upstream_model
        headers = {"Content-Type": "application/json"}
        if self.upstream_api_key:
            headers["Authorization"] = f"Bearer {self.upstream_api_key}"
        try:
            upstream = await self._client.post(
                f"{self.upstream}/chat/completions", json=upstream_body, headers=headers
            )
        except aiohttp.ClientError as exc:
            return _error(502, f"upstream unreachable: {exc}")
        async with upstream:
            if upstream.status != 200 or not body.get("stream"):
                payload = await upstream.read()
                if upstream.status == 200:
                    await self.pace(record, request)
                    record.messages_sent += 1
                return web.Response(
                    body=payload,
                    status=upstream.status,
                    content_type=upstream.content_type or "application/json",
                )
            response = await self.open_stream(request, _sse_response())
            async for line in upstream.content:
                if not line.strip():
                    continue
                if line.startswith(b"data:") and line[5:].strip() != b"[DONE]":
                    await self.pace(record, request)
                    record.messages_sent += 1
                await response.write(line.rstrip(b"\r\n") + b"\n\n")
            await response.write_eof()
            return response

    # audio

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        record = request[RECORD]
        try:
            body = await request.json()
            text = str(body["input"])
        except (ValueError, KeyError, TypeError):
            return _error(400, "'input' is required", "input")
        record.body = body
        record.text = text
        fmt = str(body.get("response_format", "mp3"))
        if fmt not in ("pcm", "wav"):
            return _error(400, f"response_format {fmt!r} not supported locally; use pcm or wav")
        speed = float(body.get("speed") or 1.0)
        voice = str(body.get("voice") or "")
        audio = await self._synthesize(text, voice, speed)
        pcm = pcm16(audio, SPEECH_SAMPLE_RATE)
        if fmt == "wav":
            buf = io.BytesIO()
            with wave.open(buf, "wb") as wf:
                wf.setnchannels(1)
                wf.setsampwidth(2)
                wf.setframerate(SPEECH_SAMPLE_RATE)
                wf.writeframes(pcm)
            payload, mime = buf.getvalue(), "audio/wav"
        else:
            payload, mime = pcm, "audio/pcm"
        response = await self.open_stream(
            request, web.StreamResponse(headers={"Content-Type": mime})
        )
        size = SPEECH_SAMPLE_RATE // 5 * 2  # 200 ms of audio per write
        for i in range(0, len(payload), size):
            await self.pace(record, request)
            await response.write(payload[i : i + size])
            record.messages_sent += 1
        await response.write_eof()
        return response

    async def _synthesize(self, text: str, voice: str, speed: float) -> Audio:
        engine = self.tts_engine
        try:
            return await asyncio.to_thread(
                engine.synthesize, text, voice=voice or None, speaking_rate=speed
            )
        except ValueError:
            return await asyncio.to_thread(engine.synthesize, text, speaking_rate=speed)

    async def _transcriptions(self, request: web.Request) -> web.StreamResponse:
        record = request[RECORD]
        form = await request.post()
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            return _error(400, "'file' is required", "file")
        raw = upload.file.read()
        record.audio_bytes = len(raw)
        record.body = {k: v for k, v in form.items() if isinstance(v, str)}
        try:
            samples, rate = decode_upload(raw, {})
        except ValueError as exc:
            return _error(400, f"file: {exc}", "file")
        text = ""
        if len(samples):
            text = (await asyncio.to_thread(self.stt_engine.transcribe, samples, rate)).strip()
        await self.pace(record, request)
        record.messages_sent += 1
        fmt = form.get("response_format", "json")
        if fmt == "text":
            return web.Response(text=text)
        if fmt == "verbose_json":
            return web.json_response(
                {
                    "task": "transcribe",
                    "language": "english",
                    "duration": len(samples) / rate,
                    "text": text,
                    "segments": [],
                }
            )
        return web.json_response({"text": text})


def _sse_response() -> web.StreamResponse:
    return web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )


def _usage(body: dict[str, Any], reply: ScriptedReply) -> dict[str, int]:
    prompt = sum(len(str(m.get("content", ""))) for m in body["messages"] if isinstance(m, dict))
    completion = len(tokens(reply.text)) + sum(
        len(tokens(json.dumps(c.arguments))) + 1 for c in reply.tool_calls
    )
    prompt_tokens = max(1, prompt // 4)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }
