"""The Go caller (``worker/dev/loadgen``) completes a call against the session's LiveKit
server and worker: it publishes its pre-encoded Opus turn, hears the agent's answer (the
first loud packet after its end of speech) and decodes only while that answer is awaited."""

from __future__ import annotations

from pathlib import Path

from worker.dev.bench.stack import bench_agent, caller_scripts
from worker.dev.gocaller import PacketRecording, run_go_callers
from worker.dev.services import LiveKitEndpoint, WorkerProcess


async def test_go_caller_times_the_agents_answer(
    livekit: LiveKitEndpoint, voice_worker: WorkerProcess, tmp_path: Path
) -> None:
    script = caller_scripts(1, 1)[0]
    run = await run_go_callers(
        livekit,
        voice_worker.agent_name,
        {"agent": bench_agent("offline", 0.4)},
        [script],
        workdir=tmp_path,
        answer_timeout=25.0,
    )
    (rec,) = run.calls
    assert isinstance(rec, PacketRecording), rec
    assert len(rec.caller_turns) == 1, rec.room_name
    began, played = rec.caller_turns[0]
    end_of_speech = began + script.speech_ends[0]
    assert played - began >= script.speech_ends[0] - 0.05
    assert any(e.get("role") == "assistant" for e in rec.turn_events), rec.turn_events
    # the answer is heard after the caller stopped, not before the response delay
    (onset,) = rec.speech_onsets()
    assert 0.4 < onset - end_of_speech < 10.0, (onset, end_of_speech)
    # packets arrive every 20 ms; only the awaited answer's window is decoded
    assert rec.agent_packets > 100 and rec.packet_gaps_ms
    assert 0 < rec.decoded_packets < rec.agent_packets / 2
    assert 0 < run.cpu_seconds < run.wall_seconds
