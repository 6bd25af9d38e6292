"""``redis-server`` (Debian) on a free loopback port, with no persistence: the state LiveKit
shares between its nodes and livekit-sip, and the fleet's call checkpoints."""

from __future__ import annotations

import shutil
import socket

from worker.dev.services.process import LOOPBACK, ManagedProcess, ServiceError, free_port


def redis_ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether a Redis server answers ``PING`` with ``+PONG`` (RESP, no client library)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer(ManagedProcess):
    """One ``redis-server`` bound to 127.0.0.1: no RDB/AOF files, no protected-mode
    surprises, its working directory a scratch one."""

    name = "redis-server"
    sigterm_shares = (1.0,)

    def __init__(self, *, port: int | None = None, startup_timeout: float = 10.0) -> None:
        super().__init__(startup_timeout=startup_timeout)
        self.port = port or free_port()

    @property
    def address(self) -> str:
        """``host:port``, as LiveKit's and livekit-sip's ``redis.address`` take it."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"redis://{self.address}/0"

    def _command(self) -> list[str]:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError(
                "redis-server not found on PATH; install the Debian package: "
                "apt-get install redis-server (scripts/setup.sh does)"
            )
        return [
            binary,
            "--bind", LOOPBACK,
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--daemonize", "no",
        ]  # fmt: skip

    def _ready(self) -> bool:
        return redis_ping(LOOPBACK, self.port)

    def _awaiting(self) -> str:
        return f"for PONG at {self.address}"

    def _reach(self) -> dict[str, str]:
        return {"address": self.address, "url": self.url}
