"""``bench failover``: added delay per layer x fault x moment, and how often healthy
traffic hedges (also, JSON only, ``python -m worker.dev.bench.failover``).

Switch time is measured from the fault (injection mid-stream; the request start for faults
before the first output, injected just before it, so toxiproxy's own API time is not
counted) to the fallback's first output: first token (LLM), first audio frame
(TTS); for STT, what the caller waits for, from the end of speech to the turn's final
transcript (a fault mid-turn or 0.2 s before the end of speech, ``STT_MOMENTS``).
``added`` subtracts the fallback's own time to first output (STT: to the final), measured
in the same run without a fault (a healthy run), so it is what the failover cost. Every
chain starts with the primary's latency history of a warm-up (``WARMUP`` healthy
requests, replayed into each run's fresh health registry), as a worker that has served a
few calls has: hedge thresholds and the STT final latency follow it.
``hedge_rate_healthy``: hedges per request (per sentence for TTS) over healthy runs of the
whole chain. Goals (issue 17): stall cells added p95 <= 0.5 s, hard-fault cells <= 0.15 s,
``hedge_rate_healthy`` <= 0.05.

Real local servers and real LiveKit plugins; faults by toxiproxy and the servers' knobs.
The Deepgram servers run as child processes (pocketsphinx holds the GIL while decoding).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import APIError, llm, stt, utils

from pipelines.audio import float_to_int16, int16_to_float, resample, rms_dbfs
from pipelines.engines import EspeakEngine
from pipelines.loopback import ElevenLabsServer, Knobs, OpenAIServer, WireServer
from pipelines.providers import ProviderSpec
from pipelines.providers.failover import (
    HEDGE_REASONS,
    Deadlines,
    HealthRegistry,
    SwitchEvent,
    build_failover_layers,
)
from pipelines.providers.failover.stt import SPEECH_DBFS
from worker.dev.services import Proxy, ToxiproxyServer
from worker.settings import REPO_ROOT

FAULTS = ("reset", "stall", "refuse", "500")
DEADLINES = Deadlines()
WARMUP = 5
"""Healthy requests whose latencies seed every run's health registry."""
History = dict[str, dict[str, tuple[float, ...]]]
"""``{provider: {kind: latencies}}`` from a warm-up (``HealthRegistry.history``)."""


def _seeded(history: History) -> HealthRegistry:
    health = HealthRegistry()
    for provider, kinds in history.items():
        for kind, samples in kinds.items():
            health.seed(provider, kind, samples)
    return health


def _history(health: HealthRegistry, provider: str) -> History:
    return {
        provider: {
            kind: health.history(provider, kind) for kind in ("first", "final", "gap", "interim")
        }
    }


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
    layer: str, specs: list[ProviderSpec], health: HealthRegistry, *, alone: bool = False
) -> tuple[Any, list[SwitchEvent]]:
    """``layer``'s failover chain over ``specs`` (the fallback alone for the healthy
    baseline) and the list its switch events land in."""
    events: list[SwitchEvent] = []
    model = build_failover_layers(
        {layer: specs[1:] if alone else specs},
        deadlines=DEADLINES,
        health=health,
        on_switch=events.append,
    )[layer]
    return model, events


def _hedges(events: list[SwitchEvent]) -> int:
    return sum(e.reason in HEDGE_REASONS for e in events)


@dataclass
class Run:
    """One request of a bench run: seconds to the (fallback's) first output, and the
    hedges its chain started over ``requests`` requests."""

    seconds: float
    hedges: int = 0
    requests: int = 1


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


async def _llm_once(
    toxi: ToxiproxyServer,
    fault: str | None,
    phase: str,
    history: History,
    *,
    alone: bool = False,
    health: HealthRegistry | None = None,
) -> Run:
    """With no fault and the whole chain: reads the whole reply (the warm-up learns the
    provider's gaps between tokens); otherwise stops at the (fallback's) first token."""
    whole = fault is None and not alone
    knobs = Knobs(first_response_delay=0.05, response_delay=0.05)
    reply = "One two three four five six."
    async with OpenAIServer(reply=reply, knobs=knobs) as a, OpenAIServer(reply=reply) as b:
        proxy = await toxi.proxy(f"llm{time.monotonic_ns()}", a.url)
        specs = [
            ProviderSpec("llm", "openai", "a", base_url=f"{proxy.url}/v1", api_key="k"),
            ProviderSpec("llm", "custom", "b", base_url=f"{b.url}/v1"),
        ]
        model, events = _chain("llm", specs, health or _seeded(history), alone=alone)
        ctx = llm.ChatContext.empty()
        ctx.add_message(role="user", content="Count.")
        if fault is not None and phase == "before":
            await _inject(fault, proxy, a)
        fault_at = time.monotonic()  # a fault before the output hits as the request opens
        first: float | None = None
        tokens = 0
        async with model.chat(chat_ctx=ctx) as stream:
            async for chunk in stream:
                if not (chunk.delta and chunk.delta.content):
                    continue
                tokens += 1
                # before the first output any token comes after the fault (a winning
                # hedge's switch event is emitted after its first tokens); mid-reply only
                # the fallback's, after its switch event
                if fault is None or phase == "before" or events:
                    first = first or time.monotonic()
                    if not whole and (fault is None or phase == "before" or tokens > 2):
                        break
                if fault is not None and phase == "mid" and tokens == 2 and not events:
                    fault_at = time.monotonic()
                    await _inject(fault, proxy, a)
        await model.aclose()
        await proxy.restore()
        assert first is not None
        return Run(first - fault_at, _hedges(events))


