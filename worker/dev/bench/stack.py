"""The stack the call benchmarks (``bench latency``, ``bench capacity``) run on: a LiveKit
server, one ``python -m worker start`` process group, and the providers, with callers
replaying the fixtures through ``worker.dev.caller``.

With ``--stack fixed`` the providers are the local vendor servers (``pipelines.loopback``)
in a separate process (``FixedProviders``, ``python -m worker.dev.bench providers``),
answering after FIXED configured delays with canned content (a fixed transcript, a
scripted reply, one pre-synthesized clip), so what is neither a configured delay nor the
configured response delay is the worker's (and LiveKit's transport's) own time. With
``--stack offline`` they are the offline engines and llama.cpp.

Clocks: caller, worker and provider servers run on this machine and stamp ``time.time()``
(one wall clock), so caller-side and worker-side instants compare directly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.audio import Audio, Float32Array, read_wav, rms_dbfs
from worker.dev.bench.common import AUDIO_FIXTURES, progress
from worker.dev.services import (
    LiveKitEndpoint,
    LiveKitServer,
    LlamaServer,
    ManagedProcess,
    WorkerProcess,
    free_port,
    warm_up_llm,
)
from worker.settings import REPO_ROOT

if TYPE_CHECKING:
    from worker.dev.caller import CallRecording

FRONT_DESK = REPO_ROOT / "fixtures" / "control_plane" / "agents"
FRONT_DESK_AGENT = FRONT_DESK / "agent_01JC0FRNTDESK0000000000000.json"

BENCH_TRANSCRIPT = "what time do you open tomorrow"
BENCH_REPLY = "We open at eight tomorrow morning."
SPEECH_END_DBFS = -50.0
"""A caller turn's speech ends with its last 10 ms frame louder than this (the fixtures
have digital silence between words and turns, so this is the last audible sample)."""


@dataclass(frozen=True, slots=True)
class FixedDelays:
    """What the provider servers add on purpose; everything else is measured."""

    stt: float = 0.0
    """Seconds the Deepgram server waits before each message (after its endpointing)."""
    stt_endpointing_ms: int = 200
    """Deepgram server's end-of-utterance silence (audio time)."""
    llm: float = 0.2
    """Seconds to the scripted LLM's first token."""
    tts: float = 0.15
    """Seconds to the TTS's first audio chunk."""


class ScriptedSTT:
    """A recognizer with no cost: a fixed transcript for anything longer than a cough."""

    def __init__(self, text: str = BENCH_TRANSCRIPT, min_seconds: float = 0.25) -> None:
        self.text = text
        self.min_seconds = min_seconds

    def transcribe(self, samples: Float32Array, sample_rate: int) -> str:
        return self.text if len(samples) >= self.min_seconds * sample_rate else ""


class FixedClipTTS:
    """A synthesizer with no cost: every request gets one clip, synthesized at start-up
    (espeak-ng at its native 22.05 kHz, the rate the worker asks ElevenLabs for, so the
    server does not resample either), trimmed so its first sample is speech."""

    def __init__(self, text: str = BENCH_REPLY) -> None:
        from pipelines.engines import EspeakEngine

        audio = EspeakEngine().synthesize(text)
        frame = audio.sample_rate // 100
        x = audio.samples
        loud = [i for i in range(0, len(x) - frame, frame) if rms_dbfs(x[i : i + frame]) > -40.0]
        start, end = (loud[0], loud[-1] + frame) if loud else (0, len(x))
        self.clip = Audio(x[start:end].copy(), audio.sample_rate)

    def synthesize(
        self, text: str, *, voice: str | None = None, speaking_rate: float | None = None
    ) -> Audio:
        return self.clip


