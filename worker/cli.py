"""``voice-worker``: the worker daemon and its tools.

stdout carries JSON where a program would read it; errors go to stderr naming the field or
file at fault, with exit code 2 for bad input and 1 for a failure at run time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipelines.audio import AudioFormatError
from pipelines.errors import (
    AgentNotFound,
    ConfigError,
    InvalidPayload,
    RoutingError,
    VoiceWorkerError,
)

EXIT_OK, EXIT_RUNTIME, EXIT_BAD_INPUT = 0, 1, 2
DEMO_AGENT = "agent_01JC0FRNTDESK0000000000000"
"""The front desk of the fixture control plane: ``make demo`` calls it, ``talk`` defaults to it."""
BAD_INPUT = (ConfigError, RoutingError, AgentNotFound, InvalidPayload, AudioFormatError, ValueError)


def emit(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _json_arg(value: str | None, what: str) -> Any:
    """A JSON argument given inline or as a file path."""
    if value is None:
        return None
    path = Path(value)
    if not value.lstrip().startswith("{") and path.exists():
        from worker.plan import read_json_file

        return read_json_file(path)
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what}: not JSON and not a file ({exc.msg})") from None


def _agent_source(agent: str) -> tuple[str | None, Path | None]:
    path = Path(agent)
    if path.suffix == ".json" or path.exists():
        if not path.exists():
            raise ConfigError(f"{path}: no such file")
        return None, path
    return agent, None


async def _plan(args: argparse.Namespace) -> int:
    from worker.config import parse_dispatch
    from worker.plan import load_call, open_cached, plan_to_json
    from worker.settings import Settings

    settings = Settings()
    raw = _json_arg(args.dispatch, "--dispatch")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("--dispatch: expected a JSON object")
    agent_id, agent_file = _agent_source(args.agent)
    if agent_id:
        raw = {**raw, "agentId": agent_id}
    dispatch = parse_dispatch(raw, source="--dispatch")
    cp = open_cached(settings)
    try:
        loaded = await load_call(cp, dispatch, settings, agent_file=agent_file)
    finally:
        await cp.aclose()
    out = plan_to_json(loaded.plan)
    out["stale_config"] = loaded.stale_config
    emit(out)
    return EXIT_OK


async def _replay(args: argparse.Namespace) -> int:
    from worker.dev import replay_call, summary_text

    out = Path(args.out)
    if args.phone:
        return await _replay_phone(args, out)
    result = await replay_call(
        args.agent,
        Path(args.audio),
        out,
        dispatch=_json_arg(args.dispatch, "--dispatch"),
        livekit_url=args.livekit_url,
        tail_seconds=args.tail,
        fault=args.fault,
    )
    print(summary_text(result), file=sys.stderr)
    emit({"out": result["out"], "turns": result["turns"], "error": result["error"]})
    return EXIT_RUNTIME if result["error"] else EXIT_OK


async def _replay_phone(args: argparse.Namespace, out: Path) -> int:
    from worker.dev.phone_replay import replay_phone_call, summary_text

    for flag, value in (("--livekit-url", args.livekit_url), ("--fault", args.fault)):
        if value:
            raise ConfigError(f"{flag}: not available with --phone (the call runs on its own leg)")
    result = await replay_phone_call(
        args.agent,
        Path(args.phone),
        out,
        direction=args.direction,
        dispatch=_json_arg(args.dispatch, "--dispatch"),
        tail_seconds=args.tail,
    )
    print(summary_text(result), file=sys.stderr)
    emit({k: result[k] for k in ("out", "direction", "end_reason", "answer_seconds", "turns")})
    return EXIT_OK


async def _talk(args: argparse.Namespace) -> int:
    from worker.dev.talk import ensure_bundle, talk

    if args.build:
        emit({"bundle": str(await asyncio.to_thread(ensure_bundle))})
        return EXIT_OK
    await talk(
        args.agent,
        workdir=Path(args.out),
        port=args.port,
        dispatch=_json_arg(args.dispatch, "--dispatch"),
        livekit_url=args.livekit_url or os.environ.get("LIVEKIT_URL"),
        on_ready=lambda url: print(f"talk to the agent at {url} (Ctrl-C stops)", file=sys.stderr),
    )
    return EXIT_OK


def _vad(args: argparse.Namespace) -> int:
    from pipelines.audio import detect_segments, read_wav

    segments = detect_segments(read_wav(args.wav), aggressiveness=args.aggressiveness)
    emit([{"start": start, "end": end} for start, end in segments])
    return EXIT_OK


def _stretch(args: argparse.Namespace) -> int:
    from pipelines.audio import read_wav, stretch_audio, write_wav

    audio = read_wav(args.input)
    out = stretch_audio(audio, args.rate)
    write_wav(args.output, out)
    emit(
        {
            "input_seconds": round(audio.duration, 3),
            "output_seconds": round(out.duration, 3),
            "rate": args.rate,
        }
    )
    return EXIT_OK


def _mix(args: argparse.Namespace) -> int:
    from pipelines.audio import mix_file, read_wav, write_wav

    out = mix_file(read_wav(args.input), args.preset, args.volume)
    write_wav(args.output, out)
    emit({"output_seconds": round(out.duration, 3), "preset": args.preset, "volume": args.volume})
    return EXIT_OK


def _amd(args: argparse.Namespace) -> int:
    from pipelines.amd import amd_file

    verdict = amd_file(args.wav, timeout_seconds=args.timeout, realtime=args.realtime)
    emit(verdict.to_json())
    return EXIT_OK


def _run_worker(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from worker.server import run_worker

    run_worker(args.command, list(extra))
    return EXIT_OK


Handler = Callable[[argparse.Namespace], Any]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voice-worker",
        description="Real-time voice worker: a LiveKit agent worker for voice-agent calls.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name, text in (
        ("start", "run the worker (production mode)"),
        ("dev", "run the worker with debug logging and auto-reload off"),
    ):
        p = sub.add_parser(
            name,
            help=text,
            description=text + "; further arguments go to "
            "the livekit-agents CLI (e.g. --log-level).",
        )
        p.set_defaults(handler=None)

    p = sub.add_parser(
        "plan",
        help="print the resolved session plan as JSON",
        description="Fetch an agent (id from CONTROL_PLANE_URL, or a JSON "
        "file), merge a dispatch and print the SessionPlan. Secrets show "
        "only as *_set: true.",
    )
    p.add_argument("--agent", required=True, help="agent id or path to an agent JSON file")
    p.add_argument("--dispatch", help="dispatch metadata: inline JSON or a JSON file")
    p.set_defaults(handler=_plan)

    p = sub.add_parser(
        "replay",
        help="run one real call in a local LiveKit room (or over a phone line) from a WAV",
        description="Start a local LiveKit server (unless --livekit-url), "
        "the offline LLM if needed and a worker; dispatch the agent, play the "
        "WAV as the caller in real time and write DIR/agent.wav, "
        "DIR/transcript.json, DIR/metrics.json and the worker's DIR/report.json "
        "(a recorded call: its object in RECORDINGS_URL, else in DIR/bucket). "
        "Exits 1 when the agent left before the call ended without a report of it. "
        "With --phone the whole call runs over a SIP leg (Redis, LiveKit, "
        "livekit-sip and a baresip phone, G.711): outbound the agent calls the "
        "phone, inbound the phone dials a number routed to the agent; the phone "
        "plays WAV from the answer, then stays on the line in silence until the "
        "call is hung up or --tail seconds pass, and DIR gets report.json, "
        "phone_heard.wav (what the phone heard, t=0 at the answer), "
        "transcript.json, metrics.json and sip.log.",
    )
    p.add_argument("--agent", required=True, help="agent id or path to an agent JSON file")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--audio", help="caller recording (16-bit PCM WAV), in a room")
    source.add_argument(
        "--phone", metavar="WAV", help="what the phone says (16-bit PCM WAV), over SIP"
    )
    p.add_argument(
        "--direction",
        choices=("outbound", "inbound"),
        default="outbound",
        help="with --phone: the agent calls the phone (outbound, default) or the phone "
        "calls the agent (inbound)",
    )
    p.add_argument("--out", default="out/replay", help="output directory (default out/replay)")
    p.add_argument("--dispatch", help="extra dispatch metadata: inline JSON or a JSON file")
    p.add_argument("--livekit-url", help="use this LiveKit server (LIVEKIT_API_KEY/SECRET)")
    p.add_argument(
        "--tail",
        type=float,
        default=12.0,
        help="seconds to keep listening after the WAV ends (default 12; with --phone: "
        "the phone's silence on the line before it hangs up)",
    )
    p.add_argument(
        "--fault",
        metavar="LAYER:PROVIDER:KIND@SECONDS",
        help="break a provider mid-call to rehearse an outage: kind reset, stall, 500 (an "
        "OpenAI-compatible llm) "
        "or refuse, SECONDS after the call starts; e.g. llm:local:stall@10",
    )
    p.set_defaults(handler=_replay)

    p = sub.add_parser(
        "talk",
        help="talk to an agent from a browser page on loopback",
        description="Start a local LiveKit server (unless --livekit-url), the offline "
        "LLM if needed and a worker, then serve a page on 127.0.0.1:PORT: Start call "
        "joins a new room with your microphone and dispatches the agent (the page's agent "
        "field picks another id); the page plays it and shows the live transcript, the "
        "agent's state, each turn's latency and how much agent audio arrived. Ctrl-C "
        "stops everything.",
    )
    p.add_argument(
        "--agent",
        default=DEMO_AGENT,
        help=f"agent id or path to an agent JSON file (default {DEMO_AGENT})",
    )
    p.add_argument("--port", type=int, help="page port (default: a free one, printed)")
    p.add_argument("--dispatch", help="extra dispatch metadata: inline JSON or a JSON file")
    p.add_argument(
        "--livekit-url",
        help="use this LiveKit server (LIVEKIT_API_KEY/SECRET; default $LIVEKIT_URL if set, "
        "else a local one)",
    )
    p.add_argument("--out", default="out/talk", help="worker log directory (default out/talk)")
    p.add_argument(
        "--build",
        action="store_true",
        help="only build the page's script bundle if missing or its sources changed "
        "(npm ci + esbuild into .cache/talk), print its path",
    )
    p.set_defaults(handler=_talk)

    p = sub.add_parser(
        "vad",
        help="print speech segments of a WAV as JSON",
        description="webrtcvad speech segments: [{start, end}] in seconds.",
    )
    p.add_argument("wav")
    p.add_argument(
        "--aggressiveness",
        type=int,
        default=2,
        choices=range(4),
        help="webrtcvad mode 0..3 (default 2)",
    )
    p.set_defaults(handler=_vad)

    p = sub.add_parser(
        "stretch",
        help="pitch-preserving time-stretch of a WAV",
        description="Time-stretch IN to OUT at --rate (0.5..3.0; 1.5 = 1.5x "
        "faster), keeping the pitch, as tts_playback_rate does on a call.",
    )
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    p.set_defaults(handler=_stretch)

    p = sub.add_parser(
        "mix",
        help="mix a background-noise bed under a WAV",
        description="Mix preset P at volume V (0..1) under IN, write OUT.",
    )
    p.add_argument("--preset", required=True)
    p.add_argument("--volume", type=float, required=True)
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    p.set_defaults(handler=_mix)

    p = sub.add_parser(
        "amd",
        help="answering-machine verdict for a callee recording",
        description="Stream a callee recording through the AMD classifier in "
        "simulated real time; print {category, confidence, reason, decided_at}.",
    )
    p.add_argument("wav")
    p.add_argument("--timeout", type=float, default=8.0, help="seconds (default 8)")
    p.add_argument("--realtime", action="store_true", help="pace on the wall clock")
    p.set_defaults(handler=_amd)

    from worker.dev.bench import add_bench_parser

    add_bench_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command in ("start", "dev"):
        return _run_worker(args, extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    handler: Handler = args.handler
    try:
        result = handler(args)
        code = asyncio.run(result) if asyncio.iscoroutine(result) else result
        return int(code or 0)
    except BAD_INPUT as exc:
        print(f"error: {exc or type(exc).__name__}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (VoiceWorkerError, OSError, TimeoutError, RuntimeError) as exc:
        print(f"error: {exc or type(exc).__name__}", file=sys.stderr)
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
