"""IVR memory, quoting 001: ``ivr_memory_enabled`` ("does nothing" before): per dialed
number, the key path the navigator took that reached a person is remembered and replayed at
the next call's AMD verdict; the flag switches it off; no phone number is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from worker.call import CallRecorder
from worker.call.ivr_memory import IVRMemory, path_that_reached_a_person, replay

NUMBER = "+14155550123"


def navigated(*keys: tuple[str, float], person_at: float | None) -> CallRecorder:
    rec = CallRecorder(call_id="c")
    rec.add_transcript("user", "For sales press 1. For support press 2.", at=100.0)
    for digit, at in keys:
        rec.add_event("dtmf", at=at, direction="sent", digit=digit)
    if person_at is not None:
        rec.add_transcript("user", "Hi, this is Dana, how can I help?", at=person_at)
    return rec


def test_the_keys_that_got_a_person_on_the_line_are_the_path() -> None:
    rec = navigated(("1", 102.0), ("0", 106.0), ("0", 106.3), person_at=110.0)
    # a pause between menu choices (another prompt played) is kept as a space
    assert path_that_reached_a_person(rec.events("dtmf"), rec.transcript(), None) == "1 00"


def test_no_path_without_a_person_after_the_last_key_or_when_attempts_ran_out() -> None:
    rec = navigated(("1", 102.0), person_at=None)
    assert path_that_reached_a_person(rec.events("dtmf"), rec.transcript(), None) is None
    rec = navigated(("1", 102.0), person_at=110.0)
    exhausted = "amd: navigation attempts exhausted"
    assert path_that_reached_a_person(rec.events("dtmf"), rec.transcript(), exhausted) is None
    # what the caller's side pressed is not the navigator's path
    rec = CallRecorder(call_id="c")
    rec.add_event("dtmf", at=101.0, direction="received", digit="5")
    rec.add_transcript("user", "Hello?", at=103.0)
    assert path_that_reached_a_person(rec.events("dtmf"), rec.transcript(), None) is None


async def test_the_file_store_remembers_per_agent_and_number_without_the_number(
    tmp_path: Path,
) -> None:
    memory = IVRMemory(redis_url=None, directory=tmp_path)
    assert await memory.recall("agent_a", NUMBER) is None
    await memory.remember("agent_a", NUMBER, "1 0")
    assert await memory.recall("agent_a", NUMBER) == "1 0"
    assert await memory.recall("agent_b", NUMBER) is None  # scoped to the agent
    assert await memory.recall("agent_a", "+14155550199") is None
    written = "".join(p.name + p.read_text() for p in tmp_path.iterdir())
    assert NUMBER not in written and NUMBER[1:] not in written
    await memory.forget("agent_a", NUMBER)
    assert await memory.recall("agent_a", NUMBER) is None


async def test_an_old_path_is_not_replayed(tmp_path: Path) -> None:
    memory = IVRMemory(redis_url=None, directory=tmp_path)
    await memory.remember("a", NUMBER, "2")
    (entry,) = tmp_path.glob("*.json")
    entry.write_text(json.dumps({"path": "2", "at": 0}))
    assert await memory.recall("a", NUMBER) is None


async def test_replay_presses_each_key_and_records_it() -> None:
    pressed: list[tuple[int, str]] = []
    events: list[dict[str, Any]] = []

    async def publish(code: int, digit: str) -> None:
        pressed.append((code, digit))

    await replay("1 0#", publish, lambda t, **d: events.append({"type": t, **d}), gap=0, pause=0)
    assert pressed == [(1, "1"), (0, "0"), (11, "#")]
    assert [e["digit"] for e in events] == ["1", "0", "#"]
    assert all(e["type"] == "dtmf" and e["replayed"] for e in events)
