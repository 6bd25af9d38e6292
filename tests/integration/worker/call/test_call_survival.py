"""Calls outlive their worker: two worker processes share a Redis (``REDIS_URL``); the one
holding a call is SIGKILLed (with its job processes) after the caller's first turn. The
other takes the call over: the caller hears the agent again, the conversation goes on, and
ONE report covers both parts and says it was recovered. With no other worker up, the next
worker to start delivers the report from the checkpoint."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest
from livekit import rtc

from pipelines.audio import read_wav
from pipelines.loopback import OpenAIServer
from tests.fakes import Receiver
from worker.call.checkpoint import CallStore
from worker.dev import run_caller
from worker.dev.agents import scripted_front_desk
from worker.dev.services import LiveKitEndpoint, WorkerProcess
from worker.settings import REPO_ROOT

pytestmark = pytest.mark.integration

FIXTURES = REPO_ROOT / "fixtures"
ANSWER = "Of course, let me check that for you."
SECRET = f"hook-{secrets.token_hex(12)}"
REDIS_DB = 3
FLUSH_SECONDS = 1.0
"""Audio a job had queued for the room when it stalled plays out when it wakes, before
it finds itself fenced (its next lease renewal, within a quarter lease)."""


def agent(llm: OpenAIServer, hooks: Receiver) -> dict[str, Any]:
    """The front desk on the offline STT/TTS with a scripted LLM, and webhooks."""
    return scripted_front_desk(
        llm.url, {"status": hooks.url("/status"), "postCall": hooks.url("/post-call")}
    )


def fleet_worker(
    livekit: LiveKitEndpoint, workdir: Path, redis_address: str, agent_name: str
) -> WorkerProcess:
    worker = WorkerProcess(
        livekit,
        workdir=workdir,
        control_plane_url=f"file://{FIXTURES / 'control_plane'}",
        extra_env={
            "LOG_JSON": "true",
            "OFFLINE_PROVIDERS": "true",
            "WEBHOOK_SECRET": SECRET,
            "REDIS_URL": f"redis://{redis_address}/{REDIS_DB}",
            "AGENT_NAME": agent_name,
            "NUM_IDLE_PROCESSES": "1",
        },
    )
    worker.agent_name = agent_name
    return worker


def kill_tree(process: WorkerProcess) -> None:
    """SIGKILL the worker and its job processes at once, as a node loss would."""
    assert process.pid is not None
    tree = psutil.Process(process.pid)
    victims = [tree, *tree.children(recursive=True)]
    for p in victims:
        p.kill()
    psutil.wait_procs(victims, timeout=10)


async def first_turn_heard(store: CallStore, timeout: float = 60.0) -> dict[str, Any]:
    """The checkpoint of the (only) call once it holds the caller's first turn."""
    deadline = time.monotonic() + timeout
    seen: list[Any] = []
    while time.monotonic() < deadline:
        seen = await store.redis.keys("vw:*")
        for key in await store.redis.keys("vw:call:*"):
            checkpoint = await store.load(key.removeprefix("vw:call:"))
            transcript = (checkpoint or {}).get("report", {}).get("transcript", [])
            if any(e["role"] == "user" for e in transcript):
                return checkpoint or {}
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no checkpoint with the caller's first turn; keys {seen}")


def holder(workers: Sequence[WorkerProcess], room: str) -> WorkerProcess:
    (found,) = [w for w in workers if any(r.get("room") == room for r in w.log_records())]
    return found


def booking() -> tuple[Any, list[tuple[float, float]]]:
    entry = json.loads((FIXTURES / "audio" / "manifest.json").read_text())["booking_two_turns"]
    turns = [(float(t["start"]), float(t["end"])) for t in entry["turns"]]
    return read_wav(FIXTURES / "audio" / entry["file"]), turns


