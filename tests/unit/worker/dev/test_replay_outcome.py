"""``voice-worker replay`` fails (exit 1) when the agent left the room before the call ended
and no report of that room says the worker ended it: a crashed or killed worker."""

from __future__ import annotations

from worker.dev import CallRecording
from worker.dev.replay import call_error


def recording(left_after: float | None) -> CallRecording:
    rec = CallRecording(room_name="call-1")
    rec.t0 = 1000.0
    rec.agent_left_at = None if left_after is None else 1000.0 + left_after
    return rec


def test_an_agent_that_vanishes_mid_call_without_a_report_fails_the_replay() -> None:
    error = call_error(recording(9.5), 29.0, None)
    assert error is not None and "9.5 s into the call" in error
    # a report of another room (an earlier replay into the same directory) does not count
    assert call_error(recording(9.5), 29.0, {"room_name": "call-0"}) is not None


def test_an_agent_that_ends_the_call_itself_or_stays_to_the_end_passes() -> None:
    assert call_error(recording(9.5), 29.0, {"room_name": "call-1"}) is None
    assert call_error(recording(31.0), 29.0, None) is None
    assert call_error(recording(None), 29.0, None) is None
