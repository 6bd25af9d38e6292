"""``voice-worker replay --phone``: one whole call over the SIP leg, a real baresip phone at
the far end of livekit-sip (G.711, 8 kHz).

Outbound, the platform side places the call (``place_outbound_call``) and the phone answers
once the agent is in the room (a callee picks up after a ring or two; answering at once, it
would speak before anyone listens); inbound, the phone dials a number routed to the agent
(``route_inbound``) and livekit-sip answers. The phone plays
the WAV from the answer, then stays on the line in silence until the call is hung up or
``tail_seconds`` pass. Writes ``report.json`` (the post-call report as the worker delivered
it), ``phone_heard.wav`` (what the phone heard, t=0 at the answer), ``transcript.json`` and
``metrics.json`` on that clock, and ``sip.log`` (livekit-sip's log of the call).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from livekit import api

from pipelines.audio import Audio, detect_segments, read_wav, resample, write_wav
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
from worker.dev.services.phone import Answer, SIPPhone
from worker.dev.services.process import ServiceError
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


def answer_aligned(heard: Audio, sent: Audio | None) -> Audio:
    """``heard`` with t=0 at the answer. The phone records each direction from its first
    frame: what it sent from the answer (its WAV starts there), what it heard only from the
    first audio decoded, a few hundred ms later and by a varying amount. Both recordings end
    at the hangup, so the difference in length is the heard side's late start."""
    if sent is None or sent.duration <= heard.duration:
        return heard
    lead = np.zeros(round((sent.duration - heard.duration) * heard.sample_rate), np.float32)
    return Audio(np.concatenate([lead, heard.samples]), heard.sample_rate)


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


@dataclass
class PhoneCallResult:
    """One phone call as the phone had it; times on the phone's clock (0 at the answer)."""

    placed_at: float
    """``time.time()`` when the call was placed (dial or ``CreateSIPParticipant``)."""
    answered_at: float
    """``time.time()`` of the answer."""
    call_seconds: float
    """From the answer to the phone's hangup (or the other side's)."""
    heard: Audio | None
    """What the phone heard (8 kHz) from the answer on, None if it heard nothing."""
    sip_log: str
    """The phone's events, then livekit-sip's log lines since the call was placed."""
    room: str | None = None
    """The room of an outbound call (an inbound call's is named by the dispatch rule)."""


async def run_phone_call(
    livekit: LiveKitEndpoint,
    sip: LiveKitSIP,
    agent_name: str,
    audio_path: Path,
    metadata: Mapping[str, Any],
    *,
    direction: Direction,
    tail_seconds: float,
) -> PhoneCallResult:
    """One call between a fresh baresip phone playing ``audio_path`` and the worker
    registered as ``agent_name`` (``metadata`` is its dispatch), until the phone hangs up
    (its WAV and ``tail_seconds`` of silence played) or is hung up on."""
    log_start = len(sip.log_text())
    # outbound, the phone rings until the agent is in the room, as a callee picks up after
    # a ring or two: answering at once, it would speak before anyone listens (the job takes
    # seconds to join on a busy machine)
    answer: Answer = "ring" if direction == "outbound" else "auto"
    phone = SIPPhone(user=PHONE_NUMBER, answer=answer, audio=audio_path, hold_seconds=tail_seconds)
    await phone.astart()
    try:
        placed = time.time()
        room = None
        if direction == "outbound":
            call = await place_outbound_call(
                livekit,
                agent_name=agent_name,
                phone_address=phone.address,
                to_user=phone.user,
                metadata=metadata,
                ringing_timeout=ANSWER_TIMEOUT,
            )
            room = call.room_name
            await asyncio.to_thread(phone.wait_for, "CALL_INCOMING", ANSWER_TIMEOUT)
            await agent_in_room(livekit, room, ANSWER_TIMEOUT)
            await asyncio.to_thread(phone.command, "accept")
        else:
            route = await route_inbound(
                livekit, agent_name=agent_name, sip_address=sip.address, metadata=metadata
            )
            await asyncio.to_thread(phone.dial, route.uri)
        established = await asyncio.to_thread(phone.wait_for, "CALL_ESTABLISHED", ANSWER_TIMEOUT)
        answered = time.time() - (time.monotonic() - established.at)
        limit = phone.speech_seconds + tail_seconds + HANGUP_MARGIN
        closed = await asyncio.to_thread(phone.wait_for, "CALL_CLOSED", limit)
        heard_path = phone.heard_wav()
        sent = sorted(phone.recordings_dir.glob("*-enc.wav"))
        heard = None
        if heard_path is not None:
            heard = answer_aligned(read_wav(heard_path), read_wav(sent[-1]) if sent else None)
        events = "\n".join(f"{e.at - established.at:8.3f} {e.type} {e.param}" for e in phone.events)
        sip_log = (
            f"# phone ({phone.uri}) events, seconds since the answer\n{events}\n"
            f"# livekit-sip\n{sip.log_text()[log_start:]}"
        )
    finally:
        await phone.astop()
    return PhoneCallResult(
        placed_at=placed,
        answered_at=answered,
        call_seconds=round(closed.at - established.at, 3),
        heard=heard,
        sip_log=sip_log,
        room=room,
    )


