"""What a taken-over call carries on with: the report so far, the conversation as the LLM's
context, the line the new agent opens with, and the takeover marker in the dispatch."""

from __future__ import annotations

import json

from worker.call import REDACTED, CallRecorder
from worker.call.survival import (
    RECOVERY_KEY,
    awaits_answer,
    chat_history,
    recovery_line,
    recovery_of,
)


def test_the_report_so_far_survives_a_snapshot_and_restore() -> None:
    first = CallRecorder(call_id="c1", agent_id="a1", direction="outbound", redact=["s3cret"])
    first.add_transcript("assistant", "Hello, how can I help?", at=100.0)
    first.add_transcript("user", "my key is s3cret, book me in", at=103.0)
    first.add_event("amd", category="human")
    first.add_turn_metrics(eou=0.2, llm_ttft=0.3)
    first.add_usage("local", tts_characters=22)
    snapshot = json.loads(json.dumps(first.snapshot()))  # it travels as JSON

    second = CallRecorder(call_id="c1", agent_id="a1", direction="outbound")
    second.restore(snapshot)
    second.add_transcript("assistant", "Sure, when?", at=110.0)
    second.add_usage("local", tts_characters=11)
    report = second.finish("caller hung up", at=120.0)

    assert [t.text for t in report.transcript] == [
        "Hello, how can I help?",
        f"my key is {REDACTED}, book me in",
        "Sure, when?",
    ]
    assert report.to_payload()["started_at"] == snapshot["started_at"]  # the call's own start
    assert [e.type for e in report.events] == ["amd"]
    assert len(report.turns) == 1
    assert report.usage["local"].tts_characters == 33
    assert "s3cret" not in json.dumps(report.to_payload())


def test_the_recovery_line_names_what_the_caller_last_said() -> None:
    transcript = [
        {"role": "assistant", "text": "Hello!"},
        {"role": "user", "text": "I would like to move my appointment to Friday morning please."},
    ]
    line = recovery_line(transcript)
    assert line.startswith("Sorry, I lost you for a second.")
    assert line.endswith("my appointment to Friday morning please.")
    assert recovery_line([{"role": "assistant", "text": "Hello!"}]) == (
        "Sorry, I lost you for a second."
    )
    long = {"role": "user", "text": " ".join(f"w{i}" for i in range(40))}
    assert len(recovery_line([long]).split("about ", 1)[1].split()) == 12


def test_the_conversation_becomes_the_llm_context_and_an_unanswered_turn_is_answered() -> None:
    transcript = [
        {"role": "assistant", "text": "Hello!"},
        {"role": "user", "text": "What are your hours?"},
        {"role": "tool", "text": "ignored"},
    ]
    ctx = chat_history(transcript)
    assert [(m.role, m.text_content) for m in ctx.messages()] == [
        ("assistant", "Hello!"),
        ("user", "What are your hours?"),
    ]
    assert awaits_answer(transcript)
    assert not awaits_answer(transcript[:1])
    assert not awaits_answer([])


def test_a_takeover_is_marked_in_the_dispatch_and_anything_else_is_not() -> None:
    marked = json.dumps({"agentId": "a", RECOVERY_KEY: {"callId": "c9", "epoch": 3}})
    assert recovery_of(marked) == ("c9", 3)
    for other in (None, "", "{}", "not json", json.dumps({RECOVERY_KEY: {"callId": "c"}})):
        assert recovery_of(other) is None
