"""The lean chat-completions client: SSE parsing, chunk semantics, errors, and one real
exchange per case with the local OpenAI-compatible server (``pipelines.loopback``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from livekit.agents import APIConnectionError, APIConnectOptions, APIStatusError, llm

from pipelines.loopback import Knobs, OpenAIServer, ScriptedReply, ToolCall
from pipelines.providers import ChatCompletionsLLM, ChatOptions, ChunkParser, sse_events

NO_RETRY = APIConnectOptions(max_retry=0, timeout=5.0)


def _call(index: int, arguments: str, *, call_id: str = "", name: str = "") -> dict[str, Any]:
    function = {"name": name, "arguments": arguments} if name else {"arguments": arguments}
    return {
        "tool_calls": [
            {"index": index, "function": function, **({"id": call_id} if call_id else {})}
        ]
    }


def _event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": "c1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


def test_content_passes_through_and_thinking_is_stripped() -> None:
    parser = ChunkParser()
    texts = [
        c.delta.content
        for e in (
            _event({"role": "assistant", "content": "<think>plan"}),
            _event({"content": " more</think>We open"}),
            _event({"content": " at eight."}, "stop"),
        )
        for c in parser.parse(e)
        if c.delta is not None
    ]
    assert "".join(t or "" for t in texts) == "We open at eight."


def test_tool_calls_are_assembled_and_emitted_whole() -> None:
    parser = ChunkParser()
    events = [
        _event(
            {"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": ""}}]}
        ),
        _event({"tool_calls": [{"index": 0, "function": {"arguments": '{"x":'}}]}),
        _event({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
        _event(
            {"tool_calls": [{"index": 1, "id": "b", "function": {"name": "g", "arguments": "{}"}}]}
        ),
        _event({}, "tool_calls"),
    ]
    calls = [
        call
        for e in events
        for chunk in parser.parse(e)
        if chunk.delta is not None
        for call in chunk.delta.tool_calls
    ]
    assert [(c.call_id, c.name, c.arguments) for c in calls] == [
        ("a", "f", '{"x": 1}'),
        ("b", "g", "{}"),
    ]


def test_usage_is_its_own_chunk() -> None:
    usage = {
        "prompt_tokens": 12,
        "completion_tokens": 3,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 8},
    }
    [chunk] = ChunkParser().parse({"id": "c1", "choices": [], "usage": usage})
    assert chunk.usage is not None and chunk.delta is None
    assert (chunk.usage.prompt_tokens, chunk.usage.prompt_cached_tokens) == (12, 8)
    assert chunk.usage.total_tokens == 15


async def _lines(raw: bytes) -> AsyncIterator[bytes]:
    for line in raw.splitlines(keepends=True):
        yield line


async def _collect(events: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e async for e in events]


async def test_sse_skips_comments_joins_data_lines_and_stops_at_done() -> None:
    raw = (
        b": ping\n\n"
        b'event: message\ndata: {"a":\ndata: 1}\n\n'
        b'data: {"b": 2}\r\n\r\n'
        b"data: [DONE]\n\n"
        b'data: {"after": 3}\n\n'
    )
    assert await _collect(sse_events(_lines(raw))) == [{"a": 1}, {"b": 2}]


async def test_sse_error_event_raises_status_error() -> None:
    raw = b'data: {"error": {"message": "context too long", "code": 400}}\n\n'
    with pytest.raises(APIStatusError) as err:
        await _collect(sse_events(_lines(raw)))
    assert err.value.status_code == 400 and "context too long" in err.value.message


def _ctx() -> llm.ChatContext:
    ctx = llm.ChatContext()
    ctx.add_message(role="system", content="You are the front desk.")
    ctx.add_message(role="user", content="When do you open?")
    return ctx


async def _reply(model: ChatCompletionsLLM, **kw: Any) -> list[llm.ChatChunk]:
    async with model.chat(chat_ctx=_ctx(), conn_options=NO_RETRY, **kw) as stream:
        return [chunk async for chunk in stream]


async def test_streams_a_reply_with_the_request_the_server_expects() -> None:
    async with OpenAIServer(reply="We open at eight.") as server, aiohttp.ClientSession() as http:
        model = ChatCompletionsLLM(
            ChatOptions(model="m", base_url=f"{server.url}/v1", api_key="sk-1", temperature=0.3),
            http_session=http,
        )
        chunks = await _reply(model)
        text = "".join(c.delta.content or "" for c in chunks if c.delta is not None)
        assert text == "We open at eight."
        assert any(c.usage is not None for c in chunks)
        [record] = server.records("/chat/completions")
        assert record.body["temperature"] == 0.3 and record.body["stream"] is True
        assert record.body["messages"][0] == {
            "role": "system",
            "content": "You are the front desk.",
        }
        assert "sk-1" not in json.dumps(record.headers)  # the log redacts it: it was sent


async def test_tools_are_sent_and_tool_calls_come_back() -> None:
    @llm.function_tool
    async def lookup_appointment(name: str) -> str:
        """Finds the caller's appointment."""
        return name

    script = ScriptedReply(text="", tool_calls=(ToolCall("lookup_appointment", {"name": "Ann"}),))
    async with OpenAIServer(reply=script) as server, aiohttp.ClientSession() as http:
        model = ChatCompletionsLLM(
            ChatOptions(model="m", base_url=f"{server.url}/v1"), http_session=http
        )
        chunks = await _reply(model, tools=[lookup_appointment], tool_choice="auto")
        calls = [t for c in chunks if c.delta is not None for t in c.delta.tool_calls]
        assert [(c.name, json.loads(c.arguments)) for c in calls] == [
            ("lookup_appointment", {"name": "Ann"})
        ]
        [record] = server.records("/chat/completions")
        assert record.body["tools"][0]["function"]["name"] == "lookup_appointment"
        assert record.body["tool_choice"] == "auto"


@pytest.mark.parametrize(("status", "retryable"), [(503, True), (429, True), (401, False)])
async def test_http_errors_keep_status_and_retryability(status: int, retryable: bool) -> None:
    knobs = Knobs(fail_with_status=status)
    async with OpenAIServer(reply="x", knobs=knobs) as server, aiohttp.ClientSession() as http:
        model = ChatCompletionsLLM(
            ChatOptions(model="m", base_url=f"{server.url}/v1", api_key="sk-secret-9"),
            http_session=http,
        )
        with pytest.raises(APIStatusError) as err:
            await _reply(model)
    assert err.value.status_code == status and err.value.retryable is retryable
    assert "sk-secret-9" not in str(err.value)


async def test_unreachable_endpoint_is_a_connection_error() -> None:
    async with aiohttp.ClientSession() as http:
        model = ChatCompletionsLLM(
            ChatOptions(model="m", base_url="http://127.0.0.1:9/v1"), http_session=http
        )
        with pytest.raises(APIConnectionError):
            await _reply(model)


async def test_a_reply_cut_mid_stream_is_not_retryable() -> None:
    knobs = Knobs(close_after=3)
    server = OpenAIServer(reply="one two three four five six", knobs=knobs)
    async with server, aiohttp.ClientSession() as http:
        model = ChatCompletionsLLM(
            ChatOptions(model="m", base_url=f"{server.url}/v1"), http_session=http
        )
        with pytest.raises(APIConnectionError) as err:
            await _reply(model)
    assert err.value.retryable is False