async def agent_in_room(livekit: LiveKitEndpoint, room: str, timeout: float) -> None:
    """Waits until an agent participant has joined ``room``."""
    lkapi = livekit.client()
    try:
        deadline = time.monotonic() + timeout
        while True:
            listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room))
            if any(p.kind == api.ParticipantInfo.Kind.AGENT for p in listed.participants):
                return
            if time.monotonic() > deadline:
                raise ServiceError(f"no agent joined {room} within {timeout:.0f} s")
            await asyncio.sleep(0.2)
    finally:
        await lkapi.aclose()


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
    metadata = phone_metadata(call_metadata(agent, dispatch), direction)
    plan = await resolve_first(metadata, settings)
    env = dict(extra_env or {})
    env.setdefault("REPORT_DIR", str(out / "reports"))
    async with contextlib.AsyncExitStack() as stack:
        await recordings_env(stack, plan, out, env)
        if livekit is None or sip is None:
            livekit, sip = await phone_leg(stack)
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
        call = await run_phone_call(
            livekit,
            sip,
            worker.agent_name,
            audio_path,
            metadata,
            direction=direction,
            tail_seconds=tail_seconds,
        )
    (out / "sip.log").write_text(call.sip_log)
    if call.heard is not None:
        write_wav(out / "phone_heard.wav", call.heard)
    report = latest_report(Path(env["REPORT_DIR"]))
    if report is not None:
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    transcript = transcript_since(report or {}, call.answered_at)
    (out / "transcript.json").write_text(json.dumps(transcript, indent=2) + "\n")
    heard = call.heard
    turns = turn_metrics(heard_recording(heard), detect_segments(caller)) if heard else []
    metrics = {
        "answer_seconds": round(call.answered_at - call.placed_at, 3),
        "call_seconds": call.call_seconds,
        "turns": turns,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return {
        "out": str(out),
        "direction": direction,
        "room": (report or {}).get("room_name", call.room),
        "end_reason": (report or {}).get("end_reason"),
        "heard_seconds": round(heard.duration, 2) if heard else 0.0,
        "transcript": transcript,
        **metrics,
    }


def phone_metadata(metadata: Mapping[str, Any], direction: Direction) -> dict[str, Any]:
    """The dispatch of a phone call: its direction, and on an outbound call the numbers
    the platform sets (``to`` the phone, ``from`` the trunk) unless given."""
    out = {**metadata, "direction": direction}
    if direction == "outbound":
        out.setdefault("to", PHONE_NUMBER)
        out.setdefault("from", CALLER_ID)
    return out


async def phone_leg(stack: contextlib.AsyncExitStack) -> tuple[LiveKitEndpoint, LiveKitSIP]:
    """A ``PhoneLeg`` started off the event loop, stopped when ``stack`` closes."""
    leg = PhoneLeg()
    await asyncio.to_thread(leg.__enter__)
    stack.push_async_callback(asyncio.to_thread, leg.__exit__, None, None, None)
    assert leg.sip is not None
    return leg.endpoint, leg.sip


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
