"""One child process the project starts itself: free loopback ports, a log file,
readiness over HTTP, and a clean stop (SIGTERM, then SIGKILL).

Every local service (LiveKit, the offline LLM, toxiproxy, a bench's provider process) is a
``ManagedProcess``: a sync context manager (test fixtures, ``voice-worker replay``) with
``astart()``/``astop()`` and ``async with`` for async callers.
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
            while not http_ok(url):
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
