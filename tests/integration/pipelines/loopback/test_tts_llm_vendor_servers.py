"""The Speechify, Cartesia and Anthropic plugins (and the platform LLM) against their local
wire servers, each built by the worker's own factory: text in, audio or tokens out through
each plugin's own code, the speaking rate reaching the server, injected faults raising."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from livekit import rtc
from livekit.agents import APIConnectOptions, APIError, llm, utils

from pipelines.audio import Audio, int16_to_float, rms_dbfs
from pipelines.engines import EspeakEngine
from pipelines.loopback import (
    AnthropicServer,
    CartesiaServer,
    ElevenLabsServer,
    Knobs,
    OpenAIServer,
    ScriptedReply,
    SpeechifyServer,
    ToolCall,
)
from pipelines.loopback.synthesis import SynthesisServer
from pipelines.providers import ProviderSpec, build

pytestmark = pytest.mark.integration

SENTENCE = "Hello there, how are you today?"


@pytest_asyncio.fixture(loop_scope="function")
async def http() -> AsyncIterator[None]:
    async with utils.http_context.open():
        yield


def frames_audio(collected: list[rtc.AudioFrame]) -> Audio:
    pcm = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in collected])
    return Audio(int16_to_float(pcm), collected[0].sample_rate)


async def reply(model: Any, question: str) -> str:
    ctx = llm.ChatContext.empty()
    ctx.add_message(role="user", content=question)
    text = ""
    async with model.chat(chat_ctx=ctx) as stream:
        async for chunk in stream:
            if chunk.delta and chunk.delta.content:
                text += chunk.delta.content
    return text


# Speechify


def speechify(
    server: SpeechifyServer, *, rate: float | None = None, model: str = "simba-3.2"
) -> Any:
    return build(
        ProviderSpec(
            "tts",
            "speechify",
            model,
            base_url=server.url,
            api_key="sk-test",
            voice="en-us",
            speaking_rate=rate,
        )
    )


async def test_speechify_stream_round_trip_at_a_speaking_rate(http: None) -> None:
    reference = EspeakEngine().synthesize(SENTENCE).duration
    async with SpeechifyServer() as server:
        tts = speechify(server, rate=1.5)
        stream = tts.stream()
        stream.push_text(SENTENCE + " I am fine.")
        stream.end_input()
        collected = [ev.frame async for ev in stream]
        await tts.aclose()
        audio = frames_audio(collected)
        assert audio.sample_rate == 24000 and rms_dbfs(audio.samples) > -30
        records = server.records("/v1/audio/stream/with-timestamps")
        # one request per sentence, each SSML at +50%, the key never logged
        assert [r.text for r in records] == [SENTENCE, "I am fine."]
        assert all(r.body["input"].startswith('<speak><prosody rate="+50%">') for r in records)
        assert records[0].body["voice_id"] == "en-us" and records[0].body["model"] == "simba-3.2"
        assert records[0].headers["Authorization"] == "<redacted>"
    # the rate is spoken: 1.5x is clearly shorter than the voice's own pace
    alone = EspeakEngine().synthesize("I am fine.").duration
    assert audio.duration < 0.85 * (reference + alone)


async def test_speechify_synthesize_and_legacy_model(http: None) -> None:
    async with SpeechifyServer() as server:
        streamed = speechify(server)
        legacy = speechify(server, model="simba-english")
        a = frames_audio([ev.frame async for ev in streamed.synthesize("Good morning.")])
        b = frames_audio([ev.frame async for ev in legacy.synthesize("Good morning.")])
        await streamed.aclose()
        await legacy.aclose()
        assert 0.4 < a.duration < 3 and abs(a.duration - b.duration) < 0.1
        paths = [r.path for r in server.requests if r.path != "/health"]
        assert paths == ["/v1/audio/stream/with-timestamps", "/v1/audio/speech"]
        assert server.requests[-1].body["input"] == "Good morning."  # no rate: plain text


# the platform LLM (speechify:kimi-k2.6): an OpenAI-compatible endpoint of its own


async def test_platform_llm_round_trip(http: None) -> None:
    async with OpenAIServer(reply="Kimi here.") as server:
        model = build(
            ProviderSpec(
                "llm", "speechify", "kimi-k2.6", base_url=f"{server.url}/v1", api_key="sk-p"
            )
        )
        text = await reply(model, "Who are you?")
        await model.aclose()
    assert text == "Kimi here."
    (request,) = server.records("/v1/chat/completions")
    assert request.body["model"] == "kimi-k2.6" and request.body["stream"] is True
    assert request.headers["Authorization"] == "<redacted>"


# Anthropic: the Messages API


def claude(server: AnthropicServer) -> Any:
    return build(
        ProviderSpec("llm", "anthropic", "claude-haiku-4-5", base_url=server.url, api_key="sk-ant")
    )


async def test_anthropic_streams_text_and_a_tool_call(http: None) -> None:
    script = ScriptedReply(
        text="Let me look.", tool_calls=(ToolCall("lookup_order", {"order_id": "A-17"}),)
    )
    async with AnthropicServer(reply=script) as server:
        model = claude(server)

        @llm.function_tool
        async def lookup_order(order_id: str) -> str:
            """Looks an order up."""
            return "shipped"

        ctx = llm.ChatContext.empty()
        ctx.add_message(role="system", content="You are terse.")
        ctx.add_message(role="user", content="Where is my order?")
        text, calls, usage = "", [], None
        async with model.chat(chat_ctx=ctx, tools=[lookup_order]) as stream:
            async for chunk in stream:
                if chunk.delta and chunk.delta.content:
                    text += chunk.delta.content
                if chunk.delta and chunk.delta.tool_calls:
                    calls += chunk.delta.tool_calls
                usage = chunk.usage or usage
        await model.aclose()
    assert text == "Let me look."
    (call,) = calls
    assert call.name == "lookup_order" and json.loads(call.arguments) == {"order_id": "A-17"}
    assert usage is not None and usage.completion_tokens > 0
    (request,) = server.records("/v1/messages")
    assert request.body["model"] == "claude-haiku-4-5" and request.body["stream"] is True
    assert request.body["system"][0]["text"] == "You are terse."
    assert [t["name"] for t in request.body["tools"]] == ["lookup_order"]
    assert request.headers["X-Api-Key"] == "<redacted>"


async def test_anthropic_backed_by_the_offline_llm(http: None, llama_base_url: str) -> None:
    async with AnthropicServer(upstream=llama_base_url) as server:
        model = claude(server)
        text = await reply(model, "Say hello.")
        await model.aclose()
    assert text.strip()
    (request,) = server.records("/v1/messages")
    assert request.status == 200 and request.messages_sent > 3


@pytest.mark.parametrize("knobs", [Knobs(fail_with_status=529), Knobs(close_after=3)])
async def test_anthropic_faults_raise_api_errors(http: None, knobs: Knobs) -> None:
    async with AnthropicServer(knobs=knobs) as server:
        model = claude(server)
        ctx = llm.ChatContext.empty()
        ctx.add_message(role="user", content="Hi")
        with pytest.raises(APIError):
            async with model.chat(
                chat_ctx=ctx, conn_options=APIConnectOptions(max_retry=0, timeout=2.0)
            ) as stream:
                async for _ in stream:
                    pass
        await model.aclose()
    (request,) = server.records("/v1/messages")
    assert request.fault == ("fail_with_status" if knobs.fail_with_status else "close")


# Cartesia


def cartesia(server: CartesiaServer, *, rate: float | None = None, model: str = "sonic-3") -> Any:
    return build(
        ProviderSpec(
            "tts",
            "cartesia",
            model,
            base_url=server.url,
            api_key="sk-cart",
            voice="en-us",
            speaking_rate=rate,
        )
    )


async def test_cartesia_websocket_contexts_at_a_speaking_rate(http: None) -> None:
    async with CartesiaServer() as server:
        tts = cartesia(server, rate=1.5)
        durations = []
        for _ in range(2):  # two replies: one pooled socket, one context each
            stream = tts.stream()
            stream.push_text(SENTENCE + " I am fine.")
            stream.end_input()
            audio = frames_audio([ev.frame async for ev in stream])
            assert audio.sample_rate == 24000 and rms_dbfs(audio.samples) > -30
            durations.append(audio.duration)
        await tts.aclose()
        (record,) = server.records("/tts/websocket")
        assert record.query["cartesia_version"] and record.headers["X-API-Key"] == "<redacted>"
        assert record.text.split() == (SENTENCE + " I am fine.").split() * 2
        assert record.control.count("continue=false") == 2
    reference = EspeakEngine().synthesize(SENTENCE + " I am fine.").duration
    assert all(d < 0.85 * reference for d in durations)


async def test_cartesia_bytes_and_no_speed_on_older_models(http: None) -> None:
    async with CartesiaServer() as server:
        tts = cartesia(server, rate=1.5, model="sonic-2")
        audio = frames_audio([ev.frame async for ev in tts.synthesize("Good morning.")])
        await tts.aclose()
        assert 0.4 < audio.duration < 3
        (record,) = server.records("/tts/bytes")
        assert record.body["model_id"] == "sonic-2" and record.text == "Good morning."
        assert "generation_config" not in record.body  # the plan says so (no rate knob)


TTS_SERVERS: dict[str, tuple[type[SynthesisServer], Callable[[Any], Any], str]] = {
    "speechify": (SpeechifyServer, lambda server: speechify(server), "/v1/audio/stream"),
    "cartesia": (CartesiaServer, lambda server: cartesia(server), "/tts/websocket"),
}
"""vendor -> (its local server, the plugin on it, the streaming path)."""


@pytest.mark.parametrize("vendor", list(TTS_SERVERS))
@pytest.mark.parametrize("knobs", [Knobs(fail_with_status=500), Knobs(close_after=1)])
async def test_tts_faults_raise_api_errors(http: None, knobs: Knobs, vendor: str) -> None:
    server_type, plugin, path = TTS_SERVERS[vendor]
    async with server_type(knobs=knobs) as server:
        tts = plugin(server)
        stream = tts.stream(conn_options=APIConnectOptions(max_retry=0, timeout=2.0))
        stream.push_text("This sentence is long enough to need several audio chunks.")
        stream.end_input()
        with pytest.raises(APIError):
            async for _ in stream:
                pass
        await tts.aclose()
        faults = {r.fault for r in server.records(path)}
        assert faults == {"fail_with_status" if knobs.fail_with_status else "close"}


# ElevenLabs: the speaking rate as voice_settings.speed


async def test_elevenlabs_speaks_at_the_speaking_rate(http: None) -> None:
    async with ElevenLabsServer() as server:
        durations = []
        for rate in (None, 1.2):
            tts = build(
                ProviderSpec(
                    "tts",
                    "elevenlabs",
                    "eleven_flash_v2_5",
                    base_url=f"{server.url}/v1",
                    api_key="k",
                    voice="en-us",
                    speaking_rate=rate,
                )
            )
            stream = tts.stream()
            stream.push_text(SENTENCE)
            stream.end_input()
            durations.append(frames_audio([ev.frame async for ev in stream]).duration)
            await tts.aclose()
    assert durations[1] < 0.92 * durations[0]
