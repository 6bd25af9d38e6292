"""``voice-worker bench``: latency budget, worker overhead and capacity on real calls,
plus the audio, AMD and failover benchmarks, each written as JSON + PNG.

``latency`` and ``capacity`` run real calls in a local LiveKit room: a LiveKit server, one
``python -m worker start`` process group, and caller participants replaying the fixtures
(``worker.dev.replay``). With ``--stack fixed`` the providers are the local vendor servers
(``pipelines.loopback``) in a separate process, answering after FIXED configured delays with
canned content (a fixed transcript, a scripted reply, one pre-synthesized clip), so what
is neither a configured delay nor the configured response delay is the worker's (and
LiveKit's transport's) own time.

Clocks: caller, worker and provider servers run on this machine and stamp ``time.time()``
(one wall clock), so caller-side and worker-side instants compare directly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.audio import Audio, Float32Array, read_wav, rms_dbfs
from pipelines.errors import VoiceWorkerError
from worker.dev.services import LiveKitServer, LlamaServer, ManagedProcess, free_port
from worker.settings import REPO_ROOT

if TYPE_CHECKING:
    from worker.dev.replay import LiveKitEndpoint, WorkerProcess

AUDIO_FIXTURES = REPO_ROOT / "fixtures" / "audio"
FRONT_DESK = REPO_ROOT / "fixtures" / "control_plane" / "agents"
FRONT_DESK_AGENT = FRONT_DESK / "agent_01JC0FRNTDESK0000000000000.json"

BENCH_TRANSCRIPT = "what time do you open tomorrow"
BENCH_REPLY = "We open at eight tomorrow morning."
SPEECH_END_DBFS = -50.0
"""A caller turn's speech ends with its last 10 ms frame louder than this (the fixtures
have digital silence between words and turns, so this is the last audible sample)."""

WORKER_P50_GOAL_MS = 10.0
WORKER_P95_GOAL_MS = 25.0
FRAME_GAP_LIMIT_MS = 40.0
CAPACITY_WORKER_P95_LIMIT_MS = 50.0
MIN_TURNS_PER_STEP = 20
"""A capacity step runs at least this many caller turns by default (one call: ~140 s), so
its worker time p95 is a percentile and not the single slowest turn."""
REFERENCE_CALLS_PER_CORE = {
    "livekit_published_vad_only": 8.0,
    "pipecat_users_reported": 5.0,
}
CALLS_PER_CORE_GOAL = 20.0


class BenchError(VoiceWorkerError):
    """A benchmark could not run (a missing piece, a call that never started)."""


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def _stats_ms(values: Sequence[float]) -> dict[str, float | int | None]:
    """p50/p95/max in milliseconds of values in seconds."""

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 1)

    return {
        "n": len(values),
        "p50_ms": ms(percentile(values, 50)),
        "p95_ms": ms(percentile(values, 95)),
        "max_ms": ms(max(values) if values else None),
    }


def write_report(out: Path, name: str, report: Mapping[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return path


# --- fixed-delay providers -------------------------------------------------------------


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

    from pipelines.loopback.base import Knobs
    from pipelines.loopback.deepgram import DeepgramServer
    from pipelines.loopback.elevenlabs import ElevenLabsServer
    from pipelines.loopback.openai_compat import OpenAIServer

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
    """``python -m worker.dev.bench.calls providers``: the fixed-delay vendor servers in their own
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
            "worker.dev.bench.calls",
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


# --- calls -----------------------------------------------------------------------------


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
class TurnRow:
    """One caller turn, instants in seconds after the caller's end of speech."""

    call: int
    turn: int
    caller_end_of_speech: float
    """Caller timeline (seconds since the caller's audio started)."""
    stages: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    """LiveKit's per-turn metrics (user and assistant ``MetricsReport``), seconds."""
    e2e: float | None = None
    """Caller end of speech -> first agent audio frame heard by the caller."""
    provider: float | None = None
    """The providers' and the response delay's share: max(response delay, STT final
    delay + LLM first token + TTS first byte)."""
    worker: float | None = None
    """``e2e - provider``: worker and LiveKit transport."""
    worker_own_clock: float | None = None
    """Same, from the worker's own clock (LiveKit's ``e2e_latency``: playout start minus
    the worker VAD's end of speech), i.e. without the transport in and out."""
    stt_gated: bool = False
    """STT final + LLM + TTS took longer than the response delay (providers, not the
    response delay, bound the reply)."""