async def test_a_call_survives_the_sigkill_of_its_worker(
    livekit: LiveKitEndpoint, redis_address: str, tmp_path: Path
) -> None:
    name = f"fleet-{secrets.token_hex(3)}"
    workers = [fleet_worker(livekit, tmp_path / f"w{i}", redis_address, name) for i in (0, 1)]
    store = CallStore(f"redis://{redis_address}/{REDIS_DB}")
    caller, turns = booking()
    async with Receiver(SECRET.encode()) as hooks, OpenAIServer(reply=ANSWER) as llm:
        await asyncio.gather(*(w.astart() for w in workers))
        try:
            call = asyncio.create_task(
                run_caller(
                    livekit,
                    name,
                    {"agent": agent(llm, hooks)},
                    caller,
                    turns=turns,
                    answer_timeout=20.0,
                    tail_seconds=3.0,
                )
            )
            checkpoint = await first_turn_heard(store)
            victim = holder(workers, checkpoint["room"])
            killed_at = time.time()
            kill_tree(victim)
            rec = await asyncio.wait_for(call, 120)
            (delivered,) = await hooks.wait_for("/post-call", timeout=30)
            await asyncio.sleep(3.0)  # a second report would have come by now
        finally:
            await asyncio.gather(*(w.astop() for w in workers))
            await store.aclose()
    assert len(hooks.to("/post-call")) == 1
    report = delivered.payload
    assert report["metadata"].get("recovered") is True
    assert "recovered" in [e["type"] for e in report["events"]]
    said = [(e["role"], e["text"]) for e in report["transcript"]]
    lines = [text for role, text in said if role == "assistant"]
    # both parts in one transcript: the greeting and the first turn from before the crash,
    # the apology naming the caller's words after it, then the call goes on
    assert said[0][0] == "assistant" and said[1][0] == "user", said
    sorry = [i for i, text in enumerate(lines) if text.startswith("Sorry, I lost you")]
    assert sorry, lines
    # the turn the lost worker never answered is answered (the caller may cut it short)
    assert any(ANSWER.startswith(text) for text in lines[sorry[0] + 1 :]), lines
    # the successor's voice, after its track: onsets stamped between the kill and that are
    # the lost worker's audio reaching the caller late (seen 1.2 s after the kill, before
    # any worker could have claimed the call: the lease alone runs 1.1-1.5 s)
    joined = rec.agent_joined_at
    assert joined is not None and joined > killed_at, "no successor's track after the kill"
    back = [t for t in rec.speech_onsets() if rec.t0 + t > joined]
    assert back, "the caller never heard the agent again"
    gap = rec.t0 + back[0] - killed_at
    print(f"successor heard {gap:.2f} s after the kill (its track at {joined - killed_at:.2f} s)")
    assert gap < 10.0, gap


async def test_a_call_whose_worker_dies_alone_is_reported_by_the_next_worker(
    livekit: LiveKitEndpoint, redis_address: str, tmp_path: Path
) -> None:
    name = f"fleet-{secrets.token_hex(3)}"
    first = fleet_worker(livekit, tmp_path / "w0", redis_address, name)
    store = CallStore(f"redis://{redis_address}/{REDIS_DB}")
    caller, turns = booking()
    async with Receiver(SECRET.encode()) as hooks, OpenAIServer(reply=ANSWER) as llm:
        await first.astart()
        try:
            call = asyncio.create_task(
                run_caller(
                    livekit,
                    name,
                    {"agent": agent(llm, hooks)},
                    caller,
                    turns=turns[:1],
                    answer_timeout=3.0,
                    tail_seconds=1.0,
                    leave_timeout=1.0,
                )
            )
            checkpoint = await first_turn_heard(store)
            kill_tree(first)
            await asyncio.wait_for(call, 60)  # the caller hangs up: nobody answers
        finally:
            await first.astop()
        assert not hooks.to("/post-call")
        second = fleet_worker(livekit, tmp_path / "w1", redis_address, name)
        await second.astart()
        try:
            (delivered,) = await hooks.wait_for("/post-call", timeout=30)
            statuses = await hooks.wait_for("/status", timeout=10)
        finally:
            await second.astop()
            await store.aclose()
    report = delivered.payload
    assert report["room_name"] == checkpoint["room"]
    assert "worker_lost" in [e["type"] for e in report["events"]]
    assert "worker lost" in report["end_reason"]
    assert [e["role"] for e in report["transcript"]][:2] == ["assistant", "user"]
    assert any(s.payload["event_type"] == "call.hangup" for s in statuses)


