"""The Baseten, AssemblyAI and Deepgram Flux plugins against their local wire servers:
a spoken utterance comes back as a final transcript through each plugin's own stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from livekit import rtc
from livekit.agents import stt, utils
from livekit.plugins import assemblyai, baseten, deepgram

from pipelines.audio import float_to_int16, resample
from pipelines.engines import EspeakEngine
from pipelines.loopback import AssemblyAIServer, BasetenServer, DeepgramServer, SpeechServer

pytestmark = pytest.mark.integration

UTTERANCE = "my name is john and i live in london"


@pytest.fixture(scope="module")
def pcm() -> np.ndarray:
    audio = EspeakEngine().synthesize(UTTERANCE)
    speech = resample(audio.samples, audio.sample_rate, 16000)
    quiet = np.zeros(16000, np.float32)
    return float_to_int16(np.concatenate([quiet[:8000], speech, quiet]))


@pytest_asyncio.fixture(loop_scope="function")
async def http() -> AsyncIterator[None]:
    async with utils.http_context.open():
        yield


def plugin(server: SpeechServer) -> Any:
    url = server.url
    if isinstance(server, BasetenServer):
        ws = url.replace("http", "ws", 1)
        return baseten.STT(api_key="k", model_endpoint=f"{ws}/environments/production/websocket")
    if isinstance(server, AssemblyAIServer):
        return assemblyai.STT(
            api_key="k", model="universal-streaming-english", base_url=url.replace("http", "ws")
        )
    return deepgram.STTv2(api_key="k", base_url=f"{url}/v2/listen")


@pytest.mark.parametrize("server_type", [BasetenServer, AssemblyAIServer, DeepgramServer])
async def test_plugin_round_trip(http: None, pcm: np.ndarray, server_type: type) -> None:
    async with server_type() as server:
        model = plugin(server)
        stream = model.stream()
        for i in range(0, len(pcm), 320):
            chunk = pcm[i : i + 320]
            stream.push_frame(rtc.AudioFrame(chunk.tobytes(), 16000, 1, len(chunk)))
        seen: list[stt.SpeechEvent] = []
        async with asyncio.timeout(30):
            async for event in stream:
                seen.append(event)
                if event.type == stt.SpeechEventType.FINAL_TRANSCRIPT:
                    break
        await stream.aclose()
        await model.aclose()
    (record,) = [r for r in server.requests if r.websocket]
    assert record.status == 101 and record.audio_bytes > 0
    assert record.headers.get("Authorization") == "<redacted>"
    text = seen[-1].alternatives[0].text.lower()
    assert len(set(text.strip(".").split()) & set(UTTERANCE.split())) >= 2, text
    if server_type is DeepgramServer:  # Flux opens its own turn before the final
        assert seen[0].type == stt.SpeechEventType.START_OF_SPEECH


@pytest.mark.parametrize("server_type", [BasetenServer, AssemblyAIServer, DeepgramServer])
async def test_injected_5xx_rejects_the_handshake(http: None, server_type: type) -> None:
    async with server_type() as server:
        server.knobs.fail_with_status = 503
        model = plugin(server)
        stream = model.stream()
        stream.push_frame(rtc.AudioFrame(bytes(640), 16000, 1, 320))
        with pytest.raises(Exception):  # noqa: B017 - each plugin maps it its own way
            async with asyncio.timeout(20):
                async for _ in stream:
                    pass
        await stream.aclose()
        await model.aclose()
    assert [r.fault for r in server.requests][:1] == ["fail_with_status"]