# TTS


async def _tts_once(
    toxi: ToxiproxyServer,
    fault: str | None,
    phase: str,
    history: History,
    *,
    alone: bool = False,
    health: HealthRegistry | None = None,
) -> Run:
    """With no fault and the whole chain: plays both sentences (each is a request a
    hedge may race); otherwise stops at the (fallback's) first audio."""
    whole = fault is None and not alone
    async with ElevenLabsServer(knobs=Knobs(response_delay=0.1)) as a, OpenAIServer() as b:
        proxy = await toxi.proxy(f"tts{time.monotonic_ns()}", a.url)
        specs = [
            ProviderSpec(
                "tts", "elevenlabs", "f", base_url=f"{proxy.url}/v1", api_key="k", voice="en-us"
            ),
            ProviderSpec("tts", "openai", "t", base_url=f"{b.url}/v1", api_key="k", voice="en-us"),
        ]
        model, events = _chain("tts", specs, health or _seeded(history), alone=alone)
        if fault is not None and phase == "before":
            await _inject(fault, proxy, a)
        fault_at = time.monotonic()  # a fault before the output hits as the request opens
        stream = model.stream()
        stream.push_text("This is the first sentence of the reply. And a second one.")
        stream.end_input()
        first: float | None = None
        frames = 0
        async for _ in stream:
            frames += 1
            if (fault is None or phase == "before" or events) and first is None:
                first = time.monotonic()
                if not whole:
                    break
            if fault is not None and phase == "mid" and frames == 2:
                fault_at = time.monotonic()
                await _inject(fault, proxy, a)
        await stream.aclose()
        await model.aclose()
        await proxy.restore()
        assert first is not None
        return Run(first - fault_at, _hedges(events), 2 if whole else 1)


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
        "--preload",
        *args,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert proc.stdout is not None
    try:
        # --preload: the decoders (batch and live) are loaded before the banner
        yield str(json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))["url"])
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()


STT_MOMENTS = {"mid_turn": 0.5, "turn_end": -0.2}
"""Where a mid-turn STT fault hits: seconds into the caller's speech (0.5 s in: the
provider still owes interims), or before its end (0.2 s before: caught from the end of
speech). Connect faults (refuse, 500) hit as the stream opens, one moment only."""
STT_CONNECT_FAULTS = ("refuse", "500")


def speech_span(pcm: np.ndarray) -> tuple[float, float]:
    """Seconds of ``pcm`` (16 kHz) from its start to the first and past the last 20 ms
    frame of speech (the failover's own speech threshold)."""
    loud = [
        i
        for i in range(0, len(pcm) - 319, 320)
        if rms_dbfs(int16_to_float(pcm[i : i + 320])) > SPEECH_DBFS
    ]
    return loud[0] / 16000, (loud[-1] + 320) / 16000


async def _stt_once(
    toxi: ToxiproxyServer,
    fault: str | None,
    phase: str,
    pcm: np.ndarray,
    a_url: str,
    b_url: str,
    history: History,
    *,
    alone: bool = False,
    health: HealthRegistry | None = None,
) -> Run:
    """Seconds from the end of the caller's speech to the turn's final transcript (the
    fallback's, after a fault): what the caller waits for the turn to be heard."""
    proxy = await toxi.proxy(f"stt{time.monotonic_ns()}", a_url)
    specs = [
        ProviderSpec("stt", "deepgram", "a", base_url=f"{proxy.url}/v1/listen", api_key="k"),
        ProviderSpec("stt", "deepgram", "b", base_url=f"{b_url}/v1/listen", api_key="k"),
    ]
    if fault == "500":
        specs[0] = ProviderSpec("stt", "deepgram", "a", base_url=f"{a_url}/v1/listen", api_key="k")
    model, events = _chain("stt", specs, health or _seeded(history), alone=alone)
    if fault == "refuse":
        await proxy.refuse()
    onset, end = speech_span(pcm)
    moment = STT_MOMENTS[phase]
    inject_at = 320 * round(50 * (onset + moment if moment > 0 else end + moment))
    stream = model.stream()
    finals: list[float] = []

    async def read() -> None:
        async for ev in stream:
            if ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT and ev.alternatives[0].text:
                finals.append(time.monotonic())
                return

    reader = asyncio.create_task(read())
    started = time.monotonic()
    for i in range(0, len(pcm), 320):
        if fault is not None and fault not in STT_CONNECT_FAULTS and i == inject_at:
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
    if not finals or (fault is not None and not events):
        raise RuntimeError(f"stt {fault} {phase}: no final transcript from the fallback")
    return Run(finals[0] - (started + end), _hedges(events))


