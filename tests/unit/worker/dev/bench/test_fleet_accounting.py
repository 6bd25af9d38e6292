"""``bench fleet``'s takeover accounting: what counts as the caller hearing the successor, and
the steps read from the surviving workers' logs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from worker.dev.bench.cluster.fleet import heard_again, recovery_gap, takeover_steps
from worker.dev.caller import CallRecording

KILL = 1_000_000.0
LOUD = np.full(480, 0.3, dtype=np.float32)
QUIET = np.zeros(480, dtype=np.float32)


def _rec(frames: list[tuple[float, np.ndarray[Any, Any]]], joined: float | None) -> CallRecording:
    rec = CallRecording(room_name="call-1", t0=KILL - 30.0)
    rec.agent_frames = [(KILL + at, samples) for at, samples in frames]
    rec.agent_joined_at = None if joined is None else KILL + joined
    return rec


def _log(message: str, at: float, **fields: str) -> dict[str, Any]:
    stamp = datetime.fromtimestamp(KILL + at, tz=UTC).isoformat()
    return {"message": message, "timestamp": stamp, **fields}


def test_the_lost_workers_late_audio_is_not_the_successor() -> None:
    # the old agent spoke until 4 s before the kill; frames stamped 0.5 s after the kill
    # (delivered late) are its own; the successor's track arrives at 2.5 s, speaks at 3.0 s
    rec = _rec([(-4.0, LOUD), (0.5, LOUD), (2.6, QUIET), (3.0, LOUD)], joined=2.5)
    assert heard_again(rec, KILL) == KILL + 3.0
    assert recovery_gap(rec, KILL) == 7.0  # the gap: last audio before -> first after


def test_no_successor_track_is_never_heard_again() -> None:
    rec = _rec([(-1.0, LOUD), (0.5, LOUD)], joined=-20.0)
    assert heard_again(rec, KILL) is None
    assert recovery_gap(rec, KILL) is None


def test_steps_are_seconds_from_the_kill_by_call_id_and_room() -> None:
    logs = [
        _log("claimed lapsed call AJ_1 at epoch 2", 1.6, call_id="AJ_1"),
        _log("claimed lapsed call AJ_2 at epoch 2", 0.9, call_id="AJ_2"),  # another call
        _log("takeover dispatch AD_1 sent for call AJ_1", 1.7, call_id="AJ_1"),
        _log("received job request", -30.0, room="call-1"),  # the call's first job
        _log("received job request", 1.9, room="call-1"),
        _log("call started", 3.0, room="call-1"),
    ]
    rec = _rec([(3.4, LOUD)], joined=3.3)
    assert takeover_steps(rec, "AJ_1", logs, KILL) == {
        "claimed": 1.6,
        "dispatched": 1.7,
        "job_offered": 1.9,
        "call_started": 3.0,
        "agent_track": 3.3,
        "heard": 3.4,
    }
