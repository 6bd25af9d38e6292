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
import contextlib
import json
import os
import shutil
import socket
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

TOXIPROXY_VERSION = "v2.12.0"
INSTALL_COMMAND = (
    "GOBIN=.cache/toxiproxy GOFLAGS=-mod=mod go install "
    f"github.com/Shopify/toxiproxy/v2/cmd/server@{TOXIPROXY_VERSION}"
)
_ROOT = Path(__file__).resolve().parents[1]


class ToxiproxyError(RuntimeError):
    """The binary is missing, did not start, or the API refused a request."""


def find_binary() -> Path:
    """``$TOXIPROXY_BIN``, ``.cache/toxiproxy/server``, or ``toxiproxy-server`` on PATH."""
    candidates = [os.environ.get("TOXIPROXY_BIN"), str(_ROOT / ".cache/toxiproxy/server")]
    candidates.append(shutil.which("toxiproxy-server"))
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return Path(c)
    raise ToxiproxyError(f"toxiproxy server not found; build it with: {INSTALL_COMMAND}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


class ToxiproxyServer:
    """``async with ToxiproxyServer() as toxi: proxy = await toxi.proxy("dg", url)``."""

    def __init__(self, *, binary: Path | None = None, port: int | None = None) -> None:
        self.binary = binary
        self.port = port
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        binary = self.binary or find_binary()
        self.port = self.port or _free_port()
        self._proc = await asyncio.create_subprocess_exec(
            str(binary),
            "-host",
            "127.0.0.1",
            "-port",
            str(self.port),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for _ in range(100):
            if self._proc.returncode is not None:
                raise ToxiproxyError(f"toxiproxy exited with {self._proc.returncode}")
            with contextlib.suppress(ToxiproxyError):
                await self.request("GET", "/version")
                return
            await asyncio.sleep(0.05)
        await self.stop()
        raise ToxiproxyError("toxiproxy did not answer within 5 s")

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()

    async def __aenter__(self) -> ToxiproxyServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def proxy(self, name: str, upstream_url: str) -> Proxy:
        """A proxy on a free loopback port in front of ``upstream_url`` (``http://h:p``)."""
        upstream = upstream_url.split("://", 1)[-1].split("/", 1)[0]
        info = await self.request(
            "POST",
            "/proxies",
            {"name": name, "listen": "127.0.0.1:0", "upstream": upstream, "enabled": True},
        )
        return Proxy(self, name, str(info["listen"]), upstream)

    async def reset_all(self) -> None:
        """Every proxy enabled, every toxic removed."""
        await self.request("POST", "/reset")

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