async def _layer(
    once: Any,
    repeats: int,
    healthy: int,
    phases: tuple[str, ...],
    *args: Any,
    connect_faults: tuple[str, ...] = ("500",),
) -> dict[str, Any]:
    """One layer's cells: warm-up, healthy baseline, hedge rate, then each fault
    (``connect_faults`` at the first moment only: a status line comes once, before the
    first output). A full garbage collection before every run keeps the bench process's
    own collections (its in-process servers' garbage, 0.1-0.25 s under load) out of the
    timed windows: they landed in the LLM refuse cell, after the stall cells' garbage.
    A run whose chain failed (every provider, as STT turns do on a starved machine) is
    counted (``failed``, ``healthy_failed``), not timed; a cell with no timed run is
    listed in ``cells_without_a_run``."""

    async def once_(fault: str | None, phase: str, history: History, **kw: Any) -> Run | None:
        gc.collect()
        try:
            run: Run = await once(*args[:1], fault, phase, history, *args[1:], **kw)
        except (APIError, RuntimeError) as exc:
            print(
                f"bench failover: a {fault or 'healthy'} {phase} run failed: {exc}", file=sys.stderr
            )
            return None
        return run

    warm = HealthRegistry()
    for _ in range(WARMUP):
        await once_(None, phases[0], {}, health=warm)
    history = {p: _history(warm, p)[p] for p in warm.snapshot()}
    alone = [await once_(None, phases[0], history, alone=True) for _ in range(3)]
    if not any(alone):
        raise RuntimeError("bench failover: no healthy run of the fallback alone completed")
    base = statistics.median([r.seconds for r in alone if r is not None])
    tried = [await once_(None, phases[0], history) for _ in range(healthy)]
    rate = [r for r in tried if r is not None]
    results: dict[str, Any] = {
        "baseline_first_output": round(base, 3),
        "hedge_rate_healthy": round(
            sum(r.hedges for r in rate) / max(1, sum(r.requests for r in rate)), 3
        ),
        "healthy_requests": sum(r.requests for r in rate),
        "healthy_failed": len(tried) - len(rate),
    }
    empty: list[str] = []
    for phase in phases:
        for fault in FAULTS:
            if phase != phases[0] and fault in connect_faults:
                continue  # one moment for a fault that hits as the request opens
            cell = [await once_(fault, phase, history) for _ in range(repeats)]
            runs = [r.seconds for r in cell if r is not None]
            if not runs:
                empty.append(f"{phase}_{fault}")
                continue
            results[f"{phase}_{fault}"] = {**_summary(runs, base), "failed": repeats - len(runs)}
    if empty:
        results["cells_without_a_run"] = empty
    return results


async def _bench(repeats: int, layers: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "deadlines": {"stt": DEADLINES.stt, "llm": DEADLINES.llm, "tts": DEADLINES.tts},
        "repeats": repeats,
        "warmup": WARMUP,
    }
    healthy = max(10, 2 * repeats)
    async with utils.http_context.open(), ToxiproxyServer() as toxi:
        for layer, once in (("llm", _llm_once), ("tts", _tts_once)):
            if layer in layers:
                out[layer] = await _layer(once, repeats, healthy, ("before", "mid"), toxi)
        if "stt" in layers:
            audio = EspeakEngine().synthesize("my name is john and i live in london")
            speech = float_to_int16(resample(audio.samples, audio.sample_rate, 16000))
            pcm = np.concatenate([np.zeros(8000, np.int16), speech, np.zeros(16000, np.int16)])
            async with (
                _deepgram_process() as a_url,
                _deepgram_process() as b_url,
                _deepgram_process("--fail-with-status=500") as bad_url,
            ):

                async def stt_once(
                    toxi_: ToxiproxyServer,
                    fault: str | None,
                    phase: str,
                    history: History,
                    **kw: Any,
                ) -> Run:
                    primary = bad_url if fault == "500" else a_url
                    return await _stt_once(toxi_, fault, phase, pcm, primary, b_url, history, **kw)

                out["stt"] = await _layer(
                    stt_once,
                    repeats,
                    max(3, repeats),
                    tuple(STT_MOMENTS),
                    toxi,
                    connect_faults=STT_CONNECT_FAULTS,
                )
    rates = [out[x]["hedge_rate_healthy"] for x in ("llm", "tts") if x in out]
    out["hedge_rate_healthy"] = max(rates) if rates else None
    return out


def bench_failover(
    repeats: int = 10, layers: tuple[str, ...] = ("stt", "llm", "tts")
) -> dict[str, Any]:
    """Added delay (seconds) per layer x fault x moment (median and p95 over ``repeats``
    runs) and the healthy hedge rate per layer (``hedge_rate_healthy``: the highest)."""
    return asyncio.run(_bench(repeats, layers))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.dev.bench.failover",
        description="Added delay per layer x fault x moment and the healthy hedge rate, as "
        "JSON (no chart: voice-worker bench failover writes one).",
    )
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--layers", default="stt,llm,tts")
    args = parser.parse_args(argv)
    result = bench_failover(args.repeats, tuple(args.layers.split(",")))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
