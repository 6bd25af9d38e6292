"""Run one vendor server until SIGINT/SIGTERM.

    python -m pipelines.loopback VENDOR [--port N] [knobs...]

Prints ``{"vendor": ..., "url": ...}`` as one JSON line on stdout once listening (so
``--port 0`` works for scripts), and with ``--log FILE`` writes the request log as JSON
on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import json
import signal
import sys
from pathlib import Path

from pipelines.loopback.base import Knobs, WireServer
from pipelines.loopback.streaming import SpeechServer

STT_SERVERS = {
    "deepgram": ("pipelines.loopback.vendors.deepgram", "DeepgramServer"),
    "baseten": ("pipelines.loopback.vendors.baseten", "BasetenServer"),
    "assemblyai": ("pipelines.loopback.vendors.assemblyai", "AssemblyAIServer"),
}
"""The speech-to-text servers (imported on demand)."""
TTS_SERVERS = {
    "elevenlabs": ("pipelines.loopback.vendors.elevenlabs", "ElevenLabsServer"),
    "speechify": ("pipelines.loopback.vendors.speechify", "SpeechifyServer"),
    "cartesia": ("pipelines.loopback.vendors.cartesia", "CartesiaServer"),
}
"""The text-to-speech servers (imported on demand; same options)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines.loopback", description=__doc__)
    parser.add_argument("vendor", choices=[*STT_SERVERS, *TTS_SERVERS, "openai", "anthropic"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--log", type=Path, help="write the request log here as JSON on exit")
    knobs = parser.add_argument_group("knobs (fault injection and fixed delays)")
    knobs.add_argument("--first-response-delay", type=float, default=0.0, metavar="S")
    knobs.add_argument("--response-delay", type=float, default=0.0, metavar="S")
    knobs.add_argument("--fail-with-status", type=int, metavar="STATUS")
    knobs.add_argument("--fail-count", type=int, metavar="N")
    knobs.add_argument("--stall-after", type=int, metavar="N")
    knobs.add_argument("--close-after", type=int, metavar="N")
    dg = parser.add_argument_group("speech to text (" + ", ".join(STT_SERVERS) + ")")
    dg.add_argument(
        "--min-endpointing-ms", type=int, default=300, help="floor of the end-of-speech silence"
    )
    dg.add_argument("--interim-interval", type=float, default=1.0, metavar="S")
    dg.add_argument("--preload", action="store_true", help="load the STT engine before listening")
    dg.add_argument(
        "--engine",
        choices=("pocketsphinx", "moonshine"),
        default="pocketsphinx",
        help="offline recogniser (moonshine: slower per call, far more accurate)",
    )
    el = parser.add_argument_group("text to speech (" + ", ".join(TTS_SERVERS) + ")")
    el.add_argument("--chunk-ms", type=int, default=200)
    el.add_argument(
        "--voice-map", action="append", default=[], metavar="ID=VOICE", help="repeatable"
    )
    oa = parser.add_argument_group("openai, anthropic")
    oa.add_argument("--reply", help="scripted chat reply")
    oa.add_argument("--upstream", help="relay chat to this OpenAI-compatible base URL")
    oa.add_argument("--upstream-model")
    oa.add_argument("--upstream-api-key")
    oa.add_argument("--model", action="append", default=[], help="listed by /v1/models")
    return parser


def build_server(args: argparse.Namespace) -> WireServer:
    knobs = Knobs(
        first_response_delay=args.first_response_delay,
        response_delay=args.response_delay,
        fail_with_status=args.fail_with_status,
        fail_count=args.fail_count,
        stall_after=args.stall_after,
        close_after=args.close_after,
    )
    common = {"host": args.host, "port": args.port, "knobs": knobs}
    if args.vendor in STT_SERVERS:
        module, name = STT_SERVERS[args.vendor]
        engine = None
        if args.engine == "moonshine":
            from pipelines.engines import MoonshineTranscriber

            engine = MoonshineTranscriber()
        server: SpeechServer = getattr(importlib.import_module(module), name)(
            engine,
            min_endpointing_ms=args.min_endpointing_ms,
            interim_interval=args.interim_interval,
            **common,
        )
        if args.preload:
            server.preload()
        return server
    if args.vendor in TTS_SERVERS:
        module, name = TTS_SERVERS[args.vendor]
        pairs = [item.partition("=") for item in args.voice_map]
        bad = [item for item, (_, sep, _) in zip(args.voice_map, pairs, strict=True) if not sep]
        if bad:
            raise ValueError(f"--voice-map {bad[0]!r}: expected ID=VOICE")
        tts_server: WireServer = getattr(importlib.import_module(module), name)(
            voice_map={k: v for k, _, v in pairs}, chunk_ms=args.chunk_ms, **common
        )
        return tts_server
    from pipelines.loopback.vendors.openai_compat import DEFAULT_REPLY, OpenAIServer

    if args.vendor == "anthropic":
        from pipelines.loopback.vendors.anthropic import AnthropicServer

        return AnthropicServer(
            reply=args.reply if args.reply is not None else DEFAULT_REPLY,
            upstream=args.upstream,
            upstream_model=args.upstream_model,
            models=tuple(args.model) or ("claude-haiku-4-5",),
            **common,
        )
    return OpenAIServer(
        reply=args.reply if args.reply is not None else DEFAULT_REPLY,
        upstream=args.upstream,
        upstream_model=args.upstream_model,
        upstream_api_key=args.upstream_api_key,
        models=tuple(args.model) or ("local-scripted",),
        **common,
    )


async def serve(server: WireServer, log: Path | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    url = await server.start()
    print(json.dumps({"vendor": server.vendor, "url": url}), flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()
        if log is not None:
            records = [dataclasses.asdict(r) for r in server.requests]
            log.write_text(json.dumps(records, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        server = build_server(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(server, args.log))
    except OSError as exc:
        print(f"error: {args.vendor} server on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
