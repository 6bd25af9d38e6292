from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
import pytest

from pipelines.amd import (
    DOMAIN_CORPUS,
    IVR_MENU_LINES,
    IVR_OPTIONS,
    PhraseTranscriber,
    build_arpa,
    transcript_evidence,
)
from pipelines.audio import Float32Array, read_wav
from worker.settings import REPO_ROOT

FIXTURES = REPO_ROOT / "fixtures" / "amd"
MANIFEST: dict[str, dict[str, Any]] = {
    e["file"]: e for e in json.loads((FIXTURES / "manifest.json").read_text())
}


@pytest.fixture(scope="module")
def transcriber() -> PhraseTranscriber:
    return PhraseTranscriber()


def parse_arpa(text: str) -> tuple[dict[tuple[str, ...], float], dict[tuple[str, ...], float]]:
    probs: dict[tuple[str, ...], float] = {}
    backoffs: dict[tuple[str, ...], float] = {}
    order = 0
    for line in text.splitlines():
        if m := re.match(r"\\(\d)-grams:", line):
            order = int(m.group(1))
        elif order and line.strip() and not line.startswith("\\"):
            fields = line.split()
            gram = tuple(fields[1 : 1 + order])
            probs[gram] = 10 ** float(fields[0])
            if len(fields) > 1 + order:
                backoffs[gram] = 10 ** float(fields[1 + order])
    return probs, backoffs


def test_arpa_distributions_sum_to_one_after_every_history() -> None:
    corpus = ["press one", "press two", "for sales press one", "leave a message"]
    probs, backoffs = parse_arpa(build_arpa(corpus))
    vocab = [g[0] for g in probs if len(g) == 1 and g[0] != "<s>"]
    assert sorted(vocab) == sorted(
        {"</s>", "press", "one", "two", "for", "sales", "leave"} | {"a", "message"}
    )

    def p(history: tuple[str, ...], word: str) -> float:
        if (*history, word) in probs:
            return probs[(*history, word)]
        if not history:
            return 0.0
        return backoffs.get(history, 1.0) * p(history[1:], word)

    for history in [("press",), ("<s>",), ("for", "sales"), ("sales", "press"), ("message",)]:
        assert math.isclose(sum(p(history, w) for w in vocab), 1.0, abs_tol=1e-3), history
    # seen continuations beat unseen ones
    assert p(("press",), "one") > p(("press",), "sales")


def test_corpus_words_must_be_pronounceable() -> None:
    with pytest.raises(ValueError, match="zzyzxq"):
        PhraseTranscriber(["leave a zzyzxq"])


def band_energy(x: Float32Array, rate: int, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    return float(spec[(freqs >= lo) & (freqs < hi)].sum())


def utterance(name: str, index: int) -> Float32Array:
    start, end, _ = MANIFEST[name]["speech"][index]
    x = read_wav(FIXTURES / name).samples
    return x[max(0, round((start - 0.2) * 8000)) : round((end + 0.3) * 8000)]


@pytest.mark.parametrize(
    ("name", "index", "category"),
    [
        ("vm_beep_00.wav", 0, "machine-vm"),  # "Hi, you've reached Sam."
        ("ivr_00.wav", 1, "machine-ivr"),  # "For sales, press 1."
        ("not_available_00.wav", 0, "machine-unavailable"),  # "... is not available."
    ],
)
def test_machine_phrases_come_through(
    transcriber: PhraseTranscriber, name: str, index: int, category: str
) -> None:
    text = transcriber(utterance(name, index), 8000)
    assert transcript_evidence(text).category == category, text


def test_a_human_hello_is_no_machine(transcriber: PhraseTranscriber) -> None:
    text = transcriber(utterance("human_short_00.wav", 0), 8000)
    assert text == "hello"
    assert transcript_evidence(text).category is None


def test_silence_is_empty(transcriber: PhraseTranscriber) -> None:
    assert transcriber(np.zeros(8000, dtype=np.float32), 8000) == ""
    assert transcriber(np.zeros(0, dtype=np.float32), 8000) == ""


def test_default_corpus_covers_every_machine_kind() -> None:
    kinds = {transcript_evidence(line).category for line in DOMAIN_CORPUS}
    assert {"human", "machine-vm", "machine-ivr", "machine-unavailable"} <= kinds


def test_dither_steadies_the_empty_upper_band(transcriber: PhraseTranscriber) -> None:
    # a carrier message without SIT: its words must come through to be told from a human
    text = transcriber(
        utterance("not_available_01.wav", 0), 8000
    )  # "The number you have dialed..."
    assert transcript_evidence(text).category == "machine-unavailable", text
    assert transcriber.dither > 0


def test_dither_is_reproducible(transcriber: PhraseTranscriber) -> None:
    x = utterance("ivr_00.wav", 1)
    assert transcriber(x, 8000) == transcriber(x.copy(), 8000)


def test_menu_lines_are_ivr_evidence_for_every_option() -> None:
    assert len(IVR_MENU_LINES) >= len(IVR_OPTIONS)
    assert set(IVR_MENU_LINES) <= set(DOMAIN_CORPUS)
    for line in IVR_MENU_LINES:
        ev = transcript_evidence(line)
        assert ev.category == "machine-ivr" and ev.strong, line
