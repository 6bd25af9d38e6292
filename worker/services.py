"""Managers for the real local services the project starts itself: a LiveKit server in
``--dev`` mode and the offline LLM (``python -m pipelines.local_llm``).

Each manager spawns one child process bound to loopback on free ports, waits until it
answers over HTTP, exposes where to reach it, and stops it with SIGTERM then SIGKILL.
They are sync context managers (test fixtures, ``voice-worker replay``) with
``astart()``/``astop()`` and ``async with`` for async callers::

    with LiveKitServer() as lk, LlamaServer() as llm:
        LiveKitAPI(lk.url, lk.api_key, lk.api_secret)
        ChatCompletionsLLM(ChatOptions(model=llm.model, base_url=llm.base_url))

CLI: ``python -m worker.services livekit|llama`` prints the connection details as JSON
and keeps the service up until Ctrl-C (``scripts/livekit-server`` wraps it).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self

from pipelines.errors import VoiceWorkerError

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_BIN = REPO_ROOT / ".cache" / "bin"
LIVEKIT_VERSION = "v1.13.5"
LIVEKIT_MODULE = f"github.com/livekit/livekit-server/cmd/server@{LIVEKIT_VERSION}"
LOOPBACK = "127.0.0.1"


class ServiceError(VoiceWorkerError):
    """A local service is missing, failed to start, or died; the message says which and
    carries the tail of its log."""


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port the OS reports free on loopback now (another process may still take it)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= int(resp.status) < 300
    except (urllib.error.URLError, OSError):
        return False


class ManagedProcess:
    """One child process with a readiness URL. Output goes to a log file (never a pipe
    that nobody drains); the log's tail is quoted when the process fails to come up."""

    name = "service"

    def __init__(self, *, startup_timeout: float = 30.0) -> None:
        self.startup_timeout = startup_timeout
        self.startup_seconds: float | None = None
        """Wall time from spawn to ready, measured by the last ``start()``."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._lock = threading.Lock()

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            self._workdir = tempfile.TemporaryDirectory(prefix=f"voice-worker-{self.name}-")
        return Path(self._workdir.name)

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _command(self) -> list[str]:
        raise NotImplementedError

    python_child = False
    """A Python child: it runs in a scratch directory, so this checkout goes on its
    ``PYTHONPATH``."""

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.python_child:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
            )
        return env

    def _ready_url(self) -> str:
        raise NotImplementedError

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> Self:
        """Spawns the process and blocks until it is ready; raises ``ServiceError``."""
        with self._lock:
            if self.running:
                return self
            command = self._command()
            started = time.monotonic()
            with self.log_path.open("wb") as log:
                try:
                    self._proc = subprocess.Popen(
                        command,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=self._env(),
                        cwd=self.workdir,
                        start_new_session=True,  # Ctrl-C in a terminal reaches us, not it
                    )
                except OSError as exc:
                    raise ServiceError(f"{self.name}: cannot run {command[0]}: {exc}") from exc
            deadline = started + self.startup_timeout
            url = self._ready_url()
            while not _http_ok(url):
                if self._proc.poll() is not None:
                    code = self._proc.returncode
                    self._proc = None
                    raise ServiceError(
                        f"{self.name} exited with code {code} before it was ready; "
                        f"log {self.log_path}:\n{self.log_tail()}"
                    )
                if time.monotonic() > deadline:
                    self._terminate()
                    raise ServiceError(
                        f"{self.name} not ready at {url} after {self.startup_timeout:.0f}s; "
                        f"log {self.log_path}:\n{self.log_tail()}"
                    )
                time.sleep(0.1)
            self.startup_seconds = time.monotonic() - started
            return self

    def _terminate(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        # A second SIGTERM means "force" to livekit-server (the first waits for every
        # participant to leave) and to uvicorn; SIGKILL is the last resort.
        for sig, wait in ((signal.SIGTERM, timeout * 0.4), (signal.SIGTERM, timeout * 0.6)):
            proc.send_signal(sig)
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue
        proc.kill()
        proc.wait()

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, SIGTERM again, then SIGKILL, within ``timeout`` seconds. Idempotent."""
        with self._lock:
            self._terminate(timeout)
            if self._workdir is not None:
                self._workdir.cleanup()
                self._workdir = None

    async def astart(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def astop(self, timeout: float = 5.0) -> None:
        await asyncio.to_thread(self.stop, timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()


def find_livekit_binary() -> Path | None:
    """``$LIVEKIT_SERVER_BIN``, then ``livekit-server`` on PATH, then ``.cache/bin/server``."""
    override = os.environ.get("LIVEKIT_SERVER_BIN")
    if override:
        return Path(override) if Path(override).is_file() else None
    on_path = shutil.which("livekit-server")
    if on_path:
        return Path(on_path)
    cached = CACHE_BIN / "server"
    return cached if cached.is_file() and os.access(cached, os.X_OK) else None


def ensure_built() -> Path:
    """The LiveKit server binary, built from the Go module proxy into ``.cache/bin`` at
    the pinned release when it is not there yet (takes minutes the first time)."""
    found = find_livekit_binary()
    if found is not None:
        return found
    go = shutil.which("go")
    if go is None:
        raise ServiceError(
            "livekit-server not found (PATH, $LIVEKIT_SERVER_BIN, .cache/bin/server) and Go "
            f"is not installed to build it; install Go, then run: GOBIN=.cache/bin go install "
            f"{LIVEKIT_MODULE}"
        )
    CACHE_BIN.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [go, "install", LIVEKIT_MODULE],
        cwd=REPO_ROOT,
        env={**os.environ, "GOBIN": str(CACHE_BIN)},
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise ServiceError(f"go install {LIVEKIT_MODULE} failed:\n{proc.stderr[-2000:]}")
    built = CACHE_BIN / "server"
    if not built.is_file():
        raise ServiceError(f"go install {LIVEKIT_MODULE} succeeded but {built} is missing")
    return built


class LiveKitServer(ManagedProcess):
    """``livekit-server --dev`` on loopback with its own config: random HTTP/TCP/UDP ports,
    one API key pair, ICE candidates on 127.0.0.1 only."""

    name = "livekit-server"

    def __init__(
        self,
        *,
        api_key: str = "devkey",
        api_secret: str | None = None,
        port: int | None = None,
        binary: Path | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        super().__init__(startup_timeout=startup_timeout)
        self.api_key = api_key
        self.api_secret = api_secret or secrets.token_urlsafe(32)
        self.port = port or free_port()
        self.rtc_tcp_port = free_port()
        self.rtc_udp_port = free_port(socket.SOCK_DGRAM)
        self._binary = binary

    @property
    def url(self) -> str:
        """The WebSocket URL clients and workers connect to."""
        return f"ws://{LOOPBACK}:{self.port}"

    @property
    def http_url(self) -> str:
        """The same server for the Twirp server API (``LiveKitAPI`` accepts either)."""
        return f"http://{LOOPBACK}:{self.port}"

    def config_yaml(self) -> str:
        return "\n".join(
            [
                f"port: {self.port}",
                "bind_addresses:",
                f"  - {LOOPBACK}",
                "rtc:",
                f"  tcp_port: {self.rtc_tcp_port}",
                f"  udp_port: {self.rtc_udp_port}",
                f"  node_ip: {LOOPBACK}",
                "  use_external_ip: false",
                "  enable_loopback_candidate: true",
                "keys:",
                f"  {json.dumps(self.api_key)}: {json.dumps(self.api_secret)}",
                "logging:",
                "  level: info",
                "",
            ]
        )

    def _command(self) -> list[str]:
        binary = self._binary or find_livekit_binary()
        if binary is None:
            raise ServiceError(
                "livekit-server binary not found; build it with "
                f"`python -m worker.services livekit --build` (GOBIN=.cache/bin go install "
                f"{LIVEKIT_MODULE})"
            )
        config = self.workdir / "livekit.yaml"
        config.write_text(self.config_yaml())
        return [str(binary), "--dev", "--config", str(config), "--bind", LOOPBACK]

    def _ready_url(self) -> str:
        return f"{self.http_url}/"

    def describe(self) -> dict[str, str | int]:
        return {
            "url": self.url,
            "api_key": self.api_key,
            "api_secret": self.api_secret,
            "pid": self.pid or 0,
            "log": str(self.log_path),
        }


class LlamaServer(ManagedProcess):
    """The offline LLM (``python -m pipelines.local_llm``): an OpenAI-compatible endpoint."""

    name = "llama-server"
    python_child = True

    def __init__(
        self,
        *,
        port: int | None = None,
        model_path: Path | None = None,
        threads: int = 2,
        n_ctx: int = 2048,
        python: str = sys.executable,
        startup_timeout: float = 60.0,
    ) -> None:
        super().__init__(startup_timeout=startup_timeout)
        self.port = port or free_port()
        self.model_path = model_path
        self.threads = threads
        self.n_ctx = n_ctx
        self.python = python

    model = "gemma-3-270m"
    """The model name to send; the server serves its one model under this alias."""

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL (``.../v1``) for an OpenAI-compatible client."""
        return f"http://{LOOPBACK}:{self.port}/v1"

    def _command(self) -> list[str]:
        if importlib.util.find_spec("llama_cpp") is None:
            raise ServiceError(
                "llama-cpp-python is not installed: pip install 'llama-cpp-python[server]==0.3.36'"
            )
        command = [
            self.python,
            "-m",
            "pipelines.local_llm",
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            "--threads",
            str(self.threads),
            "--n-ctx",
            str(self.n_ctx),
        ]
        if self.model_path is not None:
            command += ["--model", str(self.model_path)]
        return command

    def _ready_url(self) -> str:
        return f"{self.base_url}/models"

    def describe(self) -> dict[str, str | int]:
        return {
            "base_url": self.base_url,
            "model": self.model,
            "api_key": "local",
            "pid": self.pid or 0,
            "log": str(self.log_path),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.services",
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
    args = parser.parse_args(argv)

    service: LiveKitServer | LlamaServer
    try:
        if args.service == "livekit":
            binary = ensure_built() if args.build else None
            service = LiveKitServer(
                port=args.port, api_key=args.api_key, api_secret=args.api_secret, binary=binary
            )
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
