"""``bench latency``: per-stage latency and the worker's own time on real calls.

Caller fixtures are replayed turn by turn through a local LiveKit room (``stack``); each
caller turn is timed from the caller's end of speech to every stage LiveKit's metrics
report (VAD end of speech, STT final, end of turn, LLM first token, TTS first byte, agent
speaking) and to the first agent audio heard, and split into the providers' share (with
``--stack fixed``: the configured delays) and the worker's.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.dev.bench.common import progress, stats_ms
from worker.dev.bench.stack import CallScript, FixedDelays, caller_scripts, run_call, running_stack
from worker.dev.services import S3Server

if TYPE_CHECKING:
    from worker.dev.caller import CallRecording

WORKER_P50_GOAL_MS = 10.0
WORKER_P95_GOAL_MS = 25.0


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
    rec: CallRecording,
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
    stages = {s: stats_ms([r.stages[s] for r in rows if s in r.stages]) for s in STAGES}
    return {
        "turns_measured": len(rows),
        "turns_with_agent_audio": sum(r.e2e is not None for r in rows),
        "provider_bound_turns": sum(r.stt_gated for r in rows),
        "stages_after_caller_end_of_speech": stages,
        "e2e": stats_ms([r.e2e for r in rows if r.e2e is not None]),
        "provider_and_response_delay": stats_ms(
            [r.provider for r in rows if r.provider is not None]
        ),
        "worker_time": stats_ms([r.worker for r in rows if r.worker is not None]),
        "worker_time_own_clock": stats_ms(
            [r.worker_own_clock for r in rows if r.worker_own_clock is not None]
        ),
        "transport_in": stats_ms(
            [r.stages["vad_end_of_speech"] for r in rows if "vad_end_of_speech" in r.stages]
        ),
        "transport_out": stats_ms(
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
    record: bool = False,
    workdir: Path,
) -> dict[str, Any]:
    """Replays caller fixtures through a real local LiveKit server and times each turn;
    ``record`` records every call into a local S3 bucket (versitygw), as
    ``save_audio_recording`` would."""
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
    async with contextlib.AsyncExitStack() as es:
        if record:
            bucket = await es.enter_async_context(S3Server(workdir / "bucket"))
            env.update(bucket.settings_env())
        st = await es.enter_async_context(
            running_stack(
                stack, workdir=workdir, response_delay=response_delay, delays=delays, worker_env=env
            )
        )
        st.agent["save_audio_recording"] = record
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
        "recorded": record,
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
