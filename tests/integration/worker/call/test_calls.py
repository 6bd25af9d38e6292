"""Real calls in a real LiveKit room: one worker process (``python -m worker start``) on the
offline stack takes dispatched jobs; a caller joins with the LiveKit rtc SDK, plays a
fixture recording in real time and records what the agent says.

What the caller hears is judged on the audio itself (speech level above the noise bed,
pocketsphinx on the recorded agent audio); what the agent meant to say comes from the
worker's turn events on the ``voice-worker.events`` data topic; whether the agent left
comes from the server's participant list."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from pipelines.audio import Audio, read_wav
from pipelines.engines import PocketsphinxEngine
from worker.dev import CallRecording, run_caller
from worker.dev.services import LiveKitEndpoint, WorkerProcess
from worker.settings import REPO_ROOT

pytestmark = pytest.mark.integration

FIXTURES = REPO_ROOT / "fixtures"
AUDIO = FIXTURES / "audio"
MANIFEST: dict[str, Any] = json.loads((AUDIO / "manifest.json").read_text())
FRONT_DESK = "agent_01JC0FRNTDESK0000000000000"
FRONT_DESK_RECORD: dict[str, Any] = json.loads(
    (FIXTURES / "control_plane" / "agents" / f"{FRONT_DESK}.json").read_text()
)
FIRST_MESSAGE = FRONT_DESK_RECORD["firstMessage"]

GREETING_SPEECH = 1.0
"""Seconds of agent speech the caller must hear within ``GREETING_WITHIN``."""
GREETING_WITHIN = 4.0
"""Seconds from the caller's first listening (the fixtures' lead-in) to hear the greeting."""
ANSWER_SPEECH = 0.1
"""Seconds of agent speech the caller must hear after each of its turns: "oh okay." is
under 0.2 s above ``SPEECH_RMS``; the front desk's noise bed (office at 0.08, 10 ms peak
0.027) never reaches it."""
LEAVE_WITHIN = 5.0
"""Seconds after the caller hangs up by which the agent must have left the room."""
ANSWER_WAIT = 30.0
"""Longest the caller waits in silence for the greeting or an answer before going on."""


def fixture(name: str) -> tuple[Audio, list[tuple[float, float]]]:
    entry = MANIFEST[name]
    turns = [(float(t["start"]), float(t["end"])) for t in entry["turns"]]
    return read_wav(AUDIO / entry["file"]), turns


async def call(
    livekit: LiveKitEndpoint, worker: WorkerProcess, metadata: dict[str, Any], name: str
) -> CallRecording:
    """A caller that takes turns: speaks each fixture turn once the agent finished
    speaking, hangs up half a second after the last answer."""
    caller, turns = fixture(name)
    rec = await run_caller(
        livekit,
        worker.agent_name,
        metadata,
        caller,
        turns=turns,
        answer_timeout=ANSWER_WAIT,
        tail_seconds=0.5,
    )
    print(timeline(rec))
    assert len(rec.caller_turns) == len(turns), f"{rec.room_name}: caller stopped early"
    return rec


def timeline(rec: CallRecording) -> str:
    """One line per event on the caller's clock: printed with each call, shown on failure."""
    rows = [f"{rec.room_name}: caller turns {rec.caller_turns}"]
    rows += [f"  {rec.rel(e['at']):7.2f} {e['role']:>9}: {e['text']!r}" for e in rec.turn_events]
    if rec.caller_left_at is not None:
        rows.append(f"  {rec.rel(rec.caller_left_at):7.2f} caller left")
    if rec.agent_left_at is not None:
        rows.append(f"  {rec.rel(rec.agent_left_at):7.2f} agent left")
    return "\n".join(rows)


@pytest.fixture(scope="module")
def stt() -> PocketsphinxEngine:
    return PocketsphinxEngine()


