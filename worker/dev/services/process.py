"""One child process the project starts itself: free loopback ports, a log file,
readiness (over HTTP unless a service says otherwise), and a clean stop (SIGTERM, then
SIGKILL).

Every local service (LiveKit, the offline LLM, toxiproxy, a bench's provider process, the
worker itself) is a ``ManagedProcess``: a sync context manager (test fixtures,
``voice-worker replay``) with ``astart()``/``astop()`` and ``async with`` for async callers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self

from pipelines.errors import VoiceWorkerError
from worker.settings import REPO_ROOT

CACHE_BIN = REPO_ROOT / ".cache" / "bin"
"""Where the project's Go-built servers land (``GOBIN``)."""
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


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= int(resp.status) < 300
    except (urllib.error.URLError, OSError):
        return False


class ManagedProcess:
    """One child process with a readiness URL. Output goes to a log file (never a pipe
    that nobody drains); the log's tail is quoted when the process fails to come up."""

    name = "service"
    stop_timeout = 5.0
    """Seconds ``stop()`` allows by default before SIGKILL."""
    sigterm_shares: tuple[float, ...] = (0.4, 0.6)
    """A SIGTERM per entry, each followed by a wait of that share of the stop timeout."""
    own_session = True
    """Started in a session of its own: Ctrl-C in a terminal reaches us, not it."""

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

    def _cwd(self) -> Path:
        return self.workdir

    def _ready_url(self) -> str:
        raise NotImplementedError

    def _ready(self) -> bool:
        """Whether the spawned process is ready: its readiness URL answers 2xx."""
        return http_ok(self._ready_url())

    def _awaiting(self) -> str:
        """What ``start()`` waits for, as its timeout message says it."""
        return f"at {self._ready_url()}"

    def _reach(self) -> dict[str, str]:
        """How a client reaches the running service (URL, keys)."""
        return {}

    def describe(self) -> dict[str, str | int]:
        """``_reach()``, the pid and the log, as ``python -m worker.dev.services`` prints it."""
        return {**self._reach(), "pid": self.pid or 0, "log": str(self.log_path)}

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def start(self) -> Self:
        """Spawns the process and blocks until it is ready; raises ``ServiceError``."""
        with self._lock:
            if self.running:
                return self
            command = self._command()
            started = time.monotonic()
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("wb") as log:
                try:
                    self._proc = subprocess.Popen(
                        command,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=self._env(),
                        cwd=self._cwd(),
                        start_new_session=self.own_session,
                    )
                except OSError as exc:
                    raise ServiceError(f"{self.name}: cannot run {command[0]}: {exc}") from exc
            deadline = started + self.startup_timeout
            while not self._ready():
                if self._proc.poll() is not None:
                    code = self._proc.returncode
                    self._proc = None
                    raise ServiceError(
                        f"{self.name} exited with code {code} before it was ready; "
                        f"log {self.log_path}:\n{self.log_tail()}"
                    )
                if time.monotonic() > deadline:
                    self._terminate(self.stop_timeout)
                    raise ServiceError(
                        f"{self.name} not ready {self._awaiting()} after "
                        f"{self.startup_timeout:.0f}s; "
                        f"log {self.log_path}:\n{self.log_tail()}"
                    )
                time.sleep(0.1)
            self.startup_seconds = time.monotonic() - started
            return self

    def _terminate(self, timeout: float) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        # A second SIGTERM means "force" to livekit-server (the first waits for every
        # participant to leave) and to uvicorn; SIGKILL is the last resort.
        for share in self.sigterm_shares:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout * share)
                return
            except subprocess.TimeoutExpired:
                continue
        proc.kill()
        proc.wait()

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM (twice by default, see ``sigterm_shares``), then SIGKILL, within
        ``timeout`` seconds (default ``stop_timeout``). Idempotent."""
        with self._lock:
            self._terminate(self.stop_timeout if timeout is None else timeout)
            if self._workdir is not None:
                self._workdir.cleanup()
                self._workdir = None

    async def astart(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def astop(self, timeout: float | None = None) -> None:
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