def turn_rows(
    call: int,
    rec: Any,
    script: CallScript,
    *,
    stack: str,
    response_delay: float,
    delays: FixedDelays,
) -> list[TurnRow]:
    """Per caller turn: every stage's instant and the provider/worker split."""
    users = [e for e in rec.turn_events if e.get("role") == "user"]
    agents = [e for e in rec.turn_events if e.get("role") == "assistant"]
    onsets: list[float] = rec.speech_onsets()
    rows: list[TurnRow] = []
    played = list(rec.caller_turns)
    for i, (began, _played_end) in enumerate(played):
        end = began + script.speech_ends[i]
        next_began = played[i + 1][0] if i + 1 < len(played) else math.inf
        row = TurnRow(call=call, turn=i + 1, caller_end_of_speech=round(end, 3))
        rows.append(row)
        end_wall = rec.t0 + end
        user = next(
            (u for u in users if end - 0.3 <= rec.rel(u["at"]) < next_began),
            None,
        )
        heard = next((t for t in onsets if end < t < next_began), None)
        if heard is not None:
            row.e2e = heard - end
            row.stages["first_agent_audio_heard"] = heard - end
        if user is None:
            continue
        m = user.get("metrics") or {}
        stopped = m.get("stopped_speaking_at")
        for key in ("transcription_delay", "end_of_turn_delay", "on_user_turn_completed_delay"):
            if key in m:
                row.metrics[key] = float(m[key])
        if stopped is None:
            continue
        row.stages["vad_end_of_speech"] = stopped - end_wall
        row.stages["stt_final"] = stopped + m.get("transcription_delay", 0.0) - end_wall
        eot = stopped + m.get("end_of_turn_delay", 0.0)
        row.stages["end_of_turn_decided"] = eot - end_wall
        reply = next((a for a in agents if a["at"] >= user["at"]), None)
        if reply is None:
            continue
        m2 = reply.get("metrics") or {}
        for key in ("llm_node_ttft", "tts_node_ttfb", "e2e_latency", "playback_latency"):
            if key in m2:
                row.metrics[key] = float(m2[key])
        ttft, ttfb = m2.get("llm_node_ttft"), m2.get("tts_node_ttfb")
        if ttft is not None:
            # the reply (LLM, then TTS on its first sentence) starts on the STT final:
            # preemptive generation, kept when the end of turn confirms the transcript
            llm_start = stopped + m.get("transcription_delay", 0.0)
            row.stages["llm_first_token"] = llm_start + ttft - end_wall
            if ttfb is not None:
                row.stages["tts_first_byte"] = llm_start + ttft + ttfb - end_wall
        if "started_speaking_at" in m2:
            row.stages["agent_started_speaking"] = m2["started_speaking_at"] - end_wall
        stt_time = float(m.get("transcription_delay", 0.0))
        llm_time: float | None = delays.llm if stack == "fixed" else ttft
        tts_time: float | None = delays.tts if stack == "fixed" else ttfb
        if llm_time is None or tts_time is None:
            continue
        # LiveKit starts the LLM on the STT final (preemptive generation) and plays the
        # reply once the end of turn is decided, so the providers allow audio no earlier
        # than the later of the response delay and STT + LLM + TTS, from the VAD's end
        # of speech.
        chained = stt_time + llm_time + tts_time
        row.stt_gated = chained > response_delay
        row.provider = max(response_delay, chained)
        if row.e2e is not None:
            row.worker = row.e2e - row.provider
        if "started_speaking_at" in m2:
            row.worker_own_clock = m2["started_speaking_at"] - stopped - row.provider
    return rows


def frame_gaps(rec: Any) -> list[float]:
    """Inter-arrival gaps (s) of the agent's audio frames at the caller while the agent
    speaks: consecutive frames of which at least one is speech."""
    from worker.dev.replay import SPEECH_RMS

    gaps = []
    prev_at, prev_loud = None, False
    for at, samples in rec.agent_frames:
        loud = float(np.sqrt(np.mean(np.square(samples)))) > SPEECH_RMS
        if prev_at is not None and (loud or prev_loud):
            gaps.append(at - prev_at)
        prev_at, prev_loud = at, loud
    return gaps


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
) -> Any:
    """Starts what ``stack`` needs (LiveKit, fixed providers or llama.cpp, the worker)."""
    from worker.dev.replay import LiveKitEndpoint, WorkerProcess, warm_up_llm

    async with contextlib.AsyncExitStack() as es:
        progress("starting LiveKit server")
        lk = await es.enter_async_context(LiveKitServer())
        livekit = LiveKitEndpoint(lk.url, lk.api_key, lk.api_secret)
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


async def run_call(st: Stack, script: CallScript, *, answer_timeout: float = 20.0) -> Any:
    from worker.dev.replay import run_caller

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


# --- latency ---------------------------------------------------------------------------

STAGES = (
    "vad_end_of_speech",
    "stt_final",
    "end_of_turn_decided",
    "llm_first_token",
    "tts_first_byte",
    "agent_started_speaking",
    "first_agent_audio_heard",
)


