"""A rolling restart: two workers take calls under one agent name; the one holding a call
gets SIGTERM. LiveKit sends the next call to the other worker at once, the draining
worker's call goes on until the drain deadline and then ends with a goodbye, every call
gets its report, and the drained worker exits by itself."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from pipelines.audio import read_wav
from pipelines.loopback import OpenAIServer, WireServer
from tests.fakes import Receiver
from worker.dev import run_caller
from worker.dev.agents import scripted_front_desk
from worker.dev.services import LiveKitEndpoint, WorkerProcess
from worker.plan.resolve import GOODBYE
from worker.settings import REPO_ROOT

pytestmark = pytest.mark.integration

FIXTURES = REPO_ROOT / "fixtures"
ANSWER = "Of course, let me check that for you."
SECRET = f"hook-{secrets.token_hex(12)}"
DRAIN_SECONDS = 20.0
JOB = "received job request"


def front_desk(llm: WireServer, hooks: Receiver) -> dict[str, Any]:
    return scripted_front_desk(llm.url, {"postCall": hooks.url("/post-call")})


async def exit_of(worker: WorkerProcess, timeout: float) -> float | None:
    """When the worker process exited by itself (None: still up after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while worker.running and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return None if worker.running else time.time()


async def test_a_rolling_restart_moves_new_calls_and_drains_the_old(
    livekit: LiveKitEndpoint, tmp_path: Path
) -> None:
    name = f"roll-{secrets.token_hex(3)}"
    workers = [
        WorkerProcess(
            livekit,
            workdir=tmp_path / f"w{i}",
            control_plane_url=f"file://{FIXTURES / 'control_plane'}",
            extra_env={
                "AGENT_NAME": name,
                "OFFLINE_PROVIDERS": "true",
                "LOG_JSON": "true",
                "WEBHOOK_SECRET": SECRET,
                "NUM_IDLE_PROCESSES": "1",
                "DRAIN_TIMEOUT": str(DRAIN_SECONDS),
            },
        )
        for i in (0, 1)
    ]
    entry = json.loads((FIXTURES / "audio" / "manifest.json").read_text())["booking_two_turns"]
    caller = read_wav(FIXTURES / "audio" / entry["file"])
    turns = [(float(t["start"]), float(t["end"])) for t in entry["turns"]]
    async with Receiver(SECRET.encode()) as hooks, OpenAIServer(reply=ANSWER) as llm:
        await asyncio.gather(*(w.astart() for w in workers))
        try:
            record = {"agent": front_desk(llm, hooks)}
            old = asyncio.create_task(
                # the caller stays until the agent leaves: the drain's goodbye ends the call
                run_caller(livekit, name, record, caller, turns=turns, tail_seconds=40.0)
            )
            while not any(JOB in w.log_text() for w in workers):
                await asyncio.sleep(0.1)
            (draining,) = [w for w in workers if JOB in w.log_text()]
            (other,) = [w for w in workers if w is not draining]
            await asyncio.sleep(4.0)  # the call is up: the greeting has played
            assert draining.pid is not None
            os.kill(draining.pid, signal.SIGTERM)  # one SIGTERM: drain
            sigterm_at = time.time()
            new = await asyncio.wait_for(
                run_caller(livekit, name, record, caller, turns=turns[:1], tail_seconds=2.0),
                90,
            )
            first = await asyncio.wait_for(old, 90)
            delivered = await hooks.wait_for("/post-call", count=2, timeout=30)
            exited = await exit_of(draining, DRAIN_SECONDS + 15)
        finally:
            await asyncio.gather(*(w.astop() for w in workers))
    # the new call went to the other worker at once, the draining one took no job
    assert new.speech_onsets(), "the new call was not answered"
    assert new.room_name in other.log_text()
    assert draining.log_text().count(JOB) == 1
    assert new.agent_joined_at is not None and new.agent_joined_at - sigterm_at < 15.0
    # the old call went on, then ended with a goodbye at the drain deadline
    assert first.agent_left_at is not None
    assert first.agent_left_at - sigterm_at < DRAIN_SECONDS + 3.0
    assert [t for t in first.speech_onsets() if first.t0 + t > sigterm_at + 1.0]
    reports = {d.payload["room_name"]: d.payload for d in delivered}
    assert set(reports) == {first.room_name, new.room_name}
    said = [e["text"] for e in reports[first.room_name]["transcript"] if e["role"] == "assistant"]
    assert GOODBYE in said, said
    assert "draining" in str(reports[first.room_name]["end_reason"])
    assert exited is not None, "the drained worker did not exit by itself"
    print(f"drained worker exited {exited - sigterm_at:.1f} s after SIGTERM")
