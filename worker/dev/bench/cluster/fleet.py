"""``voice-worker bench fleet [--quick]``: two livekit-server nodes sharing one Redis, worker
processes registered alternately with them (all on that Redis: ``REDIS_URL``), calls created
alternately on each node. Mid-call, the worker holding the most calls is SIGKILLed with its job
processes (a lost host); once its calls are taken over, another worker with calls up is drained
(SIGTERM). Measured at the callers and from the reports the workers wrote (``REPORT_DIR``):
every call answered, the killed worker's calls taken over, the gap the callers heard, the time
from the kill to each step of a takeover (from the surviving workers' logs), turns left
unanswered, one report per call. The nodes' logs are kept next to the workers'."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from pipelines.audio import read_wav
from pipelines.loopback import OpenAIServer
from worker.dev.agents import CONTROL_PLANE, scripted_front_desk
from worker.dev.bench.common import AUDIO_FIXTURES, percentile, progress
from worker.dev.caller import SPEECH_RMS, CallRecording, run_caller
from worker.dev.services import LiveKitEndpoint, LiveKitServer, RedisServer, WorkerProcess

ANSWER = "Of course, let me check that for you."
CALLER = "booking_two_turns"
INTO_THE_CALL = 1.0
"""Seconds after half the calls are past the caller's first turn (4-7 s of the recording:
in their checkpoint, or spoken by then) before the kill: answers under way, the second turn
(16-20 s) to come."""
SLOTS = 4
"""Call slots per worker (``MAX_CONCURRENT_CALLS``): three workers share a box that holds
about 4 calls (``bench capacity``), so 4 each, not the default 20. LiveKit places a call on
the node with the most spare capacity (the sum over its available workers of the target
load 0.7 minus each one's load) and there on a worker at random weighted by 1 - load: at
1/20 per call the node with two workers outbid the lone one until it had 14 calls more, so
the lone worker got none. At 3 slots a worker counted full at 2 calls while one was still
starting (livekit-agents adds the slot it reserved), both of a node's workers declined, and
LiveKit dropped the call (it does not try the other node)."""
PACE = 1.0
"""Seconds between calls: the workers report their load every 2.5 s, so calls created
faster than that are all placed on loads from before the first of them."""
SETTLE = 20.0
"""Seconds the drain waits for the lost calls' takeovers to settle. Draining a second worker
a second after the kill (as this bench first did) left every takeover to the last worker
and its one warm job process: the rest waited for a process to start (13 s at load 12)."""
ANSWER_WINDOW = 8.0
"""Seconds after a caller turn within which an agent reply counts as its answer."""


def _kill_tree(worker: WorkerProcess) -> None:
    assert worker.pid is not None
    tree = psutil.Process(worker.pid)
    victims = [tree, *tree.children(recursive=True)]
    for p in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(victims, timeout=10)


def _rooms(worker: WorkerProcess) -> set[str]:
    """The rooms (calls) a worker's jobs have logged so far."""
    return {str(r["room"]) for r in worker.log_records() if r.get("room")}


STEPS = (
    ("claimed", "claimed lapsed call"),
    ("dispatched", "takeover dispatch"),
    ("job_offered", "received job request"),
    ("call_started", "call started"),
)
"""The takeover's steps in the surviving workers' logs (the message each begins with)."""


def _at(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(record["timestamp"])).timestamp()


def takeover_steps(
    rec: CallRecording, call_id: str, logs: list[dict[str, Any]], killed_at: float
) -> dict[str, float | None]:
    """Seconds from the kill to each step of one call's takeover: the claim and the first
    dispatch (by call id), the job offered to a worker and the call started (by room),
    the new agent's track at the caller, the caller hearing it."""
    steps: dict[str, float | None] = {}
    for step, message in STEPS:
        times = [
            _at(r)
            for r in logs
            if str(r.get("message", "")).startswith(message)
            and (r.get("call_id") == call_id or r.get("room") == rec.room_name)
            and _at(r) > killed_at
        ]
        steps[step] = round(min(times) - killed_at, 2) if times else None
    joined = rec.agent_joined_at
    steps["agent_track"] = round(joined - killed_at, 2) if joined and joined > killed_at else None
    heard = heard_again(rec, killed_at)
    steps["heard"] = round(heard - killed_at, 2) if heard is not None else None
    return steps


def _job_ids(worker: WorkerProcess, rooms: set[str]) -> dict[str, str]:
    """Room -> the job (call id) the worker's log shows in it, for these rooms."""
    return {
        str(r["room"]): str(r["job_id"])
        for r in worker.log_records()
        if r.get("room") in rooms and r.get("job_id")
    }


async def _settled(workers: list[WorkerProcess], call_ids: set[str], timeout: float) -> None:
    """Until a surviving worker has logged the outcome of each lost call's takeover (taken
    by a new job, or reported from its checkpoint), or ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = {
            cid
            for w in workers
            for r in w.log_records()
            for cid in call_ids
            if str(r.get("message", "")).startswith(f"lapsed call {cid}: ")
            and "claimed elsewhere" not in str(r.get("message"))
        }
        if done >= call_ids:
            return
        await asyncio.sleep(0.5)
    progress(f"takeovers not settled after {timeout:.0f} s")


def _loud_times(rec: CallRecording) -> list[float]:
    return [
        at
        for at, samples in rec.agent_frames
        if float(np.sqrt(np.mean(np.square(samples)))) > SPEECH_RMS
    ]


def recovery_gap(rec: CallRecording, killed_at: float) -> float | None:
    """Caller's last agent audio before the crash to the first after (None: never again)."""
    after = heard_again(rec, killed_at)
    if after is None:
        return None
    before = [t for t in _loud_times(rec) if t <= killed_at]
    return round(after - (before[-1] if before else killed_at), 2)


def heard_again(rec: CallRecording, killed_at: float) -> float | None:
    """When the caller first heard the successor: audio stamped between the kill and the
    successor's track is the lost worker's, delivered late by a caller process that is
    behind on a busy host (it once came 2.2 s after the kill, before the new job started)."""
    joined = rec.agent_joined_at
    if joined is None or joined <= killed_at:
        return None
    return next((t for t in _loud_times(rec) if t > joined), None)


def _turns_lost(rec: CallRecording) -> int:
    """Caller turns with no agent speech within ``ANSWER_WINDOW`` after them."""
    loud = [t - rec.t0 for t in _loud_times(rec)]
    return sum(
        1 for _, end in rec.caller_turns if not any(end < t <= end + ANSWER_WINDOW for t in loud)
    )


async def _mid_call(redis_url: str, calls: int, first_turn: float, timeout: float) -> set[str]:
    """Until at least half the calls are mid-call (their checkpoint holds the caller's first
    turn, or their greeting came ``first_turn`` s ago: the caller has spoken it by then even
    when a busy host's offline STT missed it; the second turn is to come): the rooms of those
    calls. On a busy host the first calls may end before the last are answered, so not all
    of them need be."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url, decode_responses=True)
    deadline = time.monotonic() + timeout
    greeted: dict[str, float] = {}
    rooms: set[str] = set()
    up: set[str] = set()
    try:
        while time.monotonic() < deadline:
            rooms, up = set(), set()
            for key in await client.keys("vw:call:*"):
                body = json.loads(await client.get(key) or "{}")
                said = body.get("report", {}).get("transcript", [])
                room = str(body.get("room"))
                up.add(room)
                if any(e.get("role") == "assistant" for e in said):
                    greeted.setdefault(room, time.monotonic())
                heard = any(e.get("role") == "user" for e in said)
                if heard or time.monotonic() - greeted.get(room, time.monotonic()) > first_turn:
                    rooms.add(room)
            if len(rooms) >= max(1, calls // 2):
                return rooms
            await asyncio.sleep(0.25)
        progress(
            f"{len(rooms)} of {calls} calls mid-call after {timeout:.0f} s; killing with"
            f" {len(up)} calls up"
        )
        return up
    finally:
        await client.aclose()


async def bench_fleet(*, quick: bool, workdir: Path) -> dict[str, Any]:
    n_workers, n_calls = (3, 6) if quick else (4, 12)
    name = f"fleet-{secrets.token_hex(3)}"
    reports = workdir / "reports"
    manifest = json.loads((AUDIO_FIXTURES / "manifest.json").read_text())[CALLER]
    caller = read_wav(AUDIO_FIXTURES / manifest["file"])
    turns = [(float(t["start"]), float(t["end"])) for t in manifest["turns"]]
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(RedisServer())
        first = stack.enter_context(LiveKitServer(redis_address=redis.address))
        second = stack.enter_context(
            LiveKitServer(
                api_key=first.api_key, api_secret=first.api_secret, redis_address=redis.address
            )
        )
        nodes: list[LiveKitEndpoint] = [first.endpoint, second.endpoint]
        redis_url = f"redis://{redis.address}/0"
        async with OpenAIServer(reply=ANSWER) as llm:
            workers = [
                WorkerProcess(
                    nodes[i % 2],
                    workdir=workdir / f"worker{i}",
                    control_plane_url=f"file://{CONTROL_PLANE}",
                    extra_env={
                        "AGENT_NAME": name,
                        "REDIS_URL": redis_url,
                        "REPORT_DIR": str(reports),
                        "OFFLINE_PROVIDERS": "true",
                        "LOG_JSON": "true",
                        "NUM_IDLE_PROCESSES": "2",  # a takeover on top of a call finds one warm
                        "DRAIN_TIMEOUT": "40",
                        "MAX_CONCURRENT_CALLS": str(SLOTS),
                    },
                    register_timeout=180.0,  # three workers starting at once on a busy host
                )
                for i in range(n_workers)
            ]
            progress(f"{len(nodes)} nodes, {n_workers} workers")
            await asyncio.gather(*(w.astart() for w in workers))
            stopping: list[asyncio.Task[None]] = []
            try:
                record = scripted_front_desk(llm.url)
                calls = []
                for i in range(n_calls):
                    calls.append(
                        asyncio.create_task(
                            run_caller(
                                nodes[i % 2],
                                name,
                                {"agent": record},
                                caller,
                                turns=turns,
                                answer_timeout=15.0,
                                tail_seconds=3.0,
                                join_timeout=90.0,
                            )
                        )
                    )
                    await asyncio.sleep(PACE)
                first_turn = turns[0][1] - turns[0][0] + 1.0  # and the caller's pause
                live = await _mid_call(redis_url, n_calls, first_turn, timeout=45.0)
                await asyncio.sleep(INTO_THE_CALL)
                placed = [_rooms(w) for w in workers]
                killed_at = time.time()
                held = [rooms & live for rooms in placed]
                victim = max(range(n_workers), key=lambda i: len(held[i]))
                progress(f"SIGKILL worker {victim} with {len(held[victim])} calls")
                _kill_tree(workers[victim])
                lost = _job_ids(workers[victim], held[victim])
                others = [w for i, w in enumerate(workers) if i != victim]
                await _settled(others, set(lost.values()), timeout=SETTLE)
                drained = max(
                    (i for i in range(n_workers) if i != victim), key=lambda i: len(held[i])
                )
                drained_rooms = _rooms(workers[drained])
                progress(f"SIGTERM (drain) worker {drained} with {len(drained_rooms)} calls")
                stopping.append(asyncio.create_task(workers[drained].astop()))
                results = await asyncio.gather(*calls, return_exceptions=True)
                deadline = time.monotonic() + 30.0
                while len(list(reports.glob("*.json"))) < n_calls and time.monotonic() < deadline:
                    await asyncio.sleep(0.5)
            finally:
                await asyncio.gather(*stopping, return_exceptions=True)
                await asyncio.gather(*(w.astop() for w in workers), return_exceptions=True)
                for i, node in enumerate((first, second)):
                    with contextlib.suppress(OSError):
                        shutil.copy(node.log_path, workdir / f"node{i}.log")
    recs = [r for r in results if isinstance(r, CallRecording)]
    delivered = [json.loads(p.read_text()) for p in reports.glob("*.json")]
    by_room: dict[str, list[dict[str, Any]]] = {}
    for report in delivered:
        by_room.setdefault(str(report.get("room_name")), []).append(report)
    on_killed = [r for r in recs if r.room_name in held[victim]]
    gaps = [g for g in (recovery_gap(r, killed_at) for r in on_killed) if g is not None]
    logs = [r for w in others for r in w.log_records()]
    steps = [takeover_steps(r, lost.get(r.room_name, ""), logs, killed_at) for r in on_killed]
    taken = [v for x in steps if (v := x["heard"]) is not None]
    recovered = [
        r
        for r in on_killed
        if any(x["metadata"].get("recovered") for x in by_room.get(r.room_name, []))
    ]
    return {
        "nodes": len(nodes),
        "workers": n_workers,
        "calls": n_calls,
        "calls_failed": [repr(r) for r in results if not isinstance(r, CallRecording)],
        "calls_answered": sum(1 for r in recs if r.speech_onsets()),
        "calls_per_worker": [len(p) for p in placed],
        "calls_mid_call_at_kill": len(live),
        "calls_on_killed_worker": len(on_killed),
        "calls_recovered": len(recovered),
        "recovery_gap_s": {
            "p50": percentile(gaps, 50),
            "p95": percentile(gaps, 95),
            "max": max(gaps) if gaps else None,
            "never_heard_again": len(on_killed) - len(gaps),
        },
        "taken_over_s": {
            "p50": percentile(taken, 50),
            "p95": percentile(taken, 95),
            "max": max(taken) if taken else None,
        },
        "recovery_steps_s": {
            step: percentile([v for x in steps if (v := x[step]) is not None], 50)
            for step in steps[0]
        }
        if steps
        else {},
        "recovery_steps_per_call_s": steps,
        "turns_lost": sum(_turns_lost(r) for r in recs),
        "turns": sum(len(r.caller_turns) for r in recs),
        "reports_delivered": sum(1 for r in recs if len(by_room.get(r.room_name, [])) == 1),
        "reports_duplicated": sum(1 for r in recs if len(by_room.get(r.room_name, [])) > 1),
        "reports_expected": n_calls,
        "drained_calls": sum(
            1 for r in recs if r.room_name in drained_rooms and by_room.get(r.room_name)
        ),
        "drained_calls_up": len(drained_rooms),
    }