def summarize_turns(rows: Sequence[TurnRow]) -> dict[str, Any]:
    stages = {s: _stats_ms([r.stages[s] for r in rows if s in r.stages]) for s in STAGES}
    return {
        "turns_measured": len(rows),
        "turns_with_agent_audio": sum(r.e2e is not None for r in rows),
        "provider_bound_turns": sum(r.stt_gated for r in rows),
        "stages_after_caller_end_of_speech": stages,
        "e2e": _stats_ms([r.e2e for r in rows if r.e2e is not None]),
        "provider_and_response_delay": _stats_ms(
            [r.provider for r in rows if r.provider is not None]
        ),
        "worker_time": _stats_ms([r.worker for r in rows if r.worker is not None]),
        "worker_time_own_clock": _stats_ms(
            [r.worker_own_clock for r in rows if r.worker_own_clock is not None]
        ),
        "transport_in": _stats_ms(
            [r.stages["vad_end_of_speech"] for r in rows if "vad_end_of_speech" in r.stages]
        ),
        "transport_out": _stats_ms(
            [
                r.stages["first_agent_audio_heard"] - r.stages["agent_started_speaking"]
                for r in rows
                if "first_agent_audio_heard" in r.stages and "agent_started_speaking" in r.stages
            ]
        ),
    }


async def bench_latency(
    *,
    stack: str = "fixed",
    turns: int = 20,
    concurrency: int = 2,
    response_delay: float = 0.4,
    delays: FixedDelays | None = None,
    workdir: Path,
) -> dict[str, Any]:
    """Replays caller fixtures through a real local LiveKit server and times each turn."""
    if stack not in ("fixed", "offline"):
        raise ValueError(f"--stack: expected fixed or offline, got {stack!r}")
    if turns < 1 or concurrency < 1:
        raise ValueError("--turns and --concurrency must be at least 1")
    delays = delays or FixedDelays()
    per_call = min(5, turns)
    n_calls = math.ceil(turns / per_call)
    scripts = caller_scripts(n_calls, per_call)
    rows: list[TurnRow] = []
    started = time.monotonic()
    # one warm job process per concurrent call: with fewer, LiveKit's next dispatch
    # waits for a process (observed: a second call waited for the first to end)
    env = {"NUM_IDLE_PROCESSES": str(concurrency)}
    async with running_stack(
        stack, workdir=workdir, response_delay=response_delay, delays=delays, worker_env=env
    ) as st:
        gate = asyncio.Semaphore(concurrency)
        done = 0

        async def one(i: int, script: CallScript) -> None:
            nonlocal done
            async with gate:
                rec = await run_call(st, script)
            got = turn_rows(
                i, rec, script, stack=stack, response_delay=response_delay, delays=delays
            )
            rows.extend(got)
            done += 1
            progress(f"latency: call {done}/{n_calls} done ({len(rows)} turns)")

        await asyncio.gather(*(one(i, s) for i, s in enumerate(scripts)))
    rows.sort(key=lambda r: (r.call, r.turn))
    summary = summarize_turns(rows)
    w = summary["worker_time"]
    return {
        "benchmark": "latency",
        "stack": stack,
        "calls": n_calls,
        "concurrency": min(concurrency, n_calls),
        "response_delay_s": response_delay,
        "fixed_delays_s": asdict(delays) if stack == "fixed" else None,
        "goal": {
            "worker_p50_ms": WORKER_P50_GOAL_MS,
            "worker_p95_ms": WORKER_P95_GOAL_MS,
            "met": (
                w["p50_ms"] is not None
                and w["p95_ms"] is not None
                and w["p50_ms"] <= WORKER_P50_GOAL_MS
                and w["p95_ms"] <= WORKER_P95_GOAL_MS
            ),
        },
        **summary,
        "bench_seconds": round(time.monotonic() - started, 1),
        "notes": LATENCY_NOTES,
        "turns": [asdict(r) for r in rows],
    }


LATENCY_NOTES = [
    "All instants are time.time() on one machine: caller, worker and providers share the clock.",
    "Caller end of speech: last 10 ms frame above -50 dBFS in the turn as played (the frame "
    "is captured up to 10 ms before its wall time).",
    "first_agent_audio_heard: first received 10 ms frame above the speech level after "
    "the turn (frame resolution 10 ms).",
    "vad_end_of_speech/stt_final/end_of_turn_decided come from LiveKit's user MetricsReport "
    "(stopped_speaking_at + transcription_delay / end_of_turn_delay); llm_first_token and "
    "tts_first_byte add llm_node_ttft (from LLM node start, at the STT final: preemptive "
    "generation) and "
    "tts_node_ttfb (from the text first sent to the TTS), so they are approximate instants.",
    "worker_time = e2e - response delay - STT wait beyond it - LLM first-token time - TTS "
    "first-byte time. With --stack fixed those are the configured delays, so worker_time "
    "holds everything else: LiveKit transport in and out (Opus, jitter buffers), VAD, "
    "endpointing beyond the response delay, plugin and HTTP/WebSocket overhead, the local "
    "servers' own processing, time-stretch, mixing, publishing. worker_time_own_clock "
    "leaves out the transport (LiveKit's e2e_latency instead of the caller's).",
    "With --stack offline, LLM and TTS times are LiveKit's measured ttft/ttfb, which include "
    "plugin overhead, so worker_time there is an estimate.",
]


