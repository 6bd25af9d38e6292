"""Toxiproxy (Shopify's TCP fault proxy) as a child process on loopback, and its HTTP API.

Built from the Go module proxy like the LiveKit server, into its own directory because
its command package is also named ``server``::

    GOBIN=.cache/toxiproxy GOFLAGS=-mod=mod \\
        go install github.com/Shopify/toxiproxy/v2/cmd/server@v2.12.0

Faults as toxics on a proxy between a plugin and a provider server:

    reset()      reset_peer both ways: TCP RST on every connection (connection reset)
    stall()      timeout with timeout=0: data stops, the connection stays open
    latency(ms)  latency: each chunk delayed
    slow(kbps)   bandwidth;  slicer(...) splits data into small delayed pieces
    refuse()     the proxy disabled: open connections close, new ones are refused
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from worker.dev.services.process import LOOPBACK, ManagedProcess, free_port
from worker.settings import REPO_ROOT

TOXIPROXY_VERSION = "v2.12.0"
INSTALL_COMMAND = (
    "GOBIN=.cache/toxiproxy GOFLAGS=-mod=mod go install "
    f"github.com/Shopify/toxiproxy/v2/cmd/server@{TOXIPROXY_VERSION}"
)


class ToxiproxyError(RuntimeError):
    """The binary is missing, did not start, or the API refused a request."""


def find_binary() -> Path:
    """``$TOXIPROXY_BIN``, ``.cache/toxiproxy/server``, or ``toxiproxy-server`` on PATH."""
    candidates = [os.environ.get("TOXIPROXY_BIN"), str(REPO_ROOT / ".cache/toxiproxy/server")]
    candidates.append(shutil.which("toxiproxy-server"))
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return Path(c)
    raise ToxiproxyError(f"toxiproxy server not found; build it with: {INSTALL_COMMAND}")


class Proxy:
    """One named proxy: ``listen`` is where clients connect instead of ``upstream``."""

    def __init__(self, server: ToxiproxyServer, name: str, listen: str, upstream: str) -> None:
        self.server = server
        self.name = name
        self.listen = listen
        self.upstream = upstream

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the listening side."""
        return f"http://{self.listen}"

    async def add_toxic(
        self,
        kind: str,
        *,
        name: str | None = None,
        stream: str = "downstream",
        toxicity: float = 1.0,
        **attributes: Any,
    ) -> str:
        toxic = name or f"{kind}_{stream}"
        await self.server.request(
            "POST",
            f"/proxies/{self.name}/toxics",
            {
                "name": toxic,
                "type": kind,
                "stream": stream,
                "toxicity": toxicity,
                "attributes": attributes,
            },
        )
        return toxic

    async def remove_toxic(self, name: str) -> None:
        await self.server.request("DELETE", f"/proxies/{self.name}/toxics/{name}")

    async def reset(self) -> None:
        # both directions: the RST goes out with the next data either side sends
        for stream in ("downstream", "upstream"):
            await self.add_toxic("reset_peer", stream=stream, timeout=0)

    async def stall(self) -> str:
        return await self.add_toxic("timeout", timeout=0)

    async def latency(self, ms: int, jitter: int = 0) -> str:
        return await self.add_toxic("latency", latency=ms, jitter=jitter)

    async def slow(self, kbps: int) -> str:
        return await self.add_toxic("bandwidth", rate=kbps)

    async def slicer(self, average_size: int = 64, delay_us: int = 10_000) -> str:
        return await self.add_toxic(
            "slicer", average_size=average_size, size_variation=0, delay=delay_us
        )

    async def refuse(self) -> None:
        await self.server.request("PATCH", f"/proxies/{self.name}", {"enabled": False})

    async def restore(self) -> None:
        """No toxics, enabled."""
        info = await self.server.request("GET", f"/proxies/{self.name}")
        for toxic in info.get("toxics") or []:
            await self.remove_toxic(str(toxic["name"]))
        await self.server.request("PATCH", f"/proxies/{self.name}", {"enabled": True})


class ToxiproxyServer(ManagedProcess):
    """``async with ToxiproxyServer() as toxi: proxy = await toxi.proxy("dg", url)``."""

    name = "toxiproxy"

    def __init__(self, *, binary: Path | None = None, port: int | None = None) -> None:
        super().__init__(startup_timeout=10.0)
        self.binary = binary
        self.port = port or free_port()

    @property
    def api(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _command(self) -> list[str]:
        binary = self.binary or find_binary()
        return [str(binary), "-host", LOOPBACK, "-port", str(self.port)]

    def _ready_url(self) -> str:
        return f"{self.api}/version"

    async def proxy(self, name: str, upstream_url: str) -> Proxy:
        """A proxy on a free loopback port in front of ``upstream_url`` (``http://h:p``)."""
        upstream = upstream_url.split("://", 1)[-1].split("/", 1)[0]
        info = await self.request(
            "POST",
            "/proxies",
            {"name": name, "listen": "127.0.0.1:0", "upstream": upstream, "enabled": True},
        )
        return Proxy(self, name, str(info["listen"]), upstream)

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        return await asyncio.to_thread(self._request, method, path, body)

    def _request(self, method: str, path: str, body: Any) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.api}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise ToxiproxyError(f"{method} {path}: {exc.code} {exc.read()[:200]!r}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ToxiproxyError(f"{method} {path}: {exc}") from exc
        return json.loads(raw) if raw.strip() else None