def signal_tree(process: WorkerProcess, sig: int) -> None:
    """SIGSTOP/SIGCONT the worker and its job processes: a worker that hangs, then wakes."""
    assert process.pid is not None
    tree = psutil.Process(process.pid)
    for p in [tree, *tree.children(recursive=True)]:
        # a job process may exit between the listing and its signal (a call ending)
        with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
            p.send_signal(sig)


async def test_a_worker_that_only_stalls_leaves_the_call_to_its_successor(
    livekit: LiveKitEndpoint, redis_address: str, tmp_path: Path
) -> None:
    """No two agents in one room: the stalled worker (still registered with LiveKit, which
    may offer it the takeover job too) wakes up fenced and its agent leaves without a word;
    the successor speaks and writes the one report."""
    name = f"fleet-{secrets.token_hex(3)}"
    workers = [fleet_worker(livekit, tmp_path / f"w{i}", redis_address, name) for i in (0, 1)]
    store = CallStore(f"redis://{redis_address}/{REDIS_DB}")
    caller, turns = booking()
    joined: list[tuple[str, float]] = []
    left: list[tuple[str, float]] = []
    speaking: list[tuple[str, float]] = []

    def on_joined(p: rtc.RemoteParticipant) -> None:
        if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            joined.append((p.identity, time.time()))

    def on_left(p: rtc.RemoteParticipant) -> None:
        if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            left.append((p.identity, time.time()))

    def on_speakers(speakers: list[rtc.Participant]) -> None:
        speaking.extend((p.identity, time.time()) for p in speakers)

    async with Receiver(SECRET.encode()) as hooks, OpenAIServer(reply=ANSWER) as llm:
        await asyncio.gather(*(w.astart() for w in workers))
        try:
            call = asyncio.create_task(
                run_caller(
                    livekit,
                    name,
                    {"agent": agent(llm, hooks)},
                    caller,
                    turns=turns,
                    answer_timeout=20.0,
                    tail_seconds=3.0,
                    room_events={
                        "participant_connected": on_joined,
                        "participant_disconnected": on_left,
                        "active_speakers_changed": on_speakers,
                    },
                )
            )
            checkpoint = await first_turn_heard(store)
            stalled = holder(workers, checkpoint["room"])
            held = await store.holder(checkpoint["report"]["call_id"])
            assert held is not None
            original = f"agent-{held[1]}"  # the holding job's agent
            stalled_at = time.time()
            signal_tree(stalled, signal.SIGSTOP)
            await asyncio.sleep(5.0)  # well past its lease: the other worker takes over
            woke_at = time.time()
            signal_tree(stalled, signal.SIGCONT)
            rec = await asyncio.wait_for(call, 120)
            (delivered,) = await hooks.wait_for("/post-call", timeout=30)
            await asyncio.sleep(3.0)  # a second report would have come by now
        finally:
            for w in workers:  # none is left stopped, whatever failed
                with contextlib.suppress(psutil.Error, AssertionError):
                    signal_tree(w, signal.SIGCONT)
            await asyncio.gather(*(w.astop() for w in workers))
            await store.aclose()
    assert len(hooks.to("/post-call")) == 1
    assert delivered.payload["metadata"].get("recovered") is True
    successors = {who for who, at in joined if at > stalled_at and who != original}
    assert successors, joined
    assert rec.agent_identity in successors  # the caller heard a successor last
    gone = [at for who, at in left if who == original]
    assert gone, f"the stalled agent never left: joined {joined}, left {left}"
    print(f"the stalled agent left {gone[0] - woke_at:.2f} s after waking")
    assert gone[0] - woke_at < 5.0
    # without a new word: no speech heard from it after the audio it had queued before the
    # stall (up to FLUSH_SECONDS of it may play out on waking; the turn it was speaking
    # then ends)
    late = [at - woke_at for who, at in speaking if who == original and at > woke_at]
    print(f"the stalled agent heard at {late} s after waking")
    assert not [t for t in late if t > FLUSH_SECONDS], speaking
    # the successor is the one heard after the takeover. (While the stalled worker is stopped it
    # sends nothing, yet the server may keep listing it among the active speakers with the last
    # audio level it saw: those events say nothing of speech, so only after waking counts above.)
    assert {who for who, at in speaking if at > stalled_at} & successors, speaking
