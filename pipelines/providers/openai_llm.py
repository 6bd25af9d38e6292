"""OpenAI-compatible chat completions, streamed over LiveKit's shared aiohttp session.

Every LLM this worker talks to (OpenAI, a custom OpenAI-compatible endpoint, the offline
llama.cpp server) speaks ``POST {base_url}/chat/completions`` with ``stream: true`` and
answers with server-sent events. This client sends that request as one ``json.dumps``
and reads the events with ``json.loads``, on the job's shared aiohttp session (the
connection the deepgram and elevenlabs plugins' sessions also pool in).

Why not ``livekit.plugins.openai.LLM``: it drives the ``openai`` SDK, which for every
reply type-walks the whole request (messages and tool schemas) through its transforms,
sends it with httpx2/anyio and builds pydantic models per chunk: measured on the bench's
front-desk agent, ~4-6 ms from ``chat()`` to the request leaving and ~3 ms more to the
first token, on the call's event loop, per reply (``voice-worker bench latency``: see
BENCHMARKS.md). Chunks, tool calls, usage, thinking-tag stripping and errors follow the
plugin's semantics (``livekit.agents.inference.llm.LLMStream``), so failover and metrics
see the same events; the OpenAI plugins are still used for OpenAI STT and TTS.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    APIConnectionError,
    APIConnectOptions,
    APIStatusError,
    APITimeoutError,
    llm,
    utils,
)
from livekit.agents.inference.llm import drop_unsupported_params
from livekit.agents.llm import ChatContext, Tool, ToolChoice
from livekit.agents.llm import utils as llm_utils
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import is_given

DEFAULT_BASE_URL = "https://api.openai.com/v1"


@dataclass(frozen=True, slots=True)
class ChatOptions:
    model: str
    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = field(default=None, repr=False)
    temperature: float | None = None
    max_completion_tokens: int | None = None
    extra_body: Mapping[str, Any] | None = None
    strict_tool_schema: bool = True


class ChatCompletionsLLM(llm.LLM[None]):
    """``llm.LLM`` over an OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(
        self, options: ChatOptions, *, http_session: aiohttp.ClientSession | None = None
    ) -> None:
        super().__init__()
        self._opts = options
        self._url = options.base_url.rstrip("/")
        self._session = http_session
        self._headers = {"Content-Type": "application/json"}
        if options.api_key:
            self._headers["Authorization"] = f"Bearer {options.api_key}"

    @property
    def model(self) -> str:
        return self._opts.model

    @property
    def provider(self) -> str:
        return urlsplit(self._url).netloc

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = utils.http_context.http_session()
        return self._session

    async def _prewarm_impl(self) -> None:
        # token-free request that opens the pooled connection (as the plugin's prewarm)
        async with self.session().get(f"{self._url}/models", headers=self._headers) as resp:
            await resp.read()

    def chat(
        self,
        *,
        chat_ctx: ChatContext,
        tools: list[Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> ChatCompletionsStream:
        body: dict[str, Any] = dict(extra_kwargs) if is_given(extra_kwargs) else {}
        opts = self._opts
        if opts.temperature is not None:
            body["temperature"] = opts.temperature
        if opts.max_completion_tokens is not None:
            body["max_completion_tokens"] = opts.max_completion_tokens
        if tools and is_given(parallel_tool_calls):
            body["parallel_tool_calls"] = parallel_tool_calls
        if tools and is_given(tool_choice):
            if isinstance(tool_choice, dict):
                name = tool_choice["function"]["name"]
                body["tool_choice"] = {"type": "function", "function": {"name": name}}
            elif tool_choice in ("auto", "required", "none"):
                body["tool_choice"] = tool_choice
        body = drop_unsupported_params(opts.model, body, tools=tools)
        body.update(opts.extra_body or {})
        return ChatCompletionsStream(
            self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options, body=body
        )


class ChatCompletionsStream(llm.LLMStream):
    def __init__(
        self,
        owner: ChatCompletionsLLM,
        *,
        chat_ctx: ChatContext,
        tools: list[Tool],
        conn_options: APIConnectOptions,
        body: dict[str, Any],
    ) -> None:
        super().__init__(owner, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._owner = owner
        self._body = body

    def _request(self) -> bytes:
        messages, _ = self._chat_ctx.to_provider_format("openai")
        body: dict[str, Any] = {
            "model": self._owner.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            **self._body,
        }
        if self._tools:
            strict = self._owner._opts.strict_tool_schema
            body["tools"] = llm.ToolContext(self._tools).parse_function_tools(
                "openai", strict=strict
            )
        return json.dumps(body, separators=(",", ":")).encode()

    async def _run(self) -> None:
        retryable = True  # until the reply has started: then a retry would repeat it
        timeout = self._conn_options.timeout
        owner = self._owner
        try:
            async with owner.session().post(
                f"{owner._url}/chat/completions",
                data=self._request(),
                headers=owner._headers,
                timeout=aiohttp.ClientTimeout(sock_connect=timeout, sock_read=timeout),
            ) as resp:
                if resp.status != 200:
                    raise await _status_error(resp)
                parser = ChunkParser()
                async for event in sse_events(resp.content):
                    for chunk in parser.parse(event):
                        if chunk.delta is not None and chunk.delta.content:
                            retryable = False
                        self._event_ch.send_nowait(chunk)
        except APIStatusError as exc:
            exc.retryable = exc.retryable and retryable
            raise
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise APITimeoutError(retryable=retryable) from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise APIConnectionError(f"{type(exc).__name__}: {exc}", retryable=retryable) from exc


async def _status_error(resp: aiohttp.ClientResponse) -> APIStatusError:
    raw = await resp.read()
    body: Any
    try:
        body = json.loads(raw)
    except ValueError:
        body = raw.decode(errors="replace")[:500]
    message = resp.reason or f"HTTP {resp.status}"
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        message = error["message"]
    elif isinstance(error, str):
        message = error
    return APIStatusError(
        message,
        status_code=resp.status,
        request_id=resp.headers.get("x-request-id"),
        body=body,
    )


async def sse_events(lines: AsyncIterable[bytes]) -> AsyncIterator[dict[str, Any]]:
    """JSON payloads of a server-sent event stream (its lines, as aiohttp reads them) up
    to ``data: [DONE]``; an in-band ``{"error": ...}`` event (vLLM, llama.cpp, proxies)
    raises ``APIStatusError``."""
    data: list[str] = []
    async for raw in lines:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
            continue
        if line or not data:
            continue  # comments (": ping"), event names, ids; or a blank keep-alive
        payload, data = "\n".join(data), []
        if payload == "[DONE]":
            return
        event = json.loads(payload)
        if isinstance(event, dict) and event.get("error"):
            error = event["error"]
            message = error.get("message") if isinstance(error, dict) else str(error)
            code = error.get("code") if isinstance(error, dict) else None
            raise APIStatusError(
                str(message or "error event in the stream"),
                status_code=code if isinstance(code, int) else 500,
                body=event,
            )
        if isinstance(event, dict):
            yield event


class ChunkParser:
    """Chat completion chunks (as JSON) to LiveKit ``ChatChunk``s: content deltas pass
    through (thinking tags stripped), tool calls are assembled from their streamed
    pieces and emitted whole when the next call starts or the choice finishes, usage
    comes as a chunk of its own."""

    def __init__(self) -> None:
        self._thinking = llm_utils.ThinkingTokenFilter()
        self._call: dict[str, Any] | None = None

    def parse(self, event: Mapping[str, Any]) -> list[llm.ChatChunk]:
        chunk_id = str(event.get("id") or "")
        out: list[llm.ChatChunk] = []
        for choice in event.get("choices") or ():
            chunk = self._choice(chunk_id, choice)
            if chunk is not None:
                out.append(chunk)
        usage = event.get("usage")
        if isinstance(usage, dict):
            out.append(llm.ChatChunk(id=chunk_id, usage=_usage(usage)))
        return out

    def _choice(self, chunk_id: str, choice: Mapping[str, Any]) -> llm.ChatChunk | None:
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return None  # Azure content filtering sends choices without a delta
        finish = choice.get("finish_reason")
        content = llm_utils.strip_thinking_tokens(
            delta.get("content"), self._thinking, final=finish is not None
        )
        completed: list[llm.FunctionToolCall] = []
        for tool in delta.get("tool_calls") or ():
            function = tool.get("function")
            if not isinstance(function, dict):
                continue
            call = self._call
            if call is not None and tool.get("id") and tool.get("index") != call["index"]:
                completed.append(self._finish_call())
            if function.get("name"):
                self._call = {
                    "index": tool.get("index"),
                    "call_id": tool.get("id") or "",
                    "name": function["name"],
                    "arguments": function.get("arguments") or "",
                    "extra": tool.get("extra_content"),
                }
            elif function.get("arguments") and self._call is not None:
                self._call["arguments"] += function["arguments"]
        if finish in ("tool_calls", "stop") and self._call is not None:
            completed.append(self._finish_call())
        extra = delta.get("extra_content")
        if completed:
            return llm.ChatChunk(
                id=chunk_id,
                delta=llm.ChoiceDelta(
                    role="assistant", content=content, extra=extra, tool_calls=completed
                ),
            )
        if not content and not extra:
            return None
        return llm.ChatChunk(
            id=chunk_id, delta=llm.ChoiceDelta(role="assistant", content=content, extra=extra)
        )

    def _finish_call(self) -> llm.FunctionToolCall:
        call, self._call = self._call, None
        assert call is not None
        return llm.FunctionToolCall(
            arguments=call["arguments"],
            name=call["name"],
            call_id=call["call_id"],
            extra=call["extra"],
        )


def _usage(usage: Mapping[str, Any]) -> llm.CompletionUsage:
    prompt = usage.get("prompt_tokens_details") or {}
    completion = usage.get("completion_tokens_details") or {}
    return llm.CompletionUsage(
        completion_tokens=int(usage.get("completion_tokens") or 0),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        prompt_cached_tokens=int(prompt.get("cached_tokens") or 0),
        cache_creation_tokens=int(prompt.get("cache_write_tokens") or 0),
        reasoning_tokens=int(completion.get("reasoning_tokens") or 0),
        total_tokens=int(usage.get("total_tokens") or 0),
    )


__all__ = [
    "ChatCompletionsLLM",
    "ChatCompletionsStream",
    "ChatOptions",
    "ChunkParser",
    "sse_events",
]