async def serve_fixed_providers(
    delays: FixedDelays, ports: Mapping[str, int], reply: str = BENCH_REPLY
) -> None:
    """Runs the three vendor servers (Deepgram, OpenAI-compatible, ElevenLabs) with fixed
    delays and canned content until SIGTERM; prints their URLs as one JSON line."""
    import signal

    from pipelines.loopback import DeepgramServer, ElevenLabsServer, Knobs, OpenAIServer

    # Each knob paces every message of a connection (a Deepgram or ElevenLabs WebSocket
    # lives for the whole call), so first and later messages get the same delay: each
    # turn's first message then waits exactly the delay after it is ready.
    servers = [
        DeepgramServer(
            ScriptedSTT(),
            min_endpointing_ms=delays.stt_endpointing_ms,
            port=ports["deepgram"],
            knobs=Knobs(first_response_delay=delays.stt, response_delay=delays.stt),
        ),
        ElevenLabsServer(
            FixedClipTTS(reply),
            port=ports["elevenlabs"],
            knobs=Knobs(first_response_delay=delays.tts, response_delay=delays.tts),
        ),
        OpenAIServer(
            reply=reply,
            models=("gpt-4o-mini",),
            port=ports["openai"],
            knobs=Knobs(first_response_delay=delays.llm),
        ),
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    urls = {s.vendor: await s.start() for s in servers}
    print(json.dumps(urls), flush=True)
    try:
        await stop.wait()
    finally:
        for s in servers:
            await s.stop()


class FixedProviders(ManagedProcess):
    """``python -m worker.dev.bench providers``: the fixed-delay vendor servers in their own
    process, so neither the callers' nor the worker's event loop slows them down."""

    name = "fixed-providers"
    python_child = True

    def __init__(self, delays: FixedDelays) -> None:
        super().__init__(startup_timeout=30.0)
        self.delays = delays
        self.ports = {v: free_port() for v in ("deepgram", "openai", "elevenlabs")}

    def _command(self) -> list[str]:
        d = self.delays
        return [
            sys.executable,
            "-m",
            "worker.dev.bench",
            "providers",
            "--stt-delay",
            str(d.stt),
            "--stt-endpointing-ms",
            str(d.stt_endpointing_ms),
            "--llm-delay",
            str(d.llm),
            "--tts-delay",
            str(d.tts),
            *(f"--{v}-port={p}" for v, p in self.ports.items()),
        ]

    def _ready_url(self) -> str:
        # the OpenAI server starts last
        return f"http://127.0.0.1:{self.ports['openai']}/v1/models"

    def worker_env(self) -> dict[str, str]:
        """Settings env that routes the worker's three layers to these servers."""
        base = "http://127.0.0.1"
        return {
            "DEEPGRAM_API_KEY": "test",
            "DEEPGRAM_BASE_URL": f"{base}:{self.ports['deepgram']}/v1/listen",
            "OPENAI_API_KEY": "test",
            "OPENAI_BASE_URL": f"{base}:{self.ports['openai']}/v1",
            "ELEVEN_API_KEY": "test",
            "ELEVEN_BASE_URL": f"{base}:{self.ports['elevenlabs']}/v1",
            "OFFLINE_PROVIDERS": "false",
        }


def add_delay_options(parser: argparse.ArgumentParser) -> None:
    """``--stt-delay``, ``--stt-endpointing-ms``, ``--llm-delay``, ``--tts-delay``, with the
    ``FixedDelays`` defaults; ``delays_from(args)`` reads them back."""
    d = FixedDelays()
    g = parser.add_argument_group("fixed provider delays (--stack fixed)")
    g.add_argument("--stt-delay", type=float, default=d.stt, metavar="S")
    g.add_argument("--stt-endpointing-ms", type=int, default=d.stt_endpointing_ms, metavar="MS")
    g.add_argument("--llm-delay", type=float, default=d.llm, metavar="S")
    g.add_argument("--tts-delay", type=float, default=d.tts, metavar="S")


def delays_from(args: argparse.Namespace) -> FixedDelays:
    values = (args.stt_delay, args.llm_delay, args.tts_delay)
    if any(v < 0 for v in values) or args.stt_endpointing_ms < 10:
        raise ValueError("delays must be >= 0 and --stt-endpointing-ms >= 10")
    return FixedDelays(
        stt=args.stt_delay,
        stt_endpointing_ms=args.stt_endpointing_ms,
        llm=args.llm_delay,
        tts=args.tts_delay,
    )


def providers_main(argv: Sequence[str]) -> int:
    """``python -m worker.dev.bench providers``: what ``FixedProviders`` runs."""
    parser = argparse.ArgumentParser(prog="python -m worker.dev.bench providers")
    add_delay_options(parser)
    for vendor in ("deepgram", "openai", "elevenlabs"):
        parser.add_argument(f"--{vendor}-port", type=int, default=0)
    args = parser.parse_args(argv)
    ports = {
        "deepgram": args.deepgram_port,
        "openai": args.openai_port,
        "elevenlabs": args.elevenlabs_port,
    }
    asyncio.run(serve_fixed_providers(delays_from(args), ports))
    return 0


def bench_agent(stack: str, response_delay: float) -> dict[str, Any]:
    """The front-desk agent with allowlists that pick the bench's providers, no webhooks
    (nothing to deliver) and no idle reprompt within a call."""
    agent: dict[str, Any] = json.loads(FRONT_DESK_AGENT.read_text())
    agent.pop("webhooks", None)
    agent["id"] = "agent_01JC0BENCH0000000000000000"
    agent["response_delay_seconds"] = response_delay
    agent["inactivity_timeout_seconds"] = 60
    if stack == "fixed":
        allowed = {
            "stt": ["deepgram:nova-3"],
            "llm": ["openai:gpt-4o-mini"],
            "tts": ["elevenlabs:eleven_flash_v2_5"],
        }
    else:
        allowed = {"stt": ["local"], "llm": ["local"], "tts": ["local"]}
    agent["stackPreferences"] = {"allowedProviders": allowed}
    return agent


@dataclass(frozen=True, slots=True)
class CallScript:
    """One caller: a fixture and the turns (segments of it) it speaks, in order."""

    fixture: str
    audio: Audio
    turns: tuple[tuple[float, float], ...]
    speech_ends: tuple[float, ...]
    """Per turn, seconds from the turn's start to its last audible frame."""


def speech_end_offset(audio: Audio, start: float, end: float) -> float:
    frame = audio.sample_rate // 100
    x = audio.samples[int(start * audio.sample_rate) : int(end * audio.sample_rate)]
    last = 0
    for i in range(0, len(x) - frame + 1, frame):
        if rms_dbfs(x[i : i + frame]) > SPEECH_END_DBFS:
            last = i + frame
    return last / audio.sample_rate


def caller_scripts(n_calls: int, turns_per_call: int) -> list[CallScript]:
    """Callers cycling over the fixtures' question turns (goodbyes left out: an LLM may
    end the call on them)."""
    manifest: dict[str, Any] = json.loads((AUDIO_FIXTURES / "manifest.json").read_text())
    pool: list[tuple[str, Audio, list[tuple[float, float]]]] = []
    for name in ("hours_question", "booking_two_turns", "one_turn"):
        entry = manifest[name]
        audio = read_wav(AUDIO_FIXTURES / entry["file"])
        segs = [
            (float(t["start"]), float(t["end"]))
            for t in entry["turns"]
            if "goodbye" not in t["text"].lower()
        ]
        pool.append((name, audio, segs))
    scripts = []
    for i in range(n_calls):
        name, audio, segs = pool[i % len(pool)]
        turns = tuple(segs[k % len(segs)] for k in range(turns_per_call))
        ends = tuple(speech_end_offset(audio, s, e) for s, e in turns)
        scripts.append(CallScript(name, audio, turns, ends))
    return scripts


@dataclass
class Stack:
    """A LiveKit server, the providers and one worker process group, all running."""

    livekit: LiveKitEndpoint
    worker: WorkerProcess
    agent: dict[str, Any]
    delays: FixedDelays
    stack: str
    response_delay: float


@contextlib.asynccontextmanager
async def running_stack(
    stack: str,
    *,
    workdir: Path,
    response_delay: float,
    delays: FixedDelays,
    worker_env: Mapping[str, str] | None = None,
    livekit: LiveKitEndpoint | None = None,
) -> AsyncIterator[Stack]:
    """Starts what ``stack`` needs (LiveKit unless given, fixed providers or llama.cpp,
    the worker)."""
    async with contextlib.AsyncExitStack() as es:
        if livekit is None:
            progress("starting LiveKit server")
            livekit = (await es.enter_async_context(LiveKitServer())).endpoint
        env: dict[str, str] = {"LOG_JSON": "true", "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO")}
        llm_base_url = None
        if stack == "fixed":
            progress("starting fixed-delay provider servers")
            providers = await es.enter_async_context(FixedProviders(delays))
            env.update(providers.worker_env())
        else:
            progress("starting llama.cpp (offline LLM)")
            llama = await es.enter_async_context(LlamaServer())
            await asyncio.to_thread(warm_up_llm, llama.base_url)
            llm_base_url = llama.base_url
            env["OFFLINE_PROVIDERS"] = "true"
        env.update(worker_env or {})
        worker = WorkerProcess(
            livekit,
            workdir=workdir,
            control_plane_url=f"file://{REPO_ROOT / 'fixtures' / 'control_plane'}",
            llm_base_url=llm_base_url,
            extra_env=env,
            register_timeout=120.0,
        )
        progress("starting worker")
        await worker.astart()
        try:
            yield Stack(
                livekit,
                worker,
                bench_agent(stack, response_delay),
                delays,
                stack,
                response_delay,
            )
        finally:
            await worker.astop()


async def run_call(st: Stack, script: CallScript, *, answer_timeout: float = 20.0) -> CallRecording:
    """One caller on ``st``, turn by turn."""
    from worker.dev.caller import run_caller  # the LiveKit SDK only once a call is made

    return await run_caller(
        st.livekit,
        st.worker.agent_name,
        {"agent": st.agent},
        script.audio,
        turns=list(script.turns),
        tail_seconds=1.0,
        answer_timeout=answer_timeout,
        pause=0.5,
        join_timeout=60.0,
    )
