"""Webhook delivery over real sockets: an aiohttp receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from worker.call import CallRecorder
from worker.settings import REPO_ROOT
from worker.webhooks import WebhookSender, verify

pytestmark = pytest.mark.integration

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
REPO = REPO_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Receiver:
    """A webhook endpoint that can be down, failing (503) or up, and verifies signatures."""

    def __init__(self, port: int, fail_first: int = 0) -> None:
        self.port = port
        self.fail_first = fail_first
        self.seen: list[tuple[str, int]] = []
        self.bodies: list[dict[str, object]] = []
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/speko/post-call"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        verify(SECRET, dict(request.headers), body)
        status = 503 if self.fail_first > 0 else 200
        self.fail_first -= 1
        self.seen.append((request.headers["webhook-id"], status))
        if status == 200:
            self.bodies.append(json.loads(body))
        return web.Response(status=status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/speko/post-call", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@contextlib.asynccontextmanager
async def receiving(fail_first: int = 0) -> AsyncIterator[Receiver]:
    """A receiver on a free port, initially down; stopped at the end of the test's own loop."""
    r = Receiver(free_port(), fail_first)
    try:
        yield r
    finally:
        await r.stop()


def report_payload() -> dict[str, object]:
    rec = CallRecorder(call_id="session_123", agent_id="agent_1", redact=[SECRET])
    rec.add_transcript("assistant", "Hi, this is Ava.")
    return rec.finish("caller_hangup").to_payload()


async def test_receiver_down_then_up_gets_it_exactly_once(tmp_path: Path) -> None:
    # after coming up, one more 503 before the 200
    async with receiving(fail_first=1) as receiver:
        await _down_then_up(receiver, tmp_path)


async def _down_then_up(receiver: Receiver, tmp_path: Path) -> None:
    sender = WebhookSender(
        spool_dir=tmp_path,
        secret_for=lambda _agent: SECRET,
        base_delay=0.1,
        max_delay=0.4,
        max_attempts=20,
        max_elapsed=20,
        timeout=2,
    )
    delivery = asyncio.create_task(
        sender.send(receiver.url, report_payload(), kind="post_call", agent_id="agent_1")
    )
    await asyncio.sleep(0.8)  # refused connections meanwhile
    assert not delivery.done()
    assert len(sender.pending()) == 1
    await receiver.start()
    result = await asyncio.wait_for(delivery, 10)
    await asyncio.sleep(0.5)  # nothing more arrives afterwards

    assert result.delivered and result.attempts >= 3
    assert [status for _, status in receiver.seen] == [503, 200]
    assert {msg_id for msg_id, _ in receiver.seen} == {result.msg_id}
    assert len(receiver.bodies) == 1 and receiver.bodies[0]["type"] == "call.report"
    assert sender.pending() == []
    await sender.aclose()


KILLED_WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from worker.webhooks import WebhookSender

    async def main() -> None:
        sender = WebhookSender(
            spool_dir=sys.argv[1], secret_for=lambda _a: sys.argv[3],
            base_delay=30, max_delay=30, max_attempts=5, max_elapsed=600,
        )
        payload = {"type": "call.report", "call_id": "killed_call"}
        await sender.send(sys.argv[2], payload, kind="post_call", agent_id="agent_1")

    asyncio.run(main())
    """
)


async def test_report_spooled_by_a_killed_worker_is_redelivered(tmp_path: Path) -> None:
    async with receiving() as receiver:
        await _killed_then_redelivered(receiver, tmp_path)


async def _killed_then_redelivered(receiver: Receiver, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WORKER, str(tmp_path), receiver.url, SECRET], env=env
    )
    try:
        deadline = time.monotonic() + 30
        while not list(tmp_path.glob("*.json")):
            assert proc.poll() is None, "the worker exited before spooling"
            assert time.monotonic() < deadline, "nothing spooled"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # first attempt refused; the worker now sleeps in backoff
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (spooled,) = tmp_path.glob("*.json")
    assert SECRET not in spooled.read_text()
    msg_id = json.loads(spooled.read_text())["msg_id"]

    await receiver.start()
    fresh = WebhookSender(spool_dir=tmp_path, secret_for=lambda _agent: SECRET, base_delay=0.1)
    (result,) = await fresh.redeliver_spool()
    assert result.delivered and result.msg_id == msg_id
    assert receiver.seen == [(msg_id, 200)]
    assert receiver.bodies == [{"type": "call.report", "call_id": "killed_call"}]
    assert fresh.pending() == []
    assert await fresh.redeliver_spool() == []
    await fresh.aclose()