# --- capacity --------------------------------------------------------------------------


def _worker_tree() -> list[Any]:
    import psutil

    me = psutil.Process()
    for child in me.children():
        try:
            cmd = child.cmdline()
        except psutil.Error:
            continue
        if cmd[-3:] == ["-m", "worker", "start"]:
            return [child, *child.children(recursive=True)]
    return []


class TreeSampler:
    """CPU and memory of the worker process tree (psutil), sampled every ``every`` s."""

    def __init__(self, every: float = 1.0) -> None:
        self.every = every
        self.cpu_percent: list[float] = []
        self.machine_cpu_percent: list[float] = []
        """All processes of the machine (100 = one core): callers, LiveKit, providers too."""
        self.rss_bytes: list[int] = []
        self.uss_bytes: list[int] = []
        """Memory only each process has (no shared pages): what a call really adds."""
        self.job_processes: list[int] = []
        self.loads: list[float] = []
        self._seen: dict[int, Any] = {}

    async def run(self, http_port: int, stop: asyncio.Event) -> None:
        import psutil

        psutil.cpu_percent(None)
        while not stop.is_set():
            # psutil reads /proc (smaps for USS): off the loop that plays the callers
            await asyncio.to_thread(self._sample)
            load = await asyncio.to_thread(_worker_load, http_port)
            if load is not None:
                self.loads.append(load)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every)

    def _sample(self) -> None:
        import psutil

        procs = _worker_tree()
        cpu, rss, uss = 0.0, 0, 0
        for p in procs:
            known = self._seen.setdefault(p.pid, p)
            try:
                cpu += known.cpu_percent(None)
                mem = known.memory_full_info()
            except psutil.Error:
                continue
            rss += mem.rss
            uss += mem.uss
        self.cpu_percent.append(cpu)
        self.machine_cpu_percent.append(psutil.cpu_percent(None) * (os.cpu_count() or 1))
        self.rss_bytes.append(rss)
        self.uss_bytes.append(uss)
        self.job_processes.append(max(0, len(procs) - 1))


def _worker_load(port: int) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/worker", timeout=1.0) as resp:
            return float(json.loads(resp.read()).get("worker_load", 0.0))
    except (OSError, ValueError):
        return None


def capacity_steps(max_calls: int) -> list[int]:
    steps = [1, 2, 4]
    n = 6
    while n <= max_calls:
        steps.append(n)
        n += 2 if n < 12 else 4
    return [s for s in steps if s <= max_calls] or [1]


