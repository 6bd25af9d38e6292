from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from pipelines.amd import transcript_evidence
from pipelines.audio import Float32Array, read_wav
from pipelines.engines import MoonshineTranscriber, normalise_text, speech_spans
from worker.settings import REPO_ROOT

FIXTURES = REPO_ROOT / "fixtures" / "amd"
MANIFEST: dict[str, dict[str, Any]] = {
    e["file"]: e for e in json.loads((FIXTURES / "manifest.json").read_text())
}
RATE = 8000


@pytest.fixture(scope="module")
def transcriber() -> MoonshineTranscriber:
    return MoonshineTranscriber()


def utterance(name: str, index: int, margin: float = 0.3) -> Float32Array:
    start, end, _ = MANIFEST[name]["speech"][index]
    x = read_wav(FIXTURES / name).samples
    return x[max(0, round((start - margin) * RATE)) : round((end + margin) * RATE)]


def test_an_ivr_menu_line_comes_through_as_ivr_evidence(
    transcriber: MoonshineTranscriber,
) -> None:
    text = transcriber(utterance("ivr_05.wav", 1), RATE)  # "For hours and directions, press 1."
    assert "press" in text.split(), text
    assert transcript_evidence(text).category == "machine-ivr", text


def test_speech_inside_seconds_of_line_noise_is_still_read(
    transcriber: MoonshineTranscriber,
) -> None:
    # the model alone often returns nothing for a buffer mostly made of noise
    text = transcriber(utterance("vm_nobeep_04.wav", 2, margin=1.5), RATE)  # "Leave a message."
    assert "message" in text.split(), text


def test_silence_and_steady_noise_are_empty(transcriber: MoonshineTranscriber) -> None:
    assert transcriber(np.zeros(RATE, dtype=np.float32), RATE) == ""
    assert transcriber(np.zeros(0, dtype=np.float32), RATE) == ""
    hiss = (0.003 * np.random.default_rng(1).standard_normal(2 * RATE)).astype(np.float32)
    assert transcriber(hiss, RATE) == ""


def test_output_is_lowercase_words_as_the_patterns_read_them() -> None:
    assert normalise_text("For sales, press 1.") == "for sales press 1"
    assert normalise_text("Hello, who\u2019s this?") == "hello who's this"
    assert normalise_text("'Leave a message.'") == "leave a message"
    assert transcript_evidence(normalise_text("For sales, press 1.")).category == "machine-ivr"


def test_speech_spans_find_phrases_between_pauses() -> None:
    rng = np.random.default_rng(0)
    floor = 0.001 * rng.standard_normal(3 * RATE)
    t = np.arange(RATE // 2) / RATE
    tone = 0.3 * np.sin(2 * np.pi * 300 * t)
    x = floor.copy()
    x[RATE // 2 : RATE] += tone  # 0.5-1.0 s
    x[2 * RATE : 2 * RATE + RATE // 2] += tone  # 2.0-2.5 s
    spans = speech_spans(x.astype(np.float32), RATE, padding=0.1)
    assert [(round(a / RATE, 2), round(b / RATE, 2)) for a, b in spans] == [
        (0.4, 1.1),
        (1.9, 2.6),
    ]
    joined = speech_spans(x.astype(np.float32), RATE, padding=0.0, min_pause=1.5)
    assert [(round(a / RATE, 2), round(b / RATE, 2)) for a, b in joined] == [(0.5, 2.5)]
