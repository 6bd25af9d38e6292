"""``bench failover``: switch time per layer and fault kind (also, JSON only,
``python -m worker.dev.bench.failover``).

Switch time is measured from the fault (injection, or the request start for faults that
hit at connect) to the fallback's first output: first transcript event (STT), first
token (LLM), first audio frame (TTS). ``added`` subtracts the fallback's own time to
first output, measured in the same run without a fault, so it is what the failover cost.
Goals: hard failures (reset, refuse, 500) under 0.3 s added; stalls detected within the
layer's deadline + 0.1 s.

Real local servers and real LiveKit plugins; faults by toxiproxy and the servers' knobs.
The Deepgram servers run as child processes (pocketsphinx holds the GIL while decoding).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import llm, stt, utils

from pipelines.audio import float_to_int16, resample
from pipelines.engines import EspeakEngine
from pipelines.loopback import ElevenLabsServer, Knobs, OpenAIServer, WireServer
from pipelines.providers import ProviderSpec
from pipelines.providers.failover import (
    Deadlines,
    HealthRegistry,
    SwitchEvent,
    build_failover_layers,
)
from worker.dev.services import Proxy, ToxiproxyServer
from worker.settings import REPO_ROOT

FAULTS = ("reset", "stall", "refuse", "500")
DEADLINES = Deadlines()


async def _inject(kind: str, proxy: Proxy, server: WireServer | None) -> None:
    if kind == "reset":
        await proxy.reset()
    elif kind == "stall":
        await proxy.stall()
    elif kind == "refuse":
        await proxy.refuse()
    elif server is not None:
        server.knobs.fail_with_status = 500


def _chain(
    layer: str, specs: list[ProviderSpec], fault: str | None
) -> tuple[Any, list[SwitchEvent]]:
    """``layer``'s failover chain over ``specs`` (the fallback alone for the no-fault
    baseline) and the list its switch events land in."""
    events: list[SwitchEvent] = []
    model = build_failover_layers(
        {layer: specs if fault is not None else specs[1:]},
        deadlines=DEADLINES,
        health=HealthRegistry(),
        on_switch=events.append,
    )[layer]
    return model, events


def _summary(samples: list[float], baseline: float) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    median = statistics.median(ordered)
    return {
        "median": round(median, 3),
        "p95": round(p95, 3),
        "added_median": round(median - baseline, 3),
        "added_p95": round(p95 - baseline, 3),
        "runs": len(ordered),
    }


# LLM


async def _llm_once(toxi: ToxiproxyServer, fault: str | None, phase: str) -> float:
    knobs = Knobs(first_response_delay=0.05, response_delay=0.05)
    reply = "One two three four five six."
    async with OpenAIServer(reply=reply, knobs=knobs) as a, OpenAIServer(reply=reply) as b:
        proxy = await toxi.proxy(f"llm{time.monotonic_ns()}", a.url)
        specs = [
            ProviderSpec("llm", "openai", "a", base_url=f"{proxy.url}/v1", api_key="k"),
            ProviderSpec("llm", "custom", "b", base_url=f"{b.url}/v1"),
        ]
        model, events = _chain("llm", specs, fault)
        ctx = llm.ChatContext.empty()
        ctx.add_message(role="user", content="Count.")
        fault_at = time.monotonic()
        if fault is not None and phase == "before":
            await _inject(fault, proxy, a)
        first: float | None = None
        tokens = 0
        async with model.chat(chat_ctx=ctx) as stream:
            async for chunk in stream:
                if not (chunk.delta and chunk.delta.content):
                    continue
                tokens += 1
                if fault is None or events:
                    first = first or time.monotonic()
                    if fault is None or phase == "before" or tokens > 2:
                        break
                if fault is not None and phase == "mid" and tokens == 2 and not events:
                    fault_at = time.monotonic()
                    await _inject(fault, proxy, a)
        await model.aclose()
        await proxy.restore()
        assert first is not None
        return first - fault_at


# TTS


async def _tts_once(toxi: ToxiproxyServer, fault: str | None, phase: str) -> float:
    async with ElevenLabsServer(knobs=Knobs(response_delay=0.1)) as a, OpenAIServer() as b:
        proxy = await toxi.proxy(f"tts{time.monotonic_ns()}", a.url)
        specs = [
            ProviderSpec(
                "tts", "elevenlabs", "f", base_url=f"{proxy.url}/v1", api_key="k", voice="en-us"
            ),
            ProviderSpec("tts", "openai", "t", base_url=f"{b.url}/v1", api_key="k", voice="en-us"),
        ]
        model, events = _chain("tts", specs, fault)
        fault_at = time.monotonic()
        if fault is not None and phase == "before":
            await _inject(fault, proxy, a)
        stream = model.stream()
        stream.push_text("This is the first sentence of the reply. And a second one.")
        stream.end_input()
        first: float | None = None
        frames = 0
        async for _ in stream:
            frames += 1
            if (fault is None or events) and first is None:
                first = time.monotonic()
                break
            if fault is not None and phase == "mid" and frames == 2:
                fault_at = time.monotonic()
                await _inject(fault, proxy, a)
        await stream.aclose()
        await model.aclose()
        await proxy.restore()
        assert first is not None
        return first - fault_at


# STT


@contextlib.asynccontextmanager
async def _deepgram_process(*args: str) -> AsyncIterator[str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pipelines.loopback",
        "deepgram",
        "--port=0",
        "--interim-interval=0.5",
        *args,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert proc.stdout is not None
    try:
        url = str(json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))["url"])
        # load the decoder before the call
        noise = np.random.default_rng(0).normal(0, 300, 8000).astype(np.int16)
        async with utils.http_context.http_session().post(
            f"{url}/v1/listen?encoding=linear16&sample_rate=16000", data=noise.tobytes()
        ) as resp:
            await resp.read()
        yield url
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()


async def _stt_once(
    toxi: ToxiproxyServer, fault: str | None, pcm: np.ndarray, a_url: str, b_url: str
) -> float:
    proxy = await toxi.proxy(f"stt{time.monotonic_ns()}", a_url)
    specs = [
        ProviderSpec("stt", "deepgram", "a", base_url=f"{proxy.url}/v1/listen", api_key="k"),
        ProviderSpec("stt", "deepgram", "b", base_url=f"{b_url}/v1/listen", api_key="k"),
    ]
    if fault == "500":
        specs[0] = ProviderSpec("stt", "deepgram", "a", base_url=f"{a_url}/v1/listen", api_key="k")
    model, events = _chain("stt", specs, fault)
    connect_fault = fault in ("refuse", "500")
    if fault == "refuse":
        await proxy.refuse()
    fault_at = time.monotonic()
    stream = model.stream()
    first: list[float] = []

    async def read() -> None:
        async for ev in stream:
            if ev.type in (
                stt.SpeechEventType.INTERIM_TRANSCRIPT,
                stt.SpeechEventType.FINAL_TRANSCRIPT,
            ) and (fault is None or events):
                first.append(time.monotonic())
                return

    reader = asyncio.create_task(read())
    started = time.monotonic()
    inject_at = 0 if connect_fault else 16000  # 0.5 s into the speech
    for i in range(0, len(pcm), 320):
        if fault is not None and not connect_fault and i == inject_at:
            fault_at = time.monotonic()
            await _inject(fault, proxy, None)
        if reader.done():
            break
        chunk = pcm[i : i + 320]
        stream.push_frame(rtc.AudioFrame(chunk.tobytes(), 16000, 1, len(chunk)))
        await asyncio.sleep(max(0.0, started + (i + 320) / 16000 - time.monotonic()))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(reader, 10)
    await stream.aclose()
    await model.aclose()
    await proxy.restore()
    if not first:
        raise RuntimeError(f"stt {fault}: no transcript from the fallback")
    # connect faults (and the baseline) are timed from the speech onset: before it the
    # caller said nothing a failover could delay
    return first[0] - (started + 0.5 if fault is None or connect_fault else fault_at)


async def _bench(repeats: int, layers: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "deadlines": {"stt": DEADLINES.stt, "llm": DEADLINES.llm, "tts": DEADLINES.tts},
        "repeats": repeats,
    }
    async with utils.http_context.open(), ToxiproxyServer() as toxi:
        if "llm" in layers or "tts" in layers:
            for layer, once in (("llm", _llm_once), ("tts", _tts_once)):
                if layer not in layers:
                    continue
                base = statistics.median([await once(toxi, None, "before") for _ in range(3)])
                results: dict[str, Any] = {"baseline_first_output": round(base, 3)}
                for phase in ("before", "mid"):
                    for fault in FAULTS:
                        if phase == "mid" and fault == "500":
                            continue
                        runs = [await once(toxi, fault, phase) for _ in range(repeats)]
                        results[f"{phase}_{fault}"] = _summary(runs, base)
                out[layer] = results
        if "stt" in layers:
            audio = EspeakEngine().synthesize("my name is john and i live in london")
            speech = float_to_int16(resample(audio.samples, audio.sample_rate, 16000))
            pcm = np.concatenate([np.zeros(8000, np.int16), speech, np.zeros(16000, np.int16)])
            results = {}
            async with (
                _deepgram_process() as a_url,
                _deepgram_process() as b_url,
                _deepgram_process("--fail-with-status=500") as bad_url,
            ):
                base = statistics.median(
                    [await _stt_once(toxi, None, pcm, a_url, b_url) for _ in range(2)]
                )
                results["baseline_first_output"] = round(base, 3)
                for fault in FAULTS:
                    primary = bad_url if fault == "500" else a_url
                    runs = [
                        await _stt_once(toxi, fault, pcm, primary, b_url) for _ in range(repeats)
                    ]
                    results[f"mid_turn_{fault}"] = _summary(runs, base)
            out["stt"] = results
    return out


def bench_failover(
    repeats: int = 10, layers: tuple[str, ...] = ("stt", "llm", "tts")
) -> dict[str, Any]:
    """Switch times (seconds) per layer and fault: median and p95 over ``repeats`` runs."""
    return asyncio.run(_bench(repeats, layers))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.dev.bench.failover",
        description="Failover switch times per layer and fault kind, as JSON (no chart: "
        "voice-worker bench failover writes one).",
    )
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--layers", default="stt,llm,tts")
    args = parser.parse_args(argv)
    result = bench_failover(args.repeats, tuple(args.layers.split(",")))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
