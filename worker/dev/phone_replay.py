"""``voice-worker replay --phone``: one whole call over the SIP leg, a real baresip phone at
the far end of livekit-sip (G.711, 8 kHz).

Outbound, the platform side places the call (``place_outbound_call``) and the phone answers;
inbound, the phone dials a number routed to the agent (``route_inbound``). The phone plays
the WAV from the answer, then stays on the line in silence until the call is hung up or
``tail_seconds`` pass. Writes ``report.json`` (the post-call report as the worker delivered
it), ``phone_heard.wav`` (what the phone heard, t=0 at the answer), ``transcript.json`` and
``metrics.json`` on that clock, and ``sip.log`` (livekit-sip's log of the call).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pipelines.audio import Audio, detect_segments, read_wav, resample
from worker.dev.caller import AGENT_RATE, FRAME_MS, CallRecording, turn_metrics
from worker.dev.phone_call import CALLER_ID, PhoneLeg, place_outbound_call, route_inbound
from worker.dev.replay import (
    call_metadata,
    latest_report,
    local_stack,
    needs_llm,
    recordings_env,
    resolve_first,
)
from worker.dev.services import LiveKitEndpoint
from worker.dev.services.phone import SIPPhone
from worker.dev.services.sip import LiveKitSIP
from worker.settings import Settings

Direction = Literal["outbound", "inbound"]
PHONE_NUMBER = "+15550100777"
"""The phone's own number: the callee of outbound calls, the caller of inbound ones."""
ANSWER_TIMEOUT = 30.0
"""Seconds from placing the call to the phone's answer before the replay gives up."""
HANGUP_MARGIN = 15.0
"""Seconds past the phone's WAV and tail to wait for the call to close."""


def heard_recording(heard: Audio) -> CallRecording:
    """What the phone heard as a ``CallRecording`` on the answer's clock (10 ms frames), so
    the room caller's turn measures apply to it unchanged."""
    samples = resample(heard.samples, heard.sample_rate, AGENT_RATE)
    n = AGENT_RATE * FRAME_MS // 1000
    frames = [((i + n) / AGENT_RATE, samples[i : i + n]) for i in range(0, len(samples) - n + 1, n)]
    return CallRecording(t0=0.0, agent_frames=frames)


def transcript_since(report: Mapping[str, Any], t0: float) -> list[dict[str, Any]]:
    """The report's transcript as replay writes it: caller/agent, seconds since ``t0``."""
    rows = []
    for entry in report.get("transcript", []):
        if entry.get("role") not in ("user", "assistant"):
            continue
        at = datetime.fromisoformat(entry["started_at"]).timestamp()
        rows.append(
            {
                "role": "caller" if entry["role"] == "user" else "agent",
                "text": entry["text"],
                "at": round(at - t0, 3),
            }
        )
    return sorted(rows, key=lambda e: e["at"])


async def replay_phone_call(
    agent: str,
    audio_path: Path,
    out: Path,
    *,
    direction: Direction = "outbound",
    dispatch: Mapping[str, Any] | None = None,
    tail_seconds: float = 12.0,
    livekit: LiveKitEndpoint | None = None,
    sip: LiveKitSIP | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Runs one phone call and writes its artifacts; returns the summary. ``livekit`` and
    ``sip`` are a running phone leg to use (else one is started for the call)."""
    settings = Settings()
    caller = read_wav(audio_path)
    out.mkdir(parents=True, exist_ok=True)
    metadata = {**call_metadata(agent, dispatch), "direction": direction}
    if direction == "outbound":
        metadata.setdefault("to", PHONE_NUMBER)
        metadata.setdefault("from", CALLER_ID)
    plan = await resolve_first(metadata, settings)
    env = dict(extra_env or {})
    env.setdefault("REPORT_DIR", str(out / "reports"))
    async with contextlib.AsyncExitStack() as stack:
        await recordings_env(stack, plan, out, env)
        if livekit is None or sip is None:
            leg = PhoneLeg()
            await asyncio.to_thread(leg.__enter__)
            stack.push_async_callback(asyncio.to_thread, leg.__exit__, None, None, None)
            livekit, sip = leg.endpoint, leg.sip
            assert sip is not None
        log_start = len(sip.log_text())
        _, worker = await stack.enter_async_context(
            local_stack(
                settings,
                livekit_url=None,
                need_llm=needs_llm(plan),
                workdir=out,
                extra_env=env,
                endpoint=livekit,
            )
        )
        phone = SIPPhone(user=PHONE_NUMBER, audio=audio_path, hold_seconds=tail_seconds)
        await phone.astart()
        stack.push_async_callback(phone.astop)
        placed = time.time()
        if direction == "outbound":
            call = await place_outbound_call(
                livekit,
                agent_name=worker.agent_name,
                phone_address=phone.address,
                to_user=phone.user,
                metadata=metadata,
                ringing_timeout=ANSWER_TIMEOUT,
            )
            room = call.room_name
        else:
            route = await route_inbound(
                livekit, agent_name=worker.agent_name, sip_address=sip.address, metadata=metadata
            )
            await asyncio.to_thread(phone.dial, route.uri)
            room = None
        answer = await asyncio.to_thread(phone.wait_for, "CALL_ESTABLISHED", ANSWER_TIMEOUT)
        answered = time.time() - (time.monotonic() - answer.at)
        limit = phone.speech_seconds + tail_seconds + HANGUP_MARGIN
        closed = await asyncio.to_thread(phone.wait_for, "CALL_CLOSED", limit)
        heard_path = phone.heard_wav()
        if heard_path is not None:
            shutil.copyfile(heard_path, out / "phone_heard.wav")
        # the phone's own view of the call, then livekit-sip's (its log since the call began)
        sip_log = sip.log_text()[log_start:]
        events = "\n".join(f"{e.at - answer.at:8.3f} {e.type} {e.param}" for e in phone.events)
        (out / "sip.log").write_text(
            f"# phone ({phone.uri}) events, seconds since the answer\n{events}\n"
            f"# livekit-sip\n{sip_log}"
        )
    report = latest_report(Path(env["REPORT_DIR"]))
    if report is not None:
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    transcript = transcript_since(report or {}, answered)
    (out / "transcript.json").write_text(json.dumps(transcript, indent=2) + "\n")
    heard = read_wav(out / "phone_heard.wav") if heard_path is not None else None
    turns = turn_metrics(heard_recording(heard), detect_segments(caller)) if heard else []
    metrics = {
        "answer_seconds": round(answered - placed, 3),
        "call_seconds": round(closed.at - answer.at, 3),
        "turns": turns,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return {
        "out": str(out),
        "direction": direction,
        "room": (report or {}).get("room_name", room),
        "end_reason": (report or {}).get("end_reason"),
        "heard_seconds": round(heard.duration, 2) if heard else 0.0,
        "transcript": transcript,
        **metrics,
    }


def summary_text(result: Mapping[str, Any]) -> str:
    lines = [
        f"{result['direction']} phone call {result['room']} in {result['out']}: answered "
        f"after {result['answer_seconds']:.2f}s, {result['call_seconds']:.2f}s on the line, "
        f"ended {result['end_reason'] or 'without a report'}"
    ]
    for e in result["transcript"]:
        lines.append(f"  [{e['at']:6.2f}s] {e['role']:>6}: {e['text']}")
    for t in result["turns"]:
        lat = t.get("response_latency")
        lines.append(
            f"  turn {t['turn']}: response latency at the phone "
            + (f"{lat:.2f}s" if lat is not None else "n/a (no agent audio heard)")
        )
    return "\n".join(lines)
