"""The STT wire servers decode an utterance once the caller has been quiet for
``EARLY_QUIET_MS``; when the end is then confirmed that text is the final's (no decode of
its own), and speech that resumes makes the final decode the whole utterance again. An
incremental engine is instead fed the utterance as it grows, each sample once."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from livekit.agents import utils

from pipelines.audio import Float32Array
from pipelines.loopback import DeepgramServer
from pipelines.loopback.streaming import SegmentingSession

RATE = 16000


class CountingEngine:
    """Names each decode by the audio it was given: ``words<n>`` for n samples."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def transcribe(self, samples: Float32Array, sample_rate: int) -> str:
        self.calls.append(len(samples))
        return f"words{len(samples)}"


def tone(seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (8000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)


def quiet(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), np.int16)


async def finals(engine: CountingEngine, pcm: np.ndarray) -> list[dict[str, Any]]:
    """The final results of ``pcm`` sent in 20 ms frames (audio time: no pacing needed)."""
    async with DeepgramServer(engine) as server:
        url = f"{server.url}/v1/listen?encoding=linear16&sample_rate={RATE}&endpointing=300"
        out: list[dict[str, Any]] = []
        async with utils.http_context.http_session().ws_connect(url) as ws:
            for i in range(0, len(pcm), 320):
                await ws.send_bytes(pcm[i : i + 320].tobytes())
            await ws.send_str(json.dumps({"type": "CloseStream"}))
            async for msg in ws:
                data = json.loads(msg.data)
                if data.get("is_final") and data["channel"]["alternatives"][0]["transcript"]:
                    out.append(data)
    return out


async def test_the_final_is_the_decode_made_once_the_caller_went_quiet() -> None:
    engine = CountingEngine()
    async with utils.http_context.open():
        (final,) = await finals(engine, np.concatenate([quiet(0.3), tone(1.0), quiet(0.8)]))
    # one decode, made 100 ms into the quiet (preroll + speech + ~0.1 s), served as the
    # final confirmed 300 ms into it: the final's own (longer) audio was never decoded
    (decoded,) = engine.calls
    early = SegmentingSession.EARLY_QUIET_MS / 1000
    assert 1.0 + early <= decoded / RATE < 1.0 + 0.3, decoded / RATE
    assert final["channel"]["alternatives"][0]["transcript"] == f"words{decoded}"
    assert final["speech_final"] is True
    assert final["duration"] > decoded / RATE


async def test_speech_after_a_short_pause_is_decoded_again_for_the_final() -> None:
    engine = CountingEngine()
    pcm = np.concatenate([quiet(0.3), tone(0.6), quiet(0.15), tone(0.6), quiet(0.8)])
    async with utils.http_context.open():
        (final,) = await finals(engine, pcm)
    first, second = engine.calls
    assert first < second, "the pause's speculative decode, then one after the last word"
    assert second / RATE >= 0.6 + 0.15 + 0.6 + 0.1
    assert final["channel"]["alternatives"][0]["transcript"] == f"words{second}"


class StreamingEngine(CountingEngine):
    """An incremental engine (``stream``): counts what each push feeds; a final is named
    by the samples fed since the utterance began."""

    def __init__(self) -> None:
        super().__init__()
        self.pushed: list[int] = []
        self.closed = False

    def stream(self, sample_rate: int) -> FakeStream:
        return FakeStream(self)


class FakeStream:
    def __init__(self, engine: StreamingEngine) -> None:
        self.engine = engine
        self.fed = 0

    def push(self, samples: Float32Array) -> None:
        self.engine.pushed.append(len(samples))
        self.fed += len(samples)

    def partial(self) -> str:
        return f"partial{self.fed}"

    def finish(self) -> str:
        fed, self.fed = self.fed, 0
        return f"words{fed}"

    def reset(self) -> None:
        self.fed = 0

    def close(self) -> None:
        self.engine.closed = True


async def test_an_incremental_engine_is_fed_each_sample_once_and_never_decodes_in_batch() -> None:
    engine = StreamingEngine()
    pcm = np.concatenate([quiet(0.3), tone(0.6), quiet(0.15), tone(0.6), quiet(0.8)])
    async with utils.http_context.open():
        (final,) = await finals(engine, pcm)
    assert engine.calls == [], "no batch decode of the utterance"
    assert len(engine.pushed) >= 2, "fed as the utterance grew (the pause's decode, the end's)"
    # the final is the live decoder's result over the whole utterance, each sample fed once
    fed = sum(engine.pushed)
    assert final["channel"]["alternatives"][0]["transcript"] == f"words{fed}"
    assert fed / RATE >= 0.6 + 0.15 + 0.6 + 0.3
    assert engine.closed, "the session's decoder goes back when the socket closes"
