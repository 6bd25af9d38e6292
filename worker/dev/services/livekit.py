"""``livekit-server --dev`` on loopback: the binary (built from the Go module proxy into
``.cache/bin`` at the pinned release), its manager, and ``LiveKitEndpoint``, where any
LiveKit server answers."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from worker.dev.services.process import CACHE_BIN, LOOPBACK, ManagedProcess, ServiceError, free_port
from worker.settings import REPO_ROOT

if TYPE_CHECKING:
    from livekit import api

LIVEKIT_VERSION = "v1.13.5"
LIVEKIT_MODULE = f"github.com/livekit/livekit-server/cmd/server@{LIVEKIT_VERSION}"


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


@dataclass(frozen=True, slots=True)
class LiveKitEndpoint:
    """Where a LiveKit server answers and the key pair its API accepts."""

    url: str
    api_key: str
    api_secret: str

    def client(self) -> api.LiveKitAPI:
        from livekit import api  # the SDK only where a client is made: CLI start-up stays light

        return api.LiveKitAPI(self.url.replace("ws://", "http://"), self.api_key, self.api_secret)


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
        redis_address: str | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        super().__init__(startup_timeout=startup_timeout)
        self.redis_address = redis_address
        """``host:port`` of a Redis shared with livekit-sip and other nodes; None runs the
        server on its own (in-memory routing)."""
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

    @property
    def endpoint(self) -> LiveKitEndpoint:
        return LiveKitEndpoint(self.url, self.api_key, self.api_secret)

    def config_yaml(self) -> str:
        redis = ["redis:", f"  address: {self.redis_address}"] if self.redis_address else []
        return "\n".join(
            [
                *redis,
                f"port: {self.port}",
                "bind_addresses:",
                f"  - {LOOPBACK}",
                "rtc:",
                f"  tcp_port: {self.rtc_tcp_port}",
                f"  udp_port: {self.rtc_udp_port}",
                f"  node_ip: {LOOPBACK}",
                "  use_external_ip: false",
                "  enable_loopback_candidate: true",
                # the media ports on loopback only (without it they bind every interface's
                # address, and a second node could collide with a port free on 127.0.0.1)
                "  ips:",
                "    includes:",
                f"      - {LOOPBACK}/32",
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
                f"`python -m worker.dev.services livekit --build` (GOBIN=.cache/bin go install "
                f"{LIVEKIT_MODULE})"
            )
        config = self.workdir / "livekit.yaml"
        config.write_text(self.config_yaml())
        return [str(binary), "--dev", "--config", str(config), "--bind", LOOPBACK]

    def _ready_url(self) -> str:
        return f"{self.http_url}/"

    def _reach(self) -> dict[str, str]:
        return {"url": self.url, "api_key": self.api_key, "api_secret": self.api_secret}
