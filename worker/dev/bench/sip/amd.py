"""``bench amd --sip``: every AMD fixture played by a baresip phone that answers a real
outbound call from the worker, through livekit-sip (G.711, 8 kHz). The verdict scored is the
one the worker acted on (the report's ``amd`` event), with its decision time after the end
of the greeting on the worker's clock, and for humans the first agent audio after it as the
phone heard it. The file-level figures (``bench_amd`` on the same recordings) sit beside.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from pipelines.audio import Audio, read_wav
from pipelines.loopback import OpenAIServer
from worker.dev.bench.amd import DEFAULT_MANIFEST, SttSource, amd_figures, bench_amd
from worker.dev.bench.common import BenchError, percentile, progress
from worker.dev.bench.sip.leg import report_for, sip_worker
from worker.dev.phone_replay import heard_recording, phone_metadata, run_phone_call

AMD_TIMEOUT = 8.0
FIRST_MESSAGE = "Hi, this is Ava from Acme Dental. Is now a good time?"
VOICEMAIL_MESSAGE = "Hi, this is Ava from Acme Dental. Please call us back at 555 0100."
AFTER_TIMEOUT = 3.0
"""Seconds the phone stays on the line past the AMD timeout (its verdict and action)."""


def bench_agent(llm_url: str) -> dict[str, Any]:
    """An outbound agent with AMD on (the default actions) on the offline STT and TTS; its
    LLM is a scripted server, so nothing but AMD decides what happens."""
    return {
        "name": "AMD over SIP",
        "systemPrompt": "You are Ava from Acme Dental. One short sentence.",
        "firstMessage": FIRST_MESSAGE,
        "llm_provider": "custom",
        "llm_model": "scripted",
        "llm_base_url": f"{llm_url}/v1",
        "stackPreferences": {
            "allowedProviders": {"stt": ["local"], "llm": ["custom"], "tts": ["local"]}
        },
        "inactivity_timeout_seconds": 60,
        "amd": {
            "mode": "agent",
            "timeoutSeconds": AMD_TIMEOUT,
            "voicemailMessage": VOICEMAIL_MESSAGE,
        },
    }


def pick(entries: list[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    """``limit`` entries spread evenly over the manifest (it is grouped by label), or all."""
    if limit is None or limit >= len(entries):
        return entries
    if limit < 1:
        raise ValueError("--limit must be at least 1")
    step = len(entries) / limit
    return [entries[math.floor(i * step)] for i in range(limit)]


def pick_per_category(entries: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """``k`` entries of every label in each half (even seeds tuned on, odd held out),
    spread evenly over that stratum in manifest order, each from the middle of its share
    (all of a smaller one): a deterministic subset that covers every category, and the
    kinds inside one (short and long humans, voicemails with and without a beep), on both
    halves."""
    if k < 1:
        raise ValueError("--per-category must be at least 1")
    strata: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for e in entries:
        strata.setdefault((e["label"], e.get("seed", 0) % 2), []).append(e)
    chosen = {
        id(stratum[math.floor((i + 0.5) * len(stratum) / min(k, len(stratum)))])
        for stratum in strata.values()
        for i in range(min(k, len(stratum)))
    }
    return [e for e in entries if id(e) in chosen]


async def bench_amd_sip(
    manifest: Path = DEFAULT_MANIFEST,
    *,
    workdir: Path,
    limit: int | None = None,
    per_category: int | None = None,
    stt: SttSource = "moonshine+phrases",
) -> dict[str, Any]:
    entries: list[dict[str, Any]] = json.loads(Path(manifest).read_text())
    if limit is not None and per_category is not None:
        raise ValueError("--limit and --per-category: one or the other")
    chosen = pick_per_category(entries, per_category) if per_category else pick(entries, limit)
    base = Path(manifest).parent
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    async with sip_worker(workdir) as leg, OpenAIServer(reply="Great, thank you.") as llm:
        agent = bench_agent(llm.url)
        for i, entry in enumerate(chosen):
            call_id = f"amd-sip-{i:03d}"
            metadata = phone_metadata({"agent": agent, "call_id": call_id}, "outbound")
            path = base / entry["file"]
            duration = read_wav(path).duration
            call = await run_phone_call(
                leg.livekit,
                leg.sip,
                leg.worker.agent_name,
                path,
                metadata,
                direction="outbound",
                tail_seconds=max(1.0, AMD_TIMEOUT + AFTER_TIMEOUT - duration),
            )
            report = await report_for(leg.reports, call_id)
            rows.append(verdict_row(entry, report, call.heard, answered_at=call.answered_at))
            r = rows[-1]
            progress(
                f"amd --sip: {i + 1}/{len(chosen)} {entry['file']}: {r['category']} "
                f"({r['action']}) at {r['decided_at']} s"
            )
    elapsed = time.perf_counter() - started
    if not rows:
        raise BenchError("no AMD fixture played")
    sip = amd_figures(rows, AMD_TIMEOUT)
    sip.update(human_first_audio(rows))
    sip["human_first_audio_by_half"] = {
        half: human_first_audio([r for r in rows if r["seed"] % 2 == i])
        for i, half in enumerate(("tune", "held_out"))
    }
    sip["provisional"] = provisional_figures(rows)
    sip["no_verdict"] = sum(r["category"] == "none" for r in rows)
    progress("amd --sip: the same recordings as files")
    subset = workdir / "manifest.json"
    subset.write_text(json.dumps([{**e, "file": str(base / e["file"])} for e in chosen]))
    files = bench_amd(subset, stt=stt, timeout_seconds=AMD_TIMEOUT)
    return {
        "sip": {
            "transport": "outbound call, livekit-sip v1.0.0 to baresip, G.711 8 kHz",
            "timeout_seconds": AMD_TIMEOUT,
            **sip,
            "bench_seconds": round(elapsed, 1),
            "errors": [r for r in rows if not r["correct"]],
        },
        "file": {k: v for k, v in files.items() if k != "errors"},
        "limit": limit,
        "per_category": per_category,
        "n_manifest": len(entries),
        "rows": rows,
    }


def human_first_audio(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A human's first agent audio at the phone after their greeting's end: median, p95,
    the share within 1.0 s (the goal)."""
    audio = [
        r["first_agent_audio_after_greeting_end"]
        for r in rows
        if r["label"] == "human" and r["first_agent_audio_after_greeting_end"] is not None
    ]
    p95 = percentile(audio, 95)
    return {
        "human_first_audio_after_greeting_end_median": (
            round(statistics.median(audio), 3) if audio else None
        ),
        "human_first_audio_after_greeting_end_p95": None if p95 is None else round(p95, 3),
        "human_first_audio_within_1s": (
            round(sum(v <= 1.0 for v in audio) / len(audio), 3) if audio else None
        ),
    }


