"""``voice-worker replay``: one real call in a local LiveKit room, caller played from a WAV.

Resolves the call's plan first (a bad config fails before any server starts), then starts
(or connects to) a LiveKit server, the offline LLM if the plan needs it, and a worker
process (``worker.dev.services``); the caller (``worker.dev.caller``) dispatches the agent
into a new room, plays the WAV in real time and records everything the agent publishes;
replay writes ``agent.wav``, ``transcript.json``, ``metrics.json`` and the worker's
``report.json``. A call the plan records goes to ``RECORDINGS_URL`` if set, else to a
versitygw bucket under ``out/bucket``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.audio import detect_segments, read_wav, write_wav
from worker.dev.caller import CallRecording, run_caller, turn_metrics
from worker.dev.services import (
    LiveKitEndpoint,
    LiveKitServer,
    LlamaServer,
    S3Server,
    WorkerProcess,
    http_ok,
    warm_up_llm,
)
from worker.dev.story import caller_script, story_rows, story_text
from worker.settings import Settings

if TYPE_CHECKING:
    from worker.plan import SessionPlan


@contextlib.asynccontextmanager
async def local_stack(
    settings: Settings,
    *,
    livekit_url: str | None,
    need_llm: bool,
    workdir: Path,
    extra_env: Mapping[str, str] | None = None,
    endpoint: LiveKitEndpoint | None = None,
) -> AsyncIterator[tuple[LiveKitEndpoint, WorkerProcess]]:
    """LiveKit server (unless ``endpoint`` or ``livekit_url``), llama.cpp (if needed and
    not running) and one registered worker process."""
    async with contextlib.AsyncExitStack() as stack:
        if endpoint is not None:
            livekit = endpoint
        elif livekit_url:
            livekit = LiveKitEndpoint(
                livekit_url,
                settings.livekit_api_key,
                settings.livekit_api_secret.get_secret_value(),
            )
        else:
            livekit = (await stack.enter_async_context(LiveKitServer())).endpoint
        llm_base_url = None
        if need_llm and not http_ok(settings.local_llm_base_url + "/models"):
            port = int(settings.local_llm_base_url.rsplit(":", 1)[1].split("/")[0])
            llm_base_url = (await stack.enter_async_context(LlamaServer(port=port))).base_url
            await asyncio.to_thread(warm_up_llm, llm_base_url)
        worker = WorkerProcess(
            livekit,
            workdir=workdir,
            llm_base_url=llm_base_url,
            control_plane_url=settings.control_plane_url,
            extra_env=extra_env,
        )
        await worker.astart()
        try:
            yield livekit, worker
        finally:
            await worker.astop()


async def replay_call(
    agent: str,
    audio_path: Path,
    out: Path,
    *,
    dispatch: Mapping[str, Any] | None = None,
    livekit_url: str | None = None,
    tail_seconds: float = 12.0,
    extra_env: Mapping[str, str] | None = None,
    fault: str | None = None,
) -> dict[str, Any]:
    """Runs one call and writes its artifacts; returns the summary. ``fault``
    (``LAYER:PROVIDER:KIND@SECONDS``) breaks that provider's connection mid-call."""
    from worker.dev.faults import armed, parse_fault, target, worker_overrides

    settings = Settings()
    spec = parse_fault(fault) if fault else None
    caller = read_wav(audio_path)
    out.mkdir(parents=True, exist_ok=True)
    metadata = call_metadata(agent, dispatch)
    plan = await resolve_first(metadata, settings)
    need_llm = needs_llm(plan)
    env = dict(extra_env or {})
    env.setdefault("REPORT_DIR", str(out / "reports"))
    async with contextlib.AsyncExitStack() as stack:
        await recordings_env(stack, plan, out, env)
        injector = None
        if spec is not None:
            choice = target(plan, spec)
            injector = await stack.enter_async_context(armed(spec, choice, settings))
            env.update(worker_overrides(choice, injector, metadata))
        livekit, worker = await stack.enter_async_context(
            local_stack(
                settings, livekit_url=livekit_url, need_llm=need_llm, workdir=out, extra_env=env
            )
        )
        if injector is not None:
            fire = asyncio.create_task(injector.fire_at(asyncio.get_running_loop().time()))
            stack.callback(fire.cancel)
        rec = await run_caller(
            livekit, worker.agent_name, metadata, caller, tail_seconds=tail_seconds
        )
    agent_audio = rec.agent_audio()
    write_wav(out / "agent.wav", agent_audio)
    segments = detect_segments(caller)
    transcript = sorted(
        [
            {
                "role": "caller" if e["role"] == "user" else "agent",
                "text": e["text"],
                "at": rec.rel(e["at"]),
            }
            for e in rec.turn_events
        ],
        key=lambda e: e["at"],
    )
    (out / "transcript.json").write_text(json.dumps(transcript, indent=2) + "\n")
    turns = turn_metrics(rec, segments)
    (out / "metrics.json").write_text(json.dumps({"turns": turns}, indent=2) + "\n")
    report = latest_report(Path(env["REPORT_DIR"]))
    if report is not None:
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    role = f"{plan.agent_name or ''} {plan.prompt}"
    return {
        "out": str(out),
        "error": call_error(rec, caller.duration, report),
        "agent_audio_seconds": round(agent_audio.duration, 2),
        "transcript": transcript,
        "turns": turns,
        "story": story_rows(turns, caller_script(audio_path), role),
        "recording": report.get("recording") if report else None,
    }


