"""LiveKit's own distributed engine: two livekit-server nodes sharing the session's Redis,
one worker registered with each (one call slot each, so a busy worker is full). A call
created on either node is answered, and the second call goes to the worker that is not
full, whichever node it registered with."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.audio import read_wav
from worker.dev import run_caller
from worker.dev.services import LiveKitEndpoint, LiveKitServer, WorkerProcess
from worker.settings import REPO_ROOT

pytestmark = pytest.mark.integration

FIXTURES = REPO_ROOT / "fixtures"
JOB = "received job request"


@pytest.fixture(scope="module")
def second_node(livekit: LiveKitEndpoint, redis_address: str) -> Iterator[LiveKitEndpoint]:
    with LiveKitServer(
        api_key=livekit.api_key, api_secret=livekit.api_secret, redis_address=redis_address
    ) as node:
        yield node.endpoint


async def test_calls_on_both_nodes_are_answered_by_workers_on_either(
    livekit: LiveKitEndpoint, second_node: LiveKitEndpoint, llama_base_url: str, tmp_path: Path
) -> None:
    name = f"nodes-{secrets.token_hex(3)}"
    workers = [
        WorkerProcess(
            node,
            workdir=tmp_path / f"w{i}",
            control_plane_url=f"file://{FIXTURES / 'control_plane'}",
            llm_base_url=llama_base_url,
            extra_env={
                "AGENT_NAME": name,
                "MAX_CONCURRENT_CALLS": "1",
                "LOAD_THRESHOLD": "0.75",
                "OFFLINE_PROVIDERS": "true",
                "LOG_JSON": "true",
            },
        )
        for i, node in enumerate((livekit, second_node))
    ]
    hello = json.loads((FIXTURES / "audio" / "manifest.json").read_text())["short_hello"]
    caller = read_wav(FIXTURES / "audio" / hello["file"])
    metadata = {"agentId": "agent_01JC0FRNTDESK0000000000000"}
    await asyncio.gather(*(w.astart() for w in workers))
    try:
        first = asyncio.create_task(run_caller(livekit, name, metadata, caller, tail_seconds=8.0))
        await asyncio.sleep(6.0)  # the first call's worker has reported itself full
        second = asyncio.create_task(
            run_caller(second_node, name, metadata, caller, tail_seconds=2.0)
        )
        calls = await asyncio.wait_for(asyncio.gather(first, second), 120)
    finally:
        await asyncio.gather(*(w.astop() for w in workers))
    for rec in calls:
        assert rec.speech_onsets(), f"{rec.room_name}: no agent audio"
    jobs = [w.log_text().count(JOB) for w in workers]
    assert jobs == [1, 1], jobs  # one each: the full worker got no second call
    rooms = [
        {r.get("room") for r in w.log_records() if r.get("room")} & {c.room_name for c in calls}
        for w in workers
    ]
    assert all(len(r) == 1 for r in rooms) and rooms[0] != rooms[1], rooms
