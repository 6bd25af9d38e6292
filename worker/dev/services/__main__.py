"""Managers for the real local services the project starts itself: a LiveKit server in
``--dev`` mode and the offline LLM (``python -m pipelines.providers.local_llm``).

Each manager spawns one child process bound to loopback on free ports, waits until it
answers over HTTP, exposes where to reach it, and stops it with SIGTERM then SIGKILL.
They are sync context managers (test fixtures, ``voice-worker replay``) with
``astart()``/``astop()`` and ``async with`` for async callers::

    with LiveKitServer() as lk, LlamaServer() as llm:
        LiveKitAPI(lk.url, lk.api_key, lk.api_secret)
        ChatCompletionsLLM(ChatOptions(model=llm.model, base_url=llm.base_url))

CLI: ``python -m worker.dev.services livekit|llama|s3`` prints the connection details as JSON
and keeps the service up until Ctrl-C (``scripts/livekit-server`` wraps it).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from worker.dev.services.livekit import LiveKitServer, ensure_built
from worker.dev.services.llama import LlamaServer
from worker.dev.services.process import ServiceError
from worker.dev.services.s3 import S3Server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.dev.services",
        description="Start one local service on loopback, print how to reach it as JSON, "
        "and keep it up until Ctrl-C.",
    )
    sub = parser.add_subparsers(dest="service", required=True)
    lk = sub.add_parser("livekit", help="livekit-server --dev")
    lk.add_argument("--port", type=int, help="HTTP/WebSocket port (default: a free one)")
    lk.add_argument("--api-key", default="devkey")
    lk.add_argument("--api-secret", default="secret")
    lk.add_argument("--build", action="store_true", help="build the binary if it is missing")
    llama = sub.add_parser("llama", help="the offline LLM (llama.cpp, Gemma 3 270M)")
    llama.add_argument("--port", type=int)
    llama.add_argument("--model", type=Path, help="GGUF path (default: the packaged Gemma)")
    llama.add_argument("--threads", type=int, default=2)
    s3 = sub.add_parser("s3", help="versitygw: an S3 server for the call recordings")
    s3.add_argument("--port", type=int)
    s3.add_argument("--data", type=Path, help="directory of the buckets (default: a scratch one)")
    s3.add_argument("--bucket", default="recordings")
    args = parser.parse_args(argv)

    service: LiveKitServer | LlamaServer | S3Server
    try:
        if args.service == "livekit":
            binary = ensure_built() if args.build else None
            service = LiveKitServer(
                port=args.port, api_key=args.api_key, api_secret=args.api_secret, binary=binary
            )
        elif args.service == "s3":
            service = S3Server(args.data, port=args.port, buckets=(args.bucket,))
        else:
            service = LlamaServer(port=args.port, model_path=args.model, threads=args.threads)
        service.start()
    except ServiceError as exc:
        print(f"services: {exc}", file=sys.stderr)
        return 1

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        print(json.dumps(service.describe()), flush=True)
        while not stop.wait(0.5):
            if not service.running:
                print(
                    f"services: {service.name} exited; log:\n{service.log_tail()}", file=sys.stderr
                )
                return 1
    finally:
        service.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
