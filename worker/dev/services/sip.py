"""livekit-sip (v1.0.0, built from the Go module proxy into ``.cache/bin``) on loopback: the
SIP side of LiveKit. It talks to the LiveKit server through their shared Redis, answers and
places SIP calls on ``sip_port`` (UDP and TCP) and carries their audio as RTP on a port range.

The proxy serves the module only at that exact version and refuses its version list, so
``go install ...@v1.0.0`` fails; ``build_livekit_sip`` builds it from a throwaway module that
requires it (the module's own ``go.sum``, no checksum-database entry)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from worker.dev.services.livekit import LiveKitEndpoint
from worker.dev.services.process import CACHE_BIN, LOOPBACK, ManagedProcess, ServiceError, free_port

LIVEKIT_SIP_VERSION = "v1.0.0"
LIVEKIT_SIP_MODULE = "github.com/livekit/sip"
SIP_BINARY = CACHE_BIN / "livekit-sip"
RTP_PORTS = 200
"""RTP ports per livekit-sip instance (two per call leg): a free contiguous range is probed."""


def _go(args: list[str], cwd: Path, env: dict[str, str]) -> None:
    proc = subprocess.run(["go", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ServiceError(f"go {' '.join(args)} failed:\n{proc.stderr[-2000:]}")


def build_livekit_sip(target: Path = SIP_BINARY) -> Path:
    """``target``, built when missing (cgo: Debian libopus-dev, libopusfile-dev, libsoxr-dev)."""
    if target.is_file() and os.access(target, os.X_OK):
        return target
    if shutil.which("go") is None:
        raise ServiceError("livekit-sip is not built and Go is not installed (scripts/setup.sh)")
    env = {
        **os.environ,
        "GONOSUMDB": LIVEKIT_SIP_MODULE,
        "GOFLAGS": "-mod=mod",
        "CGO_ENABLED": "1",
    }
    with tempfile.TemporaryDirectory(prefix="livekit-sip-build-") as tmp:
        work = Path(tmp)
        (work / "go.mod").write_text(
            f"module voiceworker/sipbuild\n\ngo 1.24\n\n"
            f"require {LIVEKIT_SIP_MODULE} {LIVEKIT_SIP_VERSION}\n"
        )
        command = f"{LIVEKIT_SIP_MODULE}/cmd/livekit-sip"
        (work / "tools.go").write_text(
            f'//go:build tools\n\npackage tools\n\nimport _ "{command}"\n'
        )
        _go(["mod", "download", f"{LIVEKIT_SIP_MODULE}@{LIVEKIT_SIP_VERSION}"], work, env)
        modcache = subprocess.run(
            ["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True
        ).stdout.strip()
        upstream_sum = Path(modcache) / f"{LIVEKIT_SIP_MODULE}@{LIVEKIT_SIP_VERSION}" / "go.sum"
        (work / "go.sum").write_bytes(upstream_sum.read_bytes())
        _go(["mod", "tidy"], work, env)
        target.parent.mkdir(parents=True, exist_ok=True)
        _go(["build", "-o", str(target), f"{LIVEKIT_SIP_MODULE}/cmd/livekit-sip"], work, env)
    return target


def free_udp_range(count: int) -> int:
    """The first port of ``count`` consecutive UDP ports free on loopback now."""
    for _ in range(50):
        start = free_port(socket.SOCK_DGRAM)
        if start + count > 65535:
            continue
        socks: list[socket.socket] = []
        try:
            for port in range(start, start + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind((LOOPBACK, port))
            return start
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise ServiceError(f"no {count} consecutive free UDP ports on {LOOPBACK}")


class LiveKitSIP(ManagedProcess):
    """One livekit-sip bound to 127.0.0.1, registered with ``livekit`` through ``redis_address``
    (the same Redis the LiveKit server was started with)."""

    name = "livekit-sip"
    sigterm_shares = (0.3, 0.7)
    """The first SIGTERM waits for calls to end; the second stops them."""

    def __init__(
        self,
        livekit: LiveKitEndpoint,
        *,
        redis_address: str,
        sip_port: int | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        super().__init__(startup_timeout=startup_timeout)
        self.livekit = livekit
        self.redis_address = redis_address
        self.sip_port = sip_port or free_port()
        self.rtp_start = free_udp_range(RTP_PORTS)

    @property
    def address(self) -> str:
        """Where SIP phones and trunks send INVITEs (``host:port``, UDP or TCP)."""
        return f"{LOOPBACK}:{self.sip_port}"

    def config_yaml(self) -> str:
        return "\n".join(
            [
                f"api_key: {self.livekit.api_key}",
                f"api_secret: {self.livekit.api_secret}",
                f"ws_url: {self.livekit.url}",
                "redis:",
                f"  address: {self.redis_address}",
                f"sip_port: {self.sip_port}",
                f"sip_port_listen: {self.sip_port}",
                f"rtp_port: {self.rtp_start}-{self.rtp_start + RTP_PORTS - 1}",
                "use_external_ip: false",
                f"nat_1_to_1_ip: {LOOPBACK}",
                f"listen_ip: {LOOPBACK}",
                # Admission by CPU idle refuses calls ("cpu exhausted") whenever a test box is
                # busy; on loopback every call is one we placed on purpose.
                "max_cpu_utilization: 1.0",
                "logging:",
                "  level: debug",
                "",
            ]
        )

    def _command(self) -> list[str]:
        binary = Path(os.environ.get("LIVEKIT_SIP_BIN", SIP_BINARY))
        if not binary.is_file():
            raise ServiceError(
                f"livekit-sip not found at {binary}; build it with scripts/setup.sh "
                "(or python -m worker.dev.services sip --build)"
            )
        config = self.workdir / "sip.yaml"
        config.write_text(self.config_yaml())
        return [str(binary), "--config", str(config)]

    def _ready(self) -> bool:
        # logged once its RPC handlers are registered with LiveKit through Redis
        return "service ready" in self.log_text()

    def _awaiting(self) -> str:
        return f"for SIP signaling on {self.address}"

    def _reach(self) -> dict[str, str]:
        return {"address": self.address, "rtp": f"{self.rtp_start}+{RTP_PORTS}"}