def assert_greeted_and_answered(rec: CallRecording, stt: PocketsphinxEngine) -> None:
    turns = rec.caller_turns
    assert turns, "the caller took no turn"
    agent = rec.agent_turns()
    users = [e for e in rec.turn_events if e.get("role") == "user"]
    assert agent, f"no agent turn events in {rec.room_name}: {rec.turn_events}"
    assert FIRST_MESSAGE in agent[0]["text"], agent[0]
    greeting = rec.speech_seconds(-60.0, GREETING_WITHIN)
    assert greeting >= GREETING_SPEECH, f"greeting: {greeting:.2f} s of agent speech heard"

    for i, (start, end) in enumerate(turns):
        following = turns[i + 1][0] if i + 1 < len(turns) else None
        heard = [
            u
            for u in users
            if rec.rel(u["at"]) > start and (following is None or rec.rel(u["at"]) < following)
        ]
        assert any(u["text"].strip() for u in heard), (
            f"turn {i + 1}: worker heard no caller text; user events {users}"
        )
        reply_by = turns[i + 1][1] if i + 1 < len(turns) else None
        replies = [
            a
            for a in agent[1:]
            if rec.rel(a["at"]) > end and (reply_by is None or rec.rel(a["at"]) <= reply_by)
        ]
        # An idle reprompt ("Are you still there?") is spoken too, but is no answer.
        answers = [a for a in replies if "llm_node_ttft" in a["metrics"] and a["text"].strip()]
        assert answers, f"turn {i + 1}: no non-empty LLM answer; agent events {agent}"
        speech = rec.speech_seconds(end, following)
        assert speech >= ANSWER_SPEECH, (
            f"turn {i + 1}: {speech:.2f} s of agent speech heard; replies {replies}"
        )
        # Only while the agent says it spoke: the waits around it are seconds of noise bed,
        # slow to decode and able to yield words of their own.
        m = answers[0]["metrics"]
        assert "stopped_speaking_at" in m, f"turn {i + 1}: answer never played: {answers[0]}"
        spoke = (rec.rel(m["started_speaking_at"]) - 0.2, rec.rel(m["stopped_speaking_at"]) + 0.3)
        audio = rec.agent_audio_between(*spoke)
        words = stt.transcribe(audio.samples, audio.sample_rate)
        assert words.strip(), f"turn {i + 1}: pocketsphinx heard no words in the agent's answer"


def assert_left_with_caller(rec: CallRecording) -> None:
    assert rec.caller_left_at is not None
    assert rec.agent_left_at is not None, f"agent still in {rec.room_name} after the caller left"
    assert rec.agent_left_at - rec.caller_left_at <= LEAVE_WITHIN


def job_records(worker: WorkerProcess, rec: CallRecording) -> list[dict[str, Any]]:
    return [r for r in worker.log_records() if r.get("room") == rec.room_name]


async def test_call_greets_answers_each_turn_and_ends_with_the_caller(
    livekit: LiveKitEndpoint, voice_worker: WorkerProcess, stt: PocketsphinxEngine
) -> None:
    rec = await call(livekit, voice_worker, {"agentId": FRONT_DESK}, "booking_two_turns")
    assert_greeted_and_answered(rec, stt)
    assert_left_with_caller(rec)


async def test_bad_jobs_apologise_and_end_then_the_worker_takes_the_next_call(
    livekit: LiveKitEndpoint, voice_worker: WorkerProcess, stt: PocketsphinxEngine
) -> None:
    caller, _ = fixture("one_turn")
    unknown = "agent_01JC0NOSUCHAGENT000000000"
    invalid = {**FRONT_DESK_RECORD, "id": "agent_01JC0INVALIDRATE00000000", "tts_playback_rate": 9}
    bad = await asyncio.gather(
        run_caller(
            livekit, voice_worker.agent_name, {"agentId": unknown}, caller, tail_seconds=10.0
        ),
        run_caller(livekit, voice_worker.agent_name, {"agent": invalid}, caller, tail_seconds=10.0),
    )
    for rec, names in zip(bad, (unknown, "tts_playback_rate"), strict=True):
        records = job_records(voice_worker, rec)
        errors = [r for r in records if r.get("level") in ("ERROR", "CRITICAL")]
        assert len(errors) == 1, f"{rec.room_name}: expected one error record, got {errors}"
        assert errors[0]["message"].startswith("call not started"), errors[0]
        assert names in errors[0]["message"], errors[0]
        print(timeline(rec))
        apology = rec.speech_seconds(-60.0)
        assert apology >= 1.5, f"{rec.room_name}: {apology:.2f} s of apology heard"
        audio = rec.agent_audio_between(-60.0)
        assert stt.transcribe(audio.samples, audio.sample_rate).strip(), rec.room_name
        # The agent hung up by itself, with the caller still on the line.
        assert rec.agent_left_at is not None and rec.caller_left_at is not None
        assert rec.agent_left_at <= rec.caller_left_at, rec.room_name
        assert not rec.agent_turns(), "a failed job must not start a conversation"

    assert voice_worker.running
    good = await call(livekit, voice_worker, {"agentId": FRONT_DESK}, "one_turn")
    assert_greeted_and_answered(good, stt)
    assert_left_with_caller(good)


async def test_two_concurrent_calls_on_one_worker_both_complete(
    livekit: LiveKitEndpoint, voice_worker: WorkerProcess, stt: PocketsphinxEngine
) -> None:
    recs = await asyncio.gather(
        *(call(livekit, voice_worker, {"agentId": FRONT_DESK}, "one_turn") for _ in range(2))
    )
    assert recs[0].room_name != recs[1].room_name
    for rec in recs:
        assert_greeted_and_answered(rec, stt)
        assert_left_with_caller(rec)
    # One worker process served both: both jobs appear in its log.
    started = {
        r.get("room") for r in voice_worker.log_records() if r.get("message") == "call started"
    }
    assert {rec.room_name for rec in recs} <= started
