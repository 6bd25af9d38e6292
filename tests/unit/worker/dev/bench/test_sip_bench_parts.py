"""The SIP benchmarks' and phone replay's own arithmetic: which fixtures a ``--limit`` plays,
the phone's caller WAV and its turn windows, the heard side's alignment to the answer, and a
verdict row scored from a report."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.audio import Audio
from worker.dev.bench.sip.amd import (
    AFTER_TIMEOUT,
    AMD_TIMEOUT,
    human_first_audio,
    pick,
    pick_per_category,
    provisional_figures,
    verdict_row,
)
from worker.dev.bench.sip.latency import GAP, LEAD, phone_script
from worker.dev.bench.stack import CallScript
from worker.dev.phone_replay import answer_aligned, heard_recording, transcript_since
from worker.dev.services.phone import PHONE_RATE


def test_a_limit_spreads_over_the_labels() -> None:
    entries = [{"file": f"{label}{i}", "label": label} for label in "abc" for i in range(4)]
    chosen = pick(entries, 3)
    assert [e["label"] for e in chosen] == ["a", "b", "c"]
    assert pick(entries, None) == entries and pick(entries, 50) == entries


def test_per_category_takes_k_of_every_label_in_each_half_from_the_middle() -> None:
    entries = [
        {"file": f"{label}{i}", "label": label, "seed": i} for label in "ab" for i in range(8)
    ] + [{"file": "c0", "label": "c", "seed": 1}]
    chosen = [e["file"] for e in pick_per_category(entries, 2)]
    # even seeds 0,2,4,6 -> 2 and 6; odd 1,3,5,7 -> 3 and 7; the lone odd "c" whole
    assert chosen == ["a2", "a3", "a6", "a7", "b2", "b3", "b6", "b7", "c0"]
    assert pick_per_category(entries, 1) == pick_per_category(entries, 1)
    with pytest.raises(ValueError, match="per-category"):
        pick_per_category(entries, 0)


def tone(seconds: float, rate: int = 16000) -> Audio:
    t = np.arange(int(seconds * rate)) / rate
    return Audio((0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), rate)


def test_the_phone_script_lays_turns_after_the_greeting_with_a_gap_for_each_reply() -> None:
    # two turns of one fixture: 1.0-2.0 s (speech ends 0.8 s in) and 3.0-3.5 s (0.5 s)
    script = CallScript("x", tone(4.0), ((1.0, 2.0), (3.0, 3.5)), (0.8, 0.5))
    audio, windows = phone_script(script)
    assert audio.sample_rate == PHONE_RATE
    assert abs(audio.duration - (LEAD + 1.0 + GAP + 0.5 + GAP)) < 0.01
    first_end, second_start = LEAD + 0.8, LEAD + 1.0 + GAP
    assert np.allclose(windows, [(first_end, second_start), (second_start + 0.5, audio.duration)])
    # silence before the first turn and in each gap
    assert not audio.samples[: int(LEAD * PHONE_RATE)].any()
    assert audio.samples[int((LEAD + 0.1) * PHONE_RATE)] != 0


def test_what_the_phone_heard_is_put_on_the_answer_clock() -> None:
    heard = Audio(np.concatenate([np.zeros(8000), tone(0.5, 8000).samples]), 8000)  # 1.5 s
    sent = Audio(np.zeros(2 * 8000, np.float32), 8000)  # the phone sent 2 s: heard began late
    aligned = answer_aligned(heard, sent)
    assert aligned.duration == 2.0
    assert heard_recording(aligned).speech_onsets() == [1.5]
    assert answer_aligned(heard, None) is heard
    assert answer_aligned(heard, Audio(np.zeros(8000, np.float32), 8000)) is heard


def test_the_transcript_is_on_the_answer_clock_caller_and_agent_only() -> None:
    report = {
        "transcript": [
            {"role": "user", "text": "hi", "started_at": "2026-12-01T10:00:03.5Z"},
            {"role": "assistant", "text": "hello", "started_at": "2026-12-01T10:00:01Z"},
            {"role": "tool", "text": "{}", "started_at": "2026-12-01T10:00:02Z"},
        ]
    }
    t0 = 1796119200.0  # 2026-12-01T10:00:00Z
    assert transcript_since(report, t0) == [
        {"role": "agent", "text": "hello", "at": 1.0},
        {"role": "caller", "text": "hi", "at": 3.5},
    ]


def test_a_verdict_row_scores_what_the_worker_acted_on() -> None:
    entry = {"file": "vm.wav", "label": "machine-vm", "greeting_end": 3.0, "beep_at": 3.2}
    amd = {"category": "machine-vm", "decided_at": 3.4, "action": "voicemail", "reason": "beep"}
    row = verdict_row(
        entry, {"events": [{"type": "amd", "data": amd}], "end_reason": "voicemail"}, None
    )
    assert row["correct"] and row["after_greeting_end"] == 0.4 and row["action"] == "voicemail"
    missing = verdict_row(entry, {"events": []}, None)
    assert missing["category"] == "none" and not missing["correct"]
    assert missing["decided_at"] == AMD_TIMEOUT + AFTER_TIMEOUT
    assert missing["after_greeting_end"] is None


def test_a_humans_first_message_splits_into_stages_on_the_wall_clock() -> None:
    rate = 8000
    t = np.arange(rate // 2) / rate
    speech = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    heard = Audio(np.concatenate([np.zeros(2 * rate, np.float32), speech]), rate)
    entry = {"file": "h.wav", "label": "human", "greeting_end": 1.0, "beep_at": None}
    answered = 1796119200.0  # 2026-12-01T10:00:00Z
    report = {
        "events": [
            {
                "type": "amd",
                "at": "2026-12-01T10:00:01.600Z",
                "data": {"category": "human", "decided_at": 1.6},
            },
            {"type": "first_message", "at": answered + 1.7, "data": {"prepared": True}},
        ]
    }
    row = verdict_row(entry, report, heard, answered_at=answered)
    first = row["first_agent_audio_after_greeting_end"]
    assert first == pytest.approx(1.0, abs=0.03)
    stages = row["first_message_stages"]
    assert stages["verdict"] == pytest.approx(0.6) and stages["played"] == pytest.approx(0.1)
    assert stages["heard"] == pytest.approx(first - 0.7, abs=1e-3)
    assert row["first_message"] == {"prepared": True}
    # without the answer's time there is nothing to split
    assert verdict_row(entry, report, heard)["first_message_stages"] is None


def test_a_held_provisional_human_is_the_decision_the_stages_start_from() -> None:
    rate = 8000
    t = np.arange(rate // 2) / rate
    speech = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    heard = Audio(np.concatenate([np.zeros(rate + rate // 2, np.float32), speech]), rate)
    entry = {"file": "h.wav", "label": "human", "greeting_end": 1.0, "beep_at": None}
    answered = 1796119200.0
    early = {"decided_at": 1.3, "withdrawn_at": None, "played_seconds": 0.0, "cut": False}
    report = {
        "events": [
            {"type": "amd_provisional", "at": answered + 1.2, "data": {}},
            {"type": "first_message", "at": answered + 1.21, "data": {"prepared": True}},
            {
                "type": "amd",
                "at": answered + 1.65,
                "data": {"category": "human", "decided_at": 1.7, "provisional": early},
            },
        ]
    }
    row = verdict_row(entry, report, heard, answered_at=answered)
    assert row["provisional"] == early
    stages = row["first_message_stages"]
    assert stages["verdict"] == pytest.approx(0.2) and stages["played"] == pytest.approx(0.01)


def row_of(
    label: str, seed: int, first: float | None, early: dict[str, object] | None
) -> dict[str, object]:
    return {
        "label": label,
        "seed": seed,
        "first_agent_audio_after_greeting_end": first,
        "provisional": early,
    }


def test_provisional_figures_count_what_machines_heard_and_humans_kept() -> None:
    held = {"withdrawn_at": None, "played_seconds": 0.0, "cut": False}
    rows = [
        row_of("human", 0, 0.7, held),
        row_of("human", 1, 1.3, {"withdrawn_at": 2.0, "played_seconds": 0.2, "cut": False}),
        row_of("human", 1, 1.4, None),
        row_of("machine-vm", 0, None, {"withdrawn_at": 2.3, "played_seconds": 0.3, "cut": False}),
        row_of("machine-ivr", 1, None, {"withdrawn_at": None, "played_seconds": 1.1, "cut": True}),
        row_of("machine-vm", 1, None, None),
        row_of("uncertain", 0, None, None),
    ]
    figures = provisional_figures(rows)
    assert figures == {
        "humans_with_provisional": 2,
        "humans_provisional_held": 1,
        "humans": 3,
        "machines_with_provisional": 2,
        "machines_heard_first_message": 2,
        "machines": 3,
        "machine_heard_seconds_median": 0.7,
        "machine_heard_seconds_max": 1.1,
        "cut_at_verdict": 1,
    }
    audio = human_first_audio(rows)
    assert audio["human_first_audio_after_greeting_end_median"] == 1.3
    assert audio["human_first_audio_within_1s"] == pytest.approx(1 / 3, abs=1e-3)
    assert human_first_audio([])["human_first_audio_after_greeting_end_median"] is None
