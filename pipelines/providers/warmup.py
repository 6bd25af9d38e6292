"""One rehearsal call per vendor plugin, before a process takes its first job.

Each vendor plugin pays one-time costs on its first request in a process: lazy imports
(the OpenAI SDK loads its chat resources, httpx2 its anyio backend, on first use),
per-type caches (request transforms, chunk models), the first WebSocket handshake's code
paths. Left to the call, they land on the call's event loop during its first reply
(measured: the first reply of each call ~20-35 ms later than the next ones). A cache
list goes stale with every SDK release; a rehearsal does not: ``rehearse`` runs each
vendor plugin, built by the same factory as a call's, through one short exchange with the
local server that speaks its wire protocol (``pipelines.loopback``), on loopback, then closes
everything. Nothing outlives it but the warmed imports and caches.

It is an optimisation: a failure is logged at debug level and never fails a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from pipelines.audio import Audio, Float32Array
from pipelines.providers.factories import ProviderSpec, build

logger = logging.getLogger(__name__)

TIMEOUT = 3.0
"""Seconds a rehearsal may take in all (per plugin); a process start never waits longer."""


class _Word:
    """Engine for the local STT server: hears one word in anything."""

    def transcribe(self, samples: Float32Array, sample_rate: int) -> str:
        return "hello"


class _Click:
    """Engine for the local TTS server: 20 ms of quiet for any text."""

    def synthesize(
        self, text: str, *, voice: str | None = None, speaking_rate: float | None = None
    ) -> Audio:
        return Audio(np.full(441, 0.01, dtype=np.float32), 22050)


async def _llm(plugin: Any) -> None:
    from livekit.agents import llm

    await plugin._prewarm_impl()  # what the session's LLM prewarm sends (a model list)
    ctx = llm.ChatContext()
    ctx.add_message(role="system", content="Warm-up.")
    ctx.add_message(role="user", content="Hello?")
    async with plugin.chat(chat_ctx=ctx) as stream:
        async for _ in stream:
            pass


async def _tts(plugin: Any) -> None:
    if plugin.capabilities.streaming:
        stream = plugin.stream()
        stream.push_text("Hello.")
        stream.flush()
        stream.end_input()
    else:
        stream = plugin.synthesize("Hello.")
    try:
        async for audio in stream:
            logger.debug("warm-up audio: %d samples", audio.frame.samples_per_channel)
            break  # first audio: the receive and decode paths ran
    finally:
        await stream.aclose()


async def _stt(plugin: Any) -> None:
    from livekit import rtc
    from livekit.agents import stt

    tone = (np.sin(np.arange(1600) * 0.2) * 8000).astype(np.int16)
    chunks = np.array_split(np.concatenate([tone, np.zeros(9600, np.int16)]), 20)
    frames = [rtc.AudioFrame(c.tobytes(), 16000, 1, len(c)) for c in chunks]
    if not plugin.capabilities.streaming:
        await plugin.recognize(frames)
        return
    stream = plugin.stream()
    try:
        for frame in frames:
            stream.push_frame(frame)
        stream.end_input()
        async for event in stream:
            if event.type == stt.SpeechEventType.FINAL_TRANSCRIPT:
                break  # the plugin's socket stays open for more audio: stop at the result
    finally:
        await stream.aclose()


Exchange = Callable[[Any], Awaitable[None]]


def _servers() -> list[tuple[Any, list[tuple[str, str, Exchange]]]]:
    """Each local vendor server, with the (layer, model, exchange) of every plugin this
    worker builds for that vendor."""
    from pipelines.loopback import (
        AnthropicServer,
        AssemblyAIServer,
        BasetenServer,
        CartesiaServer,
        DeepgramServer,
        ElevenLabsServer,
        OpenAIServer,
        SpeechifyServer,
    )

    return [
        (DeepgramServer(_Word(), min_endpointing_ms=100), [("stt", "nova-3", _stt)]),
        (BasetenServer(_Word(), min_endpointing_ms=100), [("stt", "whisper-v3", _stt)]),
        (
            AssemblyAIServer(_Word(), min_endpointing_ms=100),
            [("stt", "universal-streaming", _stt)],
        ),
        (
            OpenAIServer(reply="Hi.", stt_engine=_Word(), tts_engine=_Click()),
            [("stt", "whisper-1", _stt), ("llm", "gpt-4o-mini", _llm), ("tts", "tts-1", _tts)],
        ),
        (ElevenLabsServer(_Click()), [("tts", "eleven_flash_v2_5", _tts)]),
        (SpeechifyServer(_Click()), [("tts", "simba-3.2", _tts)]),
        (AnthropicServer(reply="Hi."), [("llm", "claude-haiku-4-5", _llm)]),
        (CartesiaServer(_Click()), [("tts", "sonic-3", _tts)]),
    ]


def _base_url(vendor: str, url: str) -> str:
    return {
        "deepgram": f"{url}/v1/listen",
        "baseten": f"ws{url.removeprefix('http')}/environments/production/websocket",
        "assemblyai": f"ws{url.removeprefix('http')}",
        "openai": f"{url}/v1",
        "elevenlabs": f"{url}/v1",
        "speechify": url,
        "anthropic": url,
        "cartesia": url,
    }[vendor]


async def _rehearse_one(vendor: str, url: str, layer: str, model: str, exchange: Exchange) -> None:
    plugin = build(
        ProviderSpec(
            layer=layer,
            vendor=vendor,
            model=model,
            base_url=_base_url(vendor, url),
            api_key="warm-up",
            voice="warm-up" if layer == "tts" else None,
        )
    )
    try:
        await asyncio.wait_for(exchange(plugin), TIMEOUT)
    finally:
        with contextlib.suppress(Exception):
            await plugin.aclose()


async def rehearse() -> dict[str, float]:
    """Runs every vendor plugin once against its local server (one per vendor); seconds
    per ``vendor:layer`` (one that failed is logged at debug level and left out)."""
    from livekit.agents.utils import http_context

    http_context._new_session_ctx()  # the plugins' shared aiohttp session, as in a job
    took: dict[str, float] = {}
    wire_log = logging.getLogger("pipelines.loopback")
    level = wire_log.level
    wire_log.setLevel(logging.WARNING)  # "listening on ..." per process start is noise
    try:
        for server, plugins in _servers():
            try:
                url = await server.start()
            except Exception:
                logger.debug("%s warm-up server failed", server.vendor, exc_info=True)
                continue
            try:
                for layer, model, exchange in plugins:
                    started = time.perf_counter()
                    name = f"{server.vendor}:{layer}"
                    try:
                        await _rehearse_one(server.vendor, url, layer, model, exchange)
                    except Exception:
                        logger.debug("%s warm-up failed", name, exc_info=True)
                        continue
                    took[name] = round(time.perf_counter() - started, 3)
            finally:
                await server.stop()
    finally:
        wire_log.setLevel(level)
        await http_context._close_http_ctx()
    return took


def warm_vendor_plugins() -> dict[str, float]:
    """``rehearse`` on a loop of its own; for ``prewarm``, which runs before the job
    process starts its event loop."""
    try:
        took = asyncio.run(rehearse())
    except Exception:  # an optimisation must never fail a process start
        logger.debug("plugin warm-up failed", exc_info=True)
        return {}
    logger.debug("vendor plugins warmed", extra={"seconds": took})
    return took
