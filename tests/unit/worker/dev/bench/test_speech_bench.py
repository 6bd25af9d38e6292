"""The speech benchmarks' scoring: word errors, the halves, and the replies rubric."""

from __future__ import annotations

from worker.dev.bench.speech import (
    SENTENCES,
    VOICES,
    content_words,
    held_out,
    normalise_words,
    on_topic,
    word_errors,
)
from worker.dev.bench.speech.wer import summarise


def test_word_errors_count_substitutions_deletions_and_insertions() -> None:
    ref = normalise_words("Hello, I would like to book a cleaning appointment.")
    assert word_errors(ref, ref) == 0
    hyp = normalise_words("hello i would like to look at leading appointments")
    assert word_errors(ref, hyp) == 4  # book/look, a/at, cleaning/leading, appointment(s)
    assert word_errors(ref, []) == len(ref)
    assert word_errors([], ["uh"]) == 1


def test_both_halves_and_three_voices_are_there() -> None:
    halves = [held_out(s) for s in SENTENCES]
    assert 0 < sum(halves) < len(SENTENCES)
    assert held_out(SENTENCES[0]) == held_out(SENTENCES[0])  # fixed by the text alone
    assert len(VOICES) >= 3


def test_summary_pools_errors_per_engine_rate_and_half() -> None:
    def row(half: str, source: str, words: int, errors: int) -> dict[str, object]:
        return {
            "engine": "moonshine",
            "rate": 16000,
            "half": half,
            "source": source,
            "words": words,
            "errors": errors,
            "seconds": 0.5,
        }

    rows = [
        row("fixture", "fixture:a", 10, 1),
        row("dev", "en-us", 10, 2),
        row("dev", "en-gb+m7", 30, 0),
        row("held_out", "en-us", 8, 2),
    ]
    got = summarise(rows)["moonshine_16k"]
    assert got["fixture_callers"] == 0.1
    assert got["espeak_dev"] == 0.05
    assert got["espeak_held_out"] == 0.25
    assert got["per_voice"] == {"en-us": round(4 / 18, 3), "en-gb+m7": 0.0}


def test_the_rubric() -> None:
    role = "Front desk You are the front-desk receptionist of Acme Dental."
    caller = "Hello, I would like to book a cleaning appointment."
    assert on_topic("Sure, when would you like your cleaning?", caller, role, None)
    assert on_topic("Acme Dental is happy to help.", caller, role, None)  # the role's words
    assert not on_topic("Oh, you're in the wrong room?", caller, role, None)
    assert not on_topic("", caller, role, None)
    repeated = "Sure, when would you like your cleaning?"
    assert not on_topic(repeated, caller, role, previous="sure when would you like your cleaning")
    assert content_words("Booking appointments!") == {"book", "appointment"}