def provisional_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The provisional ``human`` (the first message started before the verdict): how often
    it held for humans, and how much of the first message machines heard before it stopped
    (withdrawn as the greeting went on, or cut at the verdict)."""
    humans = [r for r in rows if r["label"] == "human"]
    machines = [r for r in rows if r["label"].startswith("machine")]
    heard = sorted(
        r["provisional"]["played_seconds"]
        for r in machines
        if r["provisional"] and r["provisional"]["played_seconds"] > 0
    )
    return {
        "humans_with_provisional": sum(bool(r["provisional"]) for r in humans),
        "humans_provisional_held": sum(
            bool(r["provisional"]) and r["provisional"]["withdrawn_at"] is None for r in humans
        ),
        "humans": len(humans),
        "machines_with_provisional": sum(bool(r["provisional"]) for r in machines),
        "machines_heard_first_message": len(heard),
        "machines": len(machines),
        "machine_heard_seconds_median": round(statistics.median(heard), 3) if heard else None,
        "machine_heard_seconds_max": heard[-1] if heard else None,
        "cut_at_verdict": sum(bool(r["provisional"] and r["provisional"]["cut"]) for r in rows),
    }


def verdict_row(
    entry: dict[str, Any],
    report: dict[str, Any],
    heard: Audio | None,
    *,
    answered_at: float | None = None,
) -> dict[str, Any]:
    """One fixture's call scored from the worker's report (its ``amd`` event; ``none`` when
    the call ended without a verdict) and what the phone heard; with ``answered_at`` (the
    phone's answer, ``time.time()``) a human's first message split into stages on the wall
    clock: greeting end (the phone's WAV starts at the answer) to the verdict (the
    provisional ``human`` when it held), to the first frame played (the ``first_message``
    event), to the phone hearing it."""
    events = {e["type"]: e for e in reversed(report.get("events", []))}
    verdict = events["amd"]["data"] if "amd" in events else None
    greeting = events["first_message"]["data"] if "first_message" in events else None
    greeting_end = entry.get("greeting_end")
    decided_at = float(verdict["decided_at"]) if verdict else AMD_TIMEOUT + AFTER_TIMEOUT
    first_audio = None
    if heard is not None and greeting_end is not None:
        onsets = heard_recording(heard).speech_onsets()
        first_audio = next((round(t - greeting_end, 3) for t in onsets if t > greeting_end), None)
    stages = None
    if first_audio is not None and answered_at is not None and verdict and greeting:
        ended = answered_at + float(greeting_end or 0.0)
        early = verdict.get("provisional")
        held = bool(early) and early["withdrawn_at"] is None and "amd_provisional" in events
        # the decision that started the message played: a provisional one that held, or
        # the verdict (then the last first_message, after a withdrawn one's start)
        decided = _wall(events["amd_provisional" if held else "amd"]["at"])
        said = [e for e in report.get("events", []) if e["type"] == "first_message"]
        played = _wall(said[0 if held else -1]["at"])
        stages = {
            "verdict": round(decided - ended, 3),
            "played": round(played - decided, 3),
            "heard": round(ended + first_audio - played, 3),
        }
    category = verdict["category"] if verdict else "none"
    return {
        "file": entry["file"],
        "label": entry["label"],
        "seed": entry.get("seed", 0),
        "category": category,
        "action": verdict.get("action") if verdict else None,
        "correct": category == entry["label"],
        "decided_at": decided_at,
        "after_greeting_end": (
            None if greeting_end is None or not verdict else round(decided_at - greeting_end, 3)
        ),
        "first_agent_audio_after_greeting_end": first_audio,
        "first_message": greeting,
        "first_message_stages": stages,
        "provisional": verdict.get("provisional") if verdict else None,
        "beep_at": entry.get("beep_at"),
        "reason": verdict.get("reason") if verdict else "no verdict in the report",
        "end_reason": report.get("end_reason"),
    }


def _wall(at: str | float) -> float:
    """A report timestamp (ISO 8601, or seconds) as ``time.time()``."""
    return float(at) if isinstance(at, int | float) else datetime.fromisoformat(at).timestamp()
