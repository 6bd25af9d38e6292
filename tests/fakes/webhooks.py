"""A real HTTP receiver on 127.0.0.1 for tools and webhooks: verifies the Standard Webhooks
signature of every request (401 when it does not verify), answers per path as told, records
everything. The lifecycle and recording call tests use it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

REPORT_WAIT = 30.0
"""Longest wait for a webhook after the call ended (retries included)."""


@dataclass
class Delivery:
    """One request as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float
    signature_error: str | None
    """``None`` when ``standardwebhooks`` verified the signature."""

    @property
    def payload(self) -> Any:
        return json.loads(self.body)

    @property
    def msg_id(self) -> str:
        return self.headers.get("webhook-id", "")


@dataclass
class Reply:
    body: Any = None
    status: int = 200
    delay: float = 0.0


class Receiver:
    """Tool and webhook endpoint on 127.0.0.1: verifies the signature of every request
    (401 when it does not verify), answers per path as told, records everything."""

    def __init__(self, key: str | bytes) -> None:
        self.key = key
        self.deliveries: list[Delivery] = []
        self.replies: dict[str, Reply] = {}
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self.port = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def reply(self, path: str, body: Any = None, *, status: int = 200, delay: float = 0.0) -> None:
        self.replies[path] = Reply(body, status, delay)

    def to(self, path: str, *, status: int | None = None) -> list[Delivery]:
        return [
            d for d in self.deliveries if d.path == path and (status is None or d.status == status)
        ]

    async def wait_for(
        self, path: str, *, status: int | None = 200, count: int = 1, timeout: float = REPORT_WAIT
    ) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while len(self.to(path, status=status)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{path}: {len(self.to(path, status=status))} of {count} deliveries "
                    f"(status {status}) within {timeout:.0f} s; seen "
                    f"{[(d.path, d.status) for d in self.deliveries]}"
                )
            await asyncio.sleep(0.1)
        return self.to(path, status=status)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = dict(request.headers)
        try:
            Webhook(self.key).verify(body, headers)
            error = None
        except WebhookVerificationError as exc:
            error = str(exc) or type(exc).__name__
        reply = self.replies.get(request.path, Reply({"ok": True}))
        status = 401 if error else reply.status
        self.deliveries.append(Delivery(request.path, headers, body, status, time.time(), error))
        if reply.delay:
            # A slow receiver; also ends at stop() so the test leaves no handler behind.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), reply.delay)
        return web.json_response(reply.body if reply.body is not None else {}, status=status)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = int(server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