def call_error(
    rec: CallRecording, caller_seconds: float, report: Mapping[str, Any] | None
) -> str | None:
    """Why the call failed, if it did: the agent left the room before the caller's audio
    ended without a report saying it ended the call (a crashed or killed worker)."""
    if rec.agent_left_at is None:
        return None
    if report is not None and report.get("room_name") == rec.room_name:
        return None  # the worker ended the call itself and reported it
    left = rec.agent_left_at - rec.t0
    if left >= caller_seconds:
        return None
    return (
        f"the agent left the room {left:.1f} s into the call, before it ended "
        f"({caller_seconds:.1f} s of caller audio), and wrote no report"
    )


def call_metadata(agent: str, dispatch: Mapping[str, Any] | None) -> dict[str, Any]:
    """The dispatch metadata of a replayed call: ``agent`` is an id or an agent JSON file."""
    from worker.plan import read_json_file

    metadata: dict[str, Any] = dict(dispatch or {})
    path = Path(agent)
    if path.suffix == ".json" or path.exists():
        metadata["agent"] = read_json_file(path)
    else:
        metadata["agentId"] = agent
    return metadata


async def resolve_first(metadata: Mapping[str, Any], settings: Settings) -> SessionPlan:
    """The call's plan, resolved before any server starts: a bad config fails fast."""
    from worker.config import parse_dispatch
    from worker.plan import load_call, open_cached

    cp = open_cached(settings)
    try:
        return (await load_call(cp, parse_dispatch(metadata), settings)).plan
    finally:
        await cp.aclose()


def needs_llm(plan: SessionPlan) -> bool:
    return plan.providers["llm"][0].vendor in ("local", "custom")


async def recordings_env(
    stack: contextlib.AsyncExitStack, plan: SessionPlan, out: Path, env: dict[str, str]
) -> None:
    """A call the plan records and nothing configured to take it: the embedded default, a
    real S3 server whose objects land under ``out/bucket`` (its settings go into ``env``)."""
    if plan.save_audio_recording and "RECORDINGS_URL" not in {**os.environ, **env}:
        bucket = await stack.enter_async_context(S3Server(out / "bucket"))
        env.update(bucket.settings_env())


def latest_report(directory: Path) -> dict[str, Any] | None:
    """The newest call report the worker wrote (``REPORT_DIR``), if any."""
    reports = sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime)
    if not reports:
        return None
    report: dict[str, Any] = json.loads(reports[-1].read_text())
    return report


def summary_text(result: Mapping[str, Any]) -> str:
    lines = [f"call artifacts in {result['out']}"]
    if result.get("error"):
        lines.append(f"  FAILED: {result['error']}")
    if result.get("recording"):
        rec = result["recording"]
        lines.append(f"  recording {rec['url']} ({rec['duration_s']:.2f}s, {rec['channels']} ch)")
    for e in result["transcript"]:
        lines.append(f"  [{e['at']:6.2f}s] {e['role']:>6}: {e['text']}")
    for t in result["turns"]:
        lat = t.get("response_latency")
        lines.append(
            f"  turn {t['turn']}: response latency "
            + (f"{lat:.2f}s" if lat is not None else "n/a (no agent audio heard)")
        )
    if result.get("story"):
        lines.append(story_text(result))
    return "\n".join(lines)
