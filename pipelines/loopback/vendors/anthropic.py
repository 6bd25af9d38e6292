"""Anthropic's Messages API: ``POST /v1/messages`` (streamed and not) and ``GET /v1/models``.

Speaks what ``livekit.plugins.anthropic.LLM`` (the ``anthropic`` SDK) uses: a request with
``model``, ``messages`` (content a string or blocks: ``text``, ``tool_use``,
``tool_result``), ``system`` (blocks), ``tools`` (``name``, ``description``,
``input_schema``), ``tool_choice`` and ``max_tokens``; with ``stream: true`` the answer is
Server-Sent Events: ``message_start``, per content block ``content_block_start`` /
``content_block_delta`` (``text_delta``, ``input_json_delta``) / ``content_block_stop``,
then ``message_delta`` (``stop_reason``, output tokens) and ``message_stop``.

Replies are scripted (``OpenAIServer``'s scripts: a text, a ``ScriptedReply`` with tool
calls, or a function of the request body), or come from an upstream OpenAI-compatible
server (the offline llama.cpp server): the request is translated to a chat completion and
the upstream stream back into Messages events as it arrives.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from pipelines.loopback.base import RECORD, Knobs, RequestRecord, WireServer
from pipelines.loopback.vendors.openai_compat import (
    DEFAULT_REPLY,
    Script,
    ScriptedReply,
    ToolCall,
    tokens,
)

Piece = tuple[str, str] | ToolCall
"""What a reply is made of, in order: ``("text", delta)`` or a whole tool call."""


def _error(status: int, message: str, kind: str = "invalid_request_error") -> web.Response:
    return web.json_response(
        {"type": "error", "error": {"type": kind, "message": message}}, status=status
    )


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(b.get("text", ""))
            for b in content
            if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


def to_chat_completion(body: dict[str, Any]) -> dict[str, Any]:
    """A Messages request as the OpenAI chat-completions request that asks the same."""
    messages: list[dict[str, Any]] = []
    if body.get("system"):
        messages.append({"role": "system", "content": _text(body["system"])})
    for message in body["messages"]:
        role, content = message.get("role"), message.get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        calls = [b for b in blocks if isinstance(b, dict) and b.get("type") == "tool_use"]
        for result in (b for b in blocks if isinstance(b, dict) and b.get("type") == "tool_result"):
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": result.get("tool_use_id"),
                    "content": _text(result.get("content")) or str(result.get("content", "")),
                }
            )
        text = _text(blocks)
        if calls:
            messages.append(
                {
                    "role": "assistant",
                    "content": text or None,
                    "tool_calls": [
                        {
                            "id": c.get("id"),
                            "type": "function",
                            "function": {
                                "name": c.get("name"),
                                "arguments": json.dumps(c.get("input") or {}),
                            },
                        }
                        for c in calls
                    ],
                }
            )
        elif text:
            messages.append({"role": role, "content": text})
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages, "stream": True}
    if body.get("max_tokens"):
        chat["max_tokens"] = body["max_tokens"]
    if isinstance(body.get("temperature"), int | float):
        chat["temperature"] = body["temperature"]
    tools = body.get("tools") or []
    if tools:
        chat["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.get("name"),
                    "description": t.get("description", ""),
                    "parameters": t.get("input_schema") or {"type": "object"},
                },
            }
            for t in tools
            if isinstance(t, dict)
        ]
        choice = body.get("tool_choice") or {}
        kind = choice.get("type") if isinstance(choice, dict) else None
        if kind == "any":
            chat["tool_choice"] = "required"
        elif kind == "tool":
            chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    return chat


class AnthropicServer(WireServer):
    """Anthropic Messages API; point the plugin's ``base_url`` at ``url``."""

    vendor = "anthropic"

    def __init__(
        self,
        *,
        reply: Script = DEFAULT_REPLY,
        upstream: str | None = None,
        upstream_model: str | None = None,
        models: tuple[str, ...] = ("claude-haiku-4-5",),
        host: str = "127.0.0.1",
        port: int = 0,
        knobs: Knobs | None = None,
    ) -> None:
        """``upstream`` (an OpenAI-compatible ``.../v1``, e.g. llama.cpp's) switches
        replies from the scripted ``reply`` to relaying; ``upstream_model`` replaces the
        requested model name there."""
        super().__init__(host=host, port=port, knobs=knobs)
        self.reply = reply
        self.upstream = upstream.rstrip("/") if upstream else None
        self.upstream_model = upstream_model
        self.models = models
        self._client: aiohttp.ClientSession | None = None

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/messages", self._messages), web.get("/v1/models", self._models)]

    def error_body(self, status: int) -> dict[str, Any]:
        kind = "overloaded_error" if status == 529 else "api_error"
        return {"type": "error", "error": {"type": kind, "message": f"injected failure {status}"}}

    async def stop(self) -> None:
        await super().stop()
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _models(self, request: web.Request) -> web.StreamResponse:
        data = [
            {"id": m, "type": "model", "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
            for m in self.models
        ]
        return web.json_response(
            {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
        )

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        record = request[RECORD]
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "request body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "messages: Field required")
        if not isinstance(body.get("max_tokens"), int):
            return _error(400, "max_tokens: Field required")
        record.body = body
        record.text = _text(body["messages"][-1].get("content")) if body["messages"] else ""
        pieces = self._upstream(body) if self.upstream else self._scripted(body)
        if body.get("stream"):
            return await self._stream(request, record, body, pieces)
        return await self._whole(request, record, body, pieces)

    async def _scripted(self, body: dict[str, Any]) -> AsyncIterator[Piece]:
        script = self.reply(body) if callable(self.reply) else self.reply
        scripted = ScriptedReply(text=script) if isinstance(script, str) else script
        for tok in tokens(scripted.text):
            yield ("text", tok)
        for call in scripted.tool_calls:
            yield call

    async def _upstream(self, body: dict[str, Any]) -> AsyncIterator[Piece]:
        if self._client is None:
            self._client = aiohttp.ClientSession()
        chat = to_chat_completion(body)
        if self.upstream_model:
            chat["model"] = self.upstream_model
        calls: dict[int, dict[str, str]] = {}
        async with self._client.post(f"{self.upstream}/chat/completions", json=chat) as resp:
            if resp.status != 200:
                raise UpstreamError(resp.status, (await resp.text())[:300])
            async for line in resp.content:
                data = line.strip()
                if not data.startswith(b"data:") or data[5:].strip() == b"[DONE]":
                    continue
                chunk = json.loads(data[5:])
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if delta.get("content"):
                        yield ("text", str(delta["content"]))
                    for call in delta.get("tool_calls") or []:
                        slot = calls.setdefault(int(call.get("index", 0)), {"name": "", "args": ""})
                        function = call.get("function") or {}
                        slot["name"] += function.get("name") or ""
                        slot["args"] += function.get("arguments") or ""
        for slot in calls.values():
            try:
                arguments = json.loads(slot["args"] or "{}")
            except ValueError:
                arguments = {}
            yield ToolCall(slot["name"], arguments if isinstance(arguments, dict) else {})

    async def _stream(
        self,
        request: web.Request,
        record: RequestRecord,
        body: dict[str, Any],
        pieces: AsyncIterator[Piece],
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        started = False
        output = 0

        async def send(event: dict[str, Any]) -> None:
            nonlocal started
            if not started:
                await self.open_stream(request, response)
                started = True
            await self.pace(record, request)
            payload = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
            await response.write(payload.encode())
            record.messages_sent += 1

        message_id = f"msg_{uuid.uuid4().hex[:24]}"
        index = -1
        text_open = False
        stop_reason = "end_turn"
        try:
            async for piece in pieces:
                if index < 0:
                    await send(_message_start(message_id, body))
                    index = 0
                if isinstance(piece, ToolCall):
                    if text_open:
                        await send({"type": "content_block_stop", "index": index})
                        index, text_open = index + 1, False
                    await _send_tool(send, index, piece)
                    index += 1
                    stop_reason = "tool_use"
                    output += len(tokens(json.dumps(piece.arguments))) + 1
                    continue
                if not text_open:
                    block = {"type": "text", "text": ""}
                    await send(
                        {"type": "content_block_start", "index": index, "content_block": block}
                    )
                    text_open = True
                delta = {"type": "text_delta", "text": piece[1]}
                await send({"type": "content_block_delta", "index": index, "delta": delta})
                output += 1
        except UpstreamError as exc:
            if not started:
                return _error(502, str(exc), "api_error")
            error = {"type": "api_error", "message": str(exc)}
            await send({"type": "error", "error": error})
            await response.write_eof()
            return response
        if index < 0:
            await send(_message_start(message_id, body))
        if text_open:
            await send({"type": "content_block_stop", "index": index})
        await send(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": output},
            }
        )
        await send({"type": "message_stop"})
        await response.write_eof()
        return response

    async def _whole(
        self,
        request: web.Request,
        record: RequestRecord,
        body: dict[str, Any],
        pieces: AsyncIterator[Piece],
    ) -> web.StreamResponse:
        text, calls = "", []
        try:
            async for piece in pieces:
                if isinstance(piece, ToolCall):
                    calls.append(piece)
                else:
                    text += piece[1]
        except UpstreamError as exc:
            return _error(502, str(exc), "api_error")
        await self.pace(record, request)
        record.messages_sent += 1
        content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        content += [
            {"type": "tool_use", "id": _tool_id(), "name": c.name, "input": c.arguments}
            for c in calls
        ]
        message = _message_start(f"msg_{uuid.uuid4().hex[:24]}", body)["message"]
        message.update(content=content, stop_reason="tool_use" if calls else "end_turn")
        message["usage"]["output_tokens"] = len(tokens(text)) + len(calls)
        return web.json_response(message)


class UpstreamError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"upstream answered {status}: {detail}")


def _tool_id() -> str:
    return f"toolu_{uuid.uuid4().hex[:24]}"


def _message_start(message_id: str, body: dict[str, Any]) -> dict[str, Any]:
    prompt = sum(len(str(m.get("content", ""))) for m in body["messages"] if isinstance(m, dict))
    return {
        "type": "message_start",
        "message": {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": str(body.get("model", "")),
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": max(1, prompt // 4), "output_tokens": 1},
        },
    }


async def _send_tool(send: Any, index: int, call: ToolCall) -> None:
    block = {"type": "tool_use", "id": _tool_id(), "name": call.name, "input": {}}
    await send({"type": "content_block_start", "index": index, "content_block": block})
    for piece in tokens(json.dumps(call.arguments)):
        delta = {"type": "input_json_delta", "partial_json": piece}
        await send({"type": "content_block_delta", "index": index, "delta": delta})
    await send({"type": "content_block_stop", "index": index})
