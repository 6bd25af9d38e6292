"""The Go caller's JSON output read back as recordings the latency bench's ``turn_rows``
reads, and a clear error naming the field when it is not what the loadgen writes."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from pipelines.audio import Audio
from worker.dev.bench.latency import turn_rows
from worker.dev.bench.stack import CallScript, FixedDelays
from worker.dev.gocaller import PacketRecording, parse_loadgen_output

T0 = 1_800_000_000.0


def output(**call: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "room": "call-0a1b2c3d",
        "t0": T0,
        "caller_turns": [[2.0, 4.0], [7.0, 9.0]],
        "onsets": [4.9, 9.95],
        "turn_events": [
            {"role": "assistant", "at": T0 + 1.5, "metrics": {}},
            {
                "role": "user",
                "at": T0 + 4.3,
                "metrics": {"stopped_speaking_at": T0 + 3.9, "transcription_delay": 0.2},
            },
            {
                "role": "assistant",
                "at": T0 + 6.0,
                "metrics": {"started_speaking_at": T0 + 4.83},
            },
        ],
        "agent_identity": "agent-AJ_x",
        "agent_joined_at": T0 - 0.5,
        "agent_packets": 600,
        "decoded_packets": 80,
        "packet_gaps_ms": [20.1, 19.8, 35.0],
    }
    base.update(call)
    return {
        "calls": [base, {"room": "call-ffff0000", "error": "no agent audio track"}],
        "cpu_seconds": 1.5,
        "wall_seconds": 30.0,
        "max_rss_mb": 42.0,
    }


def test_calls_become_recordings_and_errors() -> None:
    run = parse_loadgen_output(json.dumps(output()))
    rec, failed = run.calls
    assert isinstance(rec, PacketRecording)
    assert rec.caller_turns == [(2.0, 4.0), (7.0, 9.0)]
    assert rec.speech_onsets() == [4.9, 9.95]
    assert rec.packet_gaps_ms == [20.1, 19.8, 35.0]
    assert (rec.agent_packets, rec.decoded_packets) == (600, 80)
    assert isinstance(failed, RuntimeError) and "call-ffff0000" in str(failed)
    assert run.cpu_percent == pytest.approx(5.0)


def test_turn_rows_read_a_go_callers_recording() -> None:
    rec = parse_loadgen_output(json.dumps(output())).calls[0]
    assert isinstance(rec, PacketRecording)
    script = CallScript(
        "f", Audio(np.zeros(16000, dtype=np.float32), 16000), ((0, 2), (3, 5)), (1.8, 1.9)
    )
    rows = turn_rows(0, rec, script, stack="fixed", response_delay=0.4, delays=FixedDelays())
    first, second = rows
    # end of speech 2.0 + 1.8 = 3.8; first loud packet 4.9
    assert first.e2e == pytest.approx(1.1)
    # worker clock: started speaking 4.83 - VAD end 3.9 - max(0.4, 0.2 + 0.2 + 0.15)
    assert first.worker_own_clock == pytest.approx(0.93 - 0.55)
    assert second.e2e == pytest.approx(9.95 - 8.9) and second.worker_own_clock is None


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"t0": "soon"}, "calls[0].t0"),
        ({"packet_gaps_ms": None}, "calls[0].packet_gaps_ms"),
        ({"caller_turns": [[1.0]]}, "calls[0].caller_turns"),
    ],
)
def test_bad_output_names_the_field(change: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named.replace("[", r"\[").replace("]", r"\]")):
        parse_loadgen_output(json.dumps(output(**change)))


def test_not_json_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        parse_loadgen_output("panic: runtime error")