async def _capacity_step(
    st: Stack, n: int, step_seconds: float, cores: int, min_turns: int
) -> dict[str, Any]:
    """One step of ``n`` concurrent calls. Limits: frame gap p99 over 40 ms, worker time
    p95 (own clock) over 50 ms, or under 90 % of turns answered."""
    # at least min_turns turns, so a step's p95 is not just its slowest turn
    per_call = max(1, round(step_seconds / 7.0), math.ceil(min_turns / n))
    scripts = caller_scripts(n, per_call)
    sampler = TreeSampler()
    stop = asyncio.Event()
    sampling = asyncio.create_task(sampler.run(st.worker.http_port, stop))
    started = time.monotonic()
    try:
        results = await asyncio.gather(
            *(run_call(st, s, answer_timeout=15.0) for s in scripts), return_exceptions=True
        )
    finally:
        stop.set()
        await sampling
    failures = [repr(r) for r in results if isinstance(r, BaseException)]
    rows: list[TurnRow] = []
    gaps: list[float] = []
    for i, (rec, script) in enumerate(zip(results, scripts, strict=True)):
        if isinstance(rec, BaseException):
            continue
        rows.extend(
            turn_rows(
                i, rec, script, stack=st.stack, response_delay=st.response_delay, delays=st.delays
            )
        )
        gaps.extend(frame_gaps(rec))
    worker = [r.worker_own_clock for r in rows if r.worker_own_clock is not None]
    # the first seconds hold process start-up; the busy part is what a slot costs
    cpu = sorted(sampler.cpu_percent)[len(sampler.cpu_percent) // 2 :] or [0.0]
    machine = sampler.machine_cpu_percent[1:] or [0.0]
    rss = max(sampler.rss_bytes, default=0)
    uss = max(sampler.uss_bytes, default=0)
    gap_p99 = percentile(gaps, 99)
    gap_max = max(gaps, default=None)
    w95 = percentile(worker, 95)
    answered = sum(r.e2e is not None for r in rows)
    ok = (
        not failures
        and gap_p99 is not None
        and gap_p99 * 1000 <= FRAME_GAP_LIMIT_MS
        and w95 is not None
        and w95 * 1000 <= CAPACITY_WORKER_P95_LIMIT_MS
        and answered >= 0.9 * len(rows)
    )
    return {
        "calls": n,
        "calls_per_core": round(n / cores, 2),
        "ok": ok,
        "seconds": round(time.monotonic() - started, 1),
        "turns": len(rows),
        "turns_answered": answered,
        "failed_calls": failures,
        "worker_time": _stats_ms(worker),
        "e2e": _stats_ms([r.e2e for r in rows if r.e2e is not None]),
        "frame_gap_ms": {
            "n": len(gaps),
            "p50": None if not gaps else round(float(np.median(gaps)) * 1000, 1),
            "p99": None if gap_p99 is None else round(gap_p99 * 1000, 1),
            "max": None if gap_max is None else round(gap_max * 1000, 1),
        },
        "worker_cpu_percent_busy_median": round(float(np.median(cpu)), 1),
        "worker_cpu_percent_mean": round(float(np.mean(sampler.cpu_percent or [0.0])), 1),
        "machine_cpu_percent_mean": round(float(np.mean(machine)), 1),
        "worker_cpu_percent_per_call": round(float(np.median(cpu)) / n, 1),
        "cpu_bound_calls_per_core": (
            round(100.0 * n / float(np.median(cpu)), 1) if float(np.median(cpu)) > 0 else None
        ),
        "worker_rss_mb_peak": round(rss / 2**20, 1),
        "worker_rss_mb_per_call": round(rss / 2**20 / n, 1),
        "worker_uss_mb_peak": round(uss / 2**20, 1),
        "job_processes_peak": max(sampler.job_processes, default=0),
        "reported_load_max": max(sampler.loads, default=None),
        "reported_load_samples": sorted(set(round(v, 3) for v in sampler.loads)),
    }


async def bench_capacity(
    *,
    max_calls: int = 16,
    step_seconds: float = 40.0,
    time_limit: float = 600.0,
    min_turns: int = MIN_TURNS_PER_STEP,
    response_delay: float = 0.4,
    delays: FixedDelays | None = None,
    workdir: Path,
) -> dict[str, Any]:
    """Concurrent calls against one worker process group, stepped up until audio frame
    gaps or worker time break the limits (or the time limit is reached)."""
    if max_calls < 1 or step_seconds <= 0 or time_limit <= 0 or min_turns < 1:
        raise ValueError("--max, --step-seconds, --time-limit and --min-turns must be positive")
    delays = delays or FixedDelays()
    cores = os.cpu_count() or 1
    max_slots = max(20, math.ceil(max_calls / 0.75) + 1)
    env = {
        "NUM_IDLE_PROCESSES": str(min(max_calls, 4)),
        "MAX_CONCURRENT_CALLS": str(max_slots),
    }
    steps: list[dict[str, Any]] = []
    deadline = time.monotonic() + time_limit
    stopped_by = "max reached"
    async with running_stack(
        "fixed", workdir=workdir, response_delay=response_delay, delays=delays, worker_env=env
    ) as st:
        idle_rss = sum(p.memory_info().rss for p in _worker_tree())
        for n in capacity_steps(max_calls):
            if time.monotonic() + step_seconds + 20 > deadline:
                stopped_by = "time limit"
                break
            progress(f"capacity: {n} concurrent call(s)")
            step = await _capacity_step(st, n, step_seconds, cores, min_turns)
            steps.append(step)
            progress(
                f"capacity: {n} calls ok={step['ok']} "
                f"gap_max={step['frame_gap_ms']['max']} ms "
                f"worker_p95={step['worker_time']['p95_ms']} ms "
                f"cpu={step['worker_cpu_percent_busy_median']}%"
            )
            if not step["ok"]:
                stopped_by = "quality limit"
                break
            await asyncio.sleep(2.0)  # let the finished jobs' processes exit
    good = [s for s in steps if s["ok"]]
    best = max((s["calls"] for s in good), default=0)
    marginal = per_added_call(steps, "worker_cpu_percent_mean")
    return {
        "benchmark": "capacity",
        "cores": cores,
        "stack": "fixed",
        "fixed_delays_s": asdict(delays),
        "response_delay_s": response_delay,
        "limits": {
            "frame_gap_p99_ms": FRAME_GAP_LIMIT_MS,
            "worker_time_p95_ms": CAPACITY_WORKER_P95_LIMIT_MS,
            "turns_answered_min_share": 0.9,
        },
        "max_concurrent_calls_setting": max_slots,
        "stopped_by": stopped_by,
        "max_calls_within_limits": best,
        "calls_per_core": round(best / cores, 2),
        "goal_calls_per_core": CALLS_PER_CORE_GOAL,
        "reference_calls_per_core": REFERENCE_CALLS_PER_CORE,
        "worker_idle_rss_mb": round(idle_rss / 2**20, 1),
        "worker_cpu_percent_per_added_call": marginal,
        "worker_uss_mb_per_added_call": per_added_call(steps, "worker_uss_mb_peak"),
        "cpu_bound_calls_per_core_marginal": (
            round(100.0 / marginal, 1) if marginal and marginal > 0 else None
        ),
        "steps": steps,
        "notes": CAPACITY_NOTES,
    }


def per_added_call(steps: Sequence[Mapping[str, Any]], key: str) -> float | None:
    """Least-squares slope of a step figure (``key``) over the number of calls: what one
    more call costs, without the fixed cost of the worker and its idle processes."""
    pts = [(s["calls"], s[key]) for s in steps]
    if len({n for n, _ in pts}) < 2:
        return None
    slope = float(np.polyfit([n for n, _ in pts], [c for _, c in pts], 1)[0])
    return round(slope, 1)


CAPACITY_NOTES = [
    "One worker process group (python -m worker start; one process per job); the callers, "
    "the LiveKit server and the provider servers share the same cores, so figures are a "
    "floor for the worker alone.",
    "worker_time here is the worker's own clock (LiveKit e2e_latency minus the provider "
    "share, see bench latency); the limit is its p95 over 50 ms, each call's first turn "
    "(connections) included.",
    "frame gaps: inter-arrival of the agent's audio frames at the caller (rtc.AudioStream) "
    "while the agent speaks; the receiver's jitter buffer smooths short stalls.",
    "CPU: psutil over the worker process tree, median of the busier half of 1 s samples "
    "and the mean; machine_cpu_percent_mean is every process (the callers, LiveKit and the "
    "provider servers too: machine minus worker is the harness). "
    "worker_cpu_percent_per_added_call is the slope of the worker's mean CPU over the "
    "steps (what one more call costs, without the worker's fixed cost); "
    "memory: peak summed RSS (shared pages counted per process, so an upper bound) and "
    "USS (pages only that process has; the slope of USS over calls is a call's own memory).",
    "reported_load: worker_load from the worker's HTTP /worker endpoint (slots in use / "
    "MAX_CONCURRENT_CALLS).",
]


# --- wrappers --------------------------------------------------------------------------


def bench_audio(*, quick: bool = False) -> dict[str, Any]:
    """VAD + endpointing, time-stretch and mixing cost per 10 ms frame against the goals
    and the reference implementations run in the same process."""
    from pipelines.audio import resample
    from worker.dev.bench.audio import bench_stretch_mix
    from worker.dev.bench.vad import bench_vad

    fixtures = sorted(AUDIO_FIXTURES.glob("*.wav"))
    if quick:
        fixtures = fixtures[:1]
    vad = bench_vad(fixtures)
    source = read_wav(AUDIO_FIXTURES / "one_turn.wav")
    speech = Audio(resample(source.samples, source.sample_rate, 24000), 24000)
    if quick:
        speech = Audio(speech.samples[: 24000 * 3], 24000)
    stretch = bench_stretch_mix(speech, repeats=1 if quick else 3)
    vad_ms = vad["summary"]["webrtcvad_ms_per_10ms_frame_max"]
    silero_ms = vad["summary"].get("silero_ms_per_10ms_frame_max")
    rows = stretch["stretch"]
    stretch_rtf = min(r["ours"]["realtime_factor"] for r in rows.values())
    speedups = {rate: r["speedup_vs_audiotsm"] for rate, r in rows.items()}
    mix_ms = stretch["mix"]["ms_per_frame"]
    goals = {
        "vad_endpointing_ms_per_10ms_frame": {
            "value": vad_ms,
            "goal": "< 0.05",
            "met": vad_ms < 0.05,
            "vs_silero": None if not silero_ms else round(silero_ms / vad_ms, 1),
        },
        "stretch_realtime_factor_min": {
            "value": round(stretch_rtf, 1),
            "goal": ">= 100 and faster than audiotsm",
            "met": stretch_rtf >= 100 and min(speedups.values()) > 1.0,
            "speedup_vs_audiotsm": {k: round(v, 2) for k, v in speedups.items()},
        },
        "mix_ms_per_10ms_frame": {"value": mix_ms, "goal": "< 0.02", "met": mix_ms < 0.02},
    }
    return {
        "benchmark": "audio",
        "quick": quick,
        "goals": goals,
        "vad": vad,
        "stretch_mix": stretch,
    }


def bench_amd_report(manifest: Path | None, stt: str) -> dict[str, Any]:
    from worker.dev.bench.amd import DEFAULT_MANIFEST, bench_amd

    result = bench_amd(manifest or DEFAULT_MANIFEST, stt=stt)  # type: ignore[arg-type]
    return {"benchmark": "amd", **result}


def bench_failover_report(repeats: int) -> dict[str, Any]:
    from worker.dev.bench.failover import bench_failover

    return {"benchmark": "failover", **bench_failover(repeats)}


# --- CLI -------------------------------------------------------------------------------


def _emit_summary(report: Mapping[str, Any], json_path: Path, png: Path | None) -> None:
    summary = {k: v for k, v in report.items() if k not in ("turns", "steps_detail")}
    summary["json"] = str(json_path)
    summary["png"] = str(png) if png else None
    json.dump(summary, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def _finish(name: str, report: dict[str, Any], out: Path) -> int:
    from worker.dev.bench import plot as bench_plot

    json_path = write_report(out, name, report)
    png: Path | None = out / f"{name}.png"
    assert png is not None
    try:
        bench_plot.plot(name, report, png)
    except ImportError as exc:
        progress(f"no chart: {exc}")
        png = None
    _emit_summary(report, json_path, png)
    return 0


def _delays(args: argparse.Namespace) -> FixedDelays:
    values = (args.stt_delay, args.llm_delay, args.tts_delay)
    if any(v < 0 for v in values) or args.stt_endpointing_ms < 10:
        raise ValueError("delays must be >= 0 and --stt-endpointing-ms >= 10")
    return FixedDelays(
        stt=args.stt_delay,
        stt_endpointing_ms=args.stt_endpointing_ms,
        llm=args.llm_delay,
        tts=args.tts_delay,
    )


async def _latency(args: argparse.Namespace) -> int:
    out = Path(args.out or "results/latency")
    report = await bench_latency(
        stack=args.stack,
        turns=args.turns,
        concurrency=args.concurrency,
        response_delay=args.response_delay,
        delays=_delays(args),
        workdir=out / "work",
    )
    return _finish("latency", report, out)


async def _capacity(args: argparse.Namespace) -> int:
    out = Path(args.out or "results/capacity")
    report = await bench_capacity(
        max_calls=args.max,
        step_seconds=args.step_seconds,
        time_limit=args.time_limit,
        min_turns=args.min_turns,
        response_delay=args.response_delay,
        delays=_delays(args),
        workdir=out / "work",
    )
    return _finish("capacity", report, out)


def _audio(args: argparse.Namespace) -> int:
    return _finish("audio", bench_audio(quick=args.quick), Path(args.out or "results/audio"))


def _amd(args: argparse.Namespace) -> int:
    manifest = Path(args.manifest) if args.manifest else None
    if manifest is not None and not manifest.is_file():
        raise ValueError(f"{manifest}: no such manifest")
    return _finish("amd", bench_amd_report(manifest, args.stt), Path(args.out or "results/amd"))


def _failover(args: argparse.Namespace) -> int:
    if args.repeats < 1:
        raise ValueError("--repeats must be at least 1")
    report = bench_failover_report(args.repeats)
    return _finish("failover", report, Path(args.out or "results/failover"))


def _add_delay_args(p: argparse.ArgumentParser) -> None:
    d = FixedDelays()
    p.add_argument(
        "--response-delay",
        type=float,
        default=0.4,
        help="the agent's response_delay_seconds (default 0.4)",
    )
    g = p.add_argument_group("fixed provider delays (--stack fixed)")
    g.add_argument("--stt-delay", type=float, default=d.stt, metavar="S")
    g.add_argument("--stt-endpointing-ms", type=int, default=d.stt_endpointing_ms, metavar="MS")
    g.add_argument("--llm-delay", type=float, default=d.llm, metavar="S")
    g.add_argument("--tts-delay", type=float, default=d.tts, metavar="S")


def add_bench_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Registers ``bench`` and its sub-benchmarks on ``voice-worker``'s subparsers. Each
    sub-benchmark sets ``handler`` (sync or async, returns an exit code)."""
    bench = subparsers.add_parser(
        "bench",
        help="benchmarks: figures as JSON + PNG",
        description="Run a benchmark, write DIR/NAME.json and DIR/NAME.png (--out, default "
        "results/NAME) and print the summary as JSON; progress goes to stderr.",
    )
    sub = bench.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")

    p = sub.add_parser(
        "latency",
        help="per-stage latency and worker time on real calls",
        description="Replay caller fixtures through a local LiveKit server (2 calls at a "
        "time) and time each turn: caller end of speech -> end of turn -> STT final -> LLM "
        "first token -> TTS first byte -> first agent audio at the caller; split provider "
        "time from worker time.",
    )
    p.add_argument("--turns", type=int, default=20, help="caller turns to time (default 20)")
    p.add_argument("--stack", choices=["fixed", "offline"], default="fixed")
    p.add_argument("--concurrency", type=int, default=2, help="calls at a time (default 2)")
    p.add_argument("--out", help="output directory (default results/latency)")
    _add_delay_args(p)
    p.set_defaults(handler=_latency)

    p = sub.add_parser(
        "capacity",
        help="concurrent calls per worker until audio quality breaks",
        description="Step up concurrent calls (1, 2, 4, 6, ...) against one worker process "
        f"group until agent audio frame gaps exceed {FRAME_GAP_LIMIT_MS:.0f} ms or worker "
        f"time p95 exceeds {CAPACITY_WORKER_P95_LIMIT_MS:.0f} ms; providers answer after "
        "fixed delays from another process.",
    )
    p.add_argument("--max", type=int, default=16, help="most concurrent calls (default 16)")
    p.add_argument(
        "--step-seconds", type=float, default=40.0, help="seconds of calls per step (default 40)"
    )
    p.add_argument("--time-limit", type=float, default=600.0, help="total seconds (default 600)")
    p.add_argument(
        "--min-turns",
        type=int,
        default=MIN_TURNS_PER_STEP,
        help=f"fewest caller turns per step, for a stable p95 (default {MIN_TURNS_PER_STEP})",
    )
    p.add_argument("--out", help="output directory (default results/capacity)")
    _add_delay_args(p)
    p.set_defaults(handler=_capacity)

    p = sub.add_parser(
        "audio",
        help="VAD, time-stretch and mixing cost per frame",
        description="webrtcvad + endpointing vs silero, time-stretch vs audiotsm and sox, "
        "noise-bed mixing: per-frame cost against the goals.",
    )
    p.add_argument("--quick", action="store_true", help="one fixture, 3 s of speech")
    p.add_argument("--out", help="output directory (default results/audio)")
    p.set_defaults(handler=_audio)

    p = sub.add_parser(
        "amd",
        help="answering-machine detection accuracy and decision times",
        description="Accuracy per category, confusion matrix and decision times over the "
        "AMD fixtures.",
    )
    p.add_argument("--manifest", help="AMD manifest (default fixtures/amd/manifest.json)")
    p.add_argument(
        "--stt",
        # the same sources as worker.dev.bench.amd.STT_SOURCES, listed here so the command
        # line does not import the recognisers
        choices=["moonshine+phrases", "moonshine", "phrases", "pocketsphinx", "reference", "none"],
        default="moonshine+phrases",
        help="transcript source (default moonshine+phrases: both offline recognisers)",
    )
    p.add_argument("--out", help="output directory (default results/amd)")
    p.set_defaults(handler=_amd)

    p = sub.add_parser(
        "failover",
        help="provider failover times",
        description="worker.dev.bench.failover: time to fail over per fault kind.",
    )
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", help="output directory (default results/failover)")
    p.set_defaults(handler=_failover)
    return bench


def _providers_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.dev.bench.calls providers")
    parser.add_argument("--stt-delay", type=float, default=0.0)
    parser.add_argument("--stt-endpointing-ms", type=int, default=200)
    parser.add_argument("--llm-delay", type=float, default=0.2)
    parser.add_argument("--tts-delay", type=float, default=0.15)
    for vendor in ("deepgram", "openai", "elevenlabs"):
        parser.add_argument(f"--{vendor}-port", type=int, default=0)
    args = parser.parse_args(argv)
    delays = FixedDelays(args.stt_delay, args.stt_endpointing_ms, args.llm_delay, args.tts_delay)
    ports = {
        "deepgram": args.deepgram_port,
        "openai": args.openai_port,
        "elevenlabs": args.elevenlabs_port,
    }
    asyncio.run(serve_fixed_providers(delays, ports))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m worker.dev.bench.calls BENCHMARK ...``: the same as ``voice-worker bench``."""
    from worker import cli

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["providers"]:
        return _providers_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m worker.dev.bench.calls")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *argv])
    try:
        result = args.handler(args)
        code = asyncio.run(result) if asyncio.iscoroutine(result) else result
        return int(code or 0)
    except cli.BAD_INPUT as exc:
        print(f"error: {exc}", file=sys.stderr)
        return cli.EXIT_BAD_INPUT
    except (VoiceWorkerError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return cli.EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
