"""The replayed call's story: the script beside the WAV, per-turn WER and the rubric."""

from __future__ import annotations

from pathlib import Path

from worker.dev.story import caller_script, story_rows, story_text
from worker.settings import REPO_ROOT

AUDIO = REPO_ROOT / "fixtures" / "audio"


def test_the_script_comes_from_the_manifest_beside_the_wav(tmp_path: Path) -> None:
    script = caller_script(AUDIO / "booking_two_turns.wav")
    assert script is not None and len(script) == 2
    assert script[0].startswith("Hello, I would like to book")
    assert caller_script(tmp_path / "mine.wav") is None  # no manifest: no script


def test_each_turn_tells_said_heard_replied_and_latency(tmp_path: Path) -> None:
    turns = [
        {
            "turn": 1,
            "caller_text_heard": "hello i would like to look at a cleaning appointment",
            "agent_text": "Sure, when would you like your cleaning?",
            "response_latency": 1.84,
        },
        {"turn": 2, "caller_text_heard": None, "agent_text": None, "response_latency": None},
    ]
    script = ["Hello, I would like to book a cleaning appointment.", "My name is Sam."]
    rows = story_rows(turns, script, "Front desk of Acme Dental")
    assert rows[0]["wer"] == round(2 / 9, 3)  # book -> look, "at" inserted
    assert rows[0]["on_topic"] is True
    assert rows[1]["wer"] == 1.0 and rows[1]["on_topic"] is None
    (tmp_path / "report.json").write_text("{}")
    text = story_text({"out": str(tmp_path), "story": rows})
    assert "caller said:  Hello, I would like to book a cleaning appointment." in text
    assert "worker heard: hello i would like to look at a cleaning appointment  (WER 22%)" in text
    assert "agent said:   Sure, when would you like your cleaning?  (on topic)" in text
    assert "1.84 s from the caller's end of speech" in text
    assert "worker heard: (nothing)  (WER 100%)" in text
    assert str(tmp_path / "agent.wav") in text and str(tmp_path / "report.json") in text
    assert "heard with 46% WER over 13 words" in text
