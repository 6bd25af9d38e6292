"""``bench latency --sip``: the caller's end of speech to the first agent audio, measured at
a baresip phone on a real outbound call through livekit-sip (G.711 both ways, RTP, the SIP
participant's Opus track in the room).

The phone cannot wait for the agent as the room caller does: each call's WAV is the bench's
caller turns laid out with ``LEAD`` seconds for the greeting and ``GAP`` seconds after each
turn for the reply, and a turn's figure is the first agent speech the phone heard after its
end and before the next turn. The providers are the room bench's (``--stack fixed``: local
servers answering after fixed delays; ``offline``), so the difference to ``bench latency`` is
the phone leg.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.audio import Audio, resample, write_wav
from worker.dev.bench.common import progress, stats_ms
from worker.dev.bench.stack import CallScript, FixedDelays, caller_scripts, running_stack
from worker.dev.phone_replay import heard_recording, phone_leg, phone_metadata, run_phone_call
from worker.dev.services.phone import PHONE_RATE

LEAD = 5.0
"""Seconds of silence before the first turn: the agent's greeting."""
GAP = 4.0
"""Seconds of silence after each turn: the reply."""
TURNS_PER_CALL = 5


def phone_script(script: CallScript) -> tuple[Audio, list[tuple[float, float]]]:
    """The caller's WAV for the phone (8 kHz) and, per turn, its end of speech and the next
    turn's start on the WAV's clock."""
    audio = script.audio
    samples = resample(audio.samples, audio.sample_rate, PHONE_RATE)
    parts = [np.zeros(int(LEAD * PHONE_RATE), dtype=np.float32)]
    at = LEAD
    marks: list[tuple[float, float]] = []  # per turn: its start and its end of speech
    for (start, end), speech_end in zip(script.turns, script.speech_ends, strict=True):
        turn = samples[int(start * PHONE_RATE) : int(end * PHONE_RATE)]
        parts += [turn, np.zeros(int(GAP * PHONE_RATE), dtype=np.float32)]
        marks.append((at, at + speech_end))
        at += len(turn) / PHONE_RATE + GAP
    windows = [
        (marks[i][1], marks[i + 1][0] if i + 1 < len(marks) else at) for i in range(len(marks))
    ]
    return Audio(np.concatenate(parts).astype(np.float32), PHONE_RATE), windows


async def bench_latency_sip(
    *,
    stack: str = "fixed",
    turns: int = 10,
    response_delay: float = 0.4,
    delays: FixedDelays | None = None,
    workdir: Path,
) -> dict[str, Any]:
    if stack not in ("fixed", "offline"):
        raise ValueError(f"--stack: expected fixed or offline, got {stack!r}")
    if turns < 1:
        raise ValueError("--turns must be at least 1")
    delays = delays or FixedDelays()
    per_call = min(TURNS_PER_CALL, turns)
    n_calls = math.ceil(turns / per_call)
    scripts = caller_scripts(n_calls, per_call)
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as es:
        progress("starting Redis, LiveKit and livekit-sip")
        livekit, sip = await phone_leg(es)
        st = await es.enter_async_context(
            running_stack(
                stack,
                workdir=workdir,
                response_delay=response_delay,
                delays=delays,
                livekit=livekit,
            )
        )
        for i, script in enumerate(scripts):
            audio, windows = phone_script(script)
            wav = workdir / f"phone-{i}.wav"
            write_wav(wav, audio)
            call = await run_phone_call(
                livekit,
                sip,
                st.worker.agent_name,
                wav,
                phone_metadata({"agent": st.agent}, "outbound"),
                direction="outbound",
                tail_seconds=1.0,
            )
            onsets = heard_recording(call.heard).speech_onsets() if call.heard else []
            if call.heard is not None:
                write_wav(workdir / f"heard-{i}.wav", call.heard)
            for k, (end, next_start) in enumerate(windows):
                heard = next((t for t in onsets if end < t < next_start), None)
                rows.append(
                    {
                        "call": i,
                        "turn": k + 1,
                        "fixture": script.fixture,
                        "caller_end_of_speech": round(end, 3),
                        "first_agent_audio_heard": heard,
                        "e2e": None if heard is None else round(heard - end, 3),
                    }
                )
            progress(f"latency --sip: call {i + 1}/{n_calls} done ({len(rows)} turns)")
    e2e = [r["e2e"] for r in rows if r["e2e"] is not None]
    return {
        "transport": "outbound call, livekit-sip v1.0.0 to baresip, G.711 8 kHz",
        "stack": stack,
        "calls": n_calls,
        "response_delay_s": response_delay,
        "fixed_delays_s": asdict(delays) if stack == "fixed" else None,
        "turns_measured": len(rows),
        "turns_with_agent_audio": len(e2e),
        "e2e_at_phone": stats_ms(e2e),
        "bench_seconds": round(time.monotonic() - started, 1),
        "notes": [
            "e2e_at_phone: the caller's last 10 ms frame above -50 dBFS in the turn (on the "
            "phone's WAV, t=0 at the answer) to the first 10 ms frame above the speech level "
            "the phone recorded after it (baresip's decoded audio, same clock).",
            f"Each call: {LEAD:.0f} s for the greeting, then {per_call} turns, each followed "
            f"by {GAP:.0f} s of silence for the reply; a reply later than that is not counted.",
        ],
        "turns": rows,
    }
