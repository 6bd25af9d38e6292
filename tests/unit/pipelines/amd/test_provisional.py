from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from pipelines.amd import (
    PROVISIONAL_SILENCE,
    AMDClassifier,
    AMDDetector,
    Greeting,
    Provisional,
    ProvisionalRule,
    Verdict,
)
from pipelines.audio import read_wav
from worker.settings import REPO_ROOT

RATE = 8000
FIXTURES = REPO_ROOT / "fixtures" / "amd"
MANIFEST: dict[str, dict[str, Any]] = {
    e["file"]: e for e in json.loads((FIXTURES / "manifest.json").read_text())
}

# a short "Hello?" that ended 0.3 s ago, nothing else heard
ENDED = Greeting(
    now=1.4,
    speech_seconds=0.6,
    silence_seconds=0.3,
    speaking=False,
    machine_evidence=False,
    tones=0,
    decided=False,
)


# -- the rule on hand-fed snapshots


def test_a_short_ended_greeting_looks_human_once() -> None:
    rule = ProvisionalRule()
    assert rule.check(replace(ENDED, silence_seconds=0.28)) is None
    p = rule.check(ENDED)
    assert p == Provisional(decided_at=1.4, speech_seconds=0.6, silence_seconds=0.3)
    assert "short greeting" in p.reason
    # fired: later snapshots of the same greeting say nothing more
    assert rule.check(replace(ENDED, now=1.6, silence_seconds=0.5)) is None
    assert rule.fired == p


@pytest.mark.parametrize(
    "greeting",
    [
        replace(ENDED, speaking=True),  # voiced again, not counted yet
        replace(ENDED, machine_evidence=True),  # "you have reached ..." in the transcript
        replace(ENDED, tones=1),  # a beep or a SIT tone
        replace(ENDED, speech_seconds=1.9),  # longer than a human's greeting
        replace(ENDED, speech_seconds=0.1),  # a click or a breath
        replace(ENDED, decided=True),  # the verdict came first
    ],
)
def test_a_greeting_with_any_sign_against_it_does_not_look_human(greeting: Greeting) -> None:
    assert ProvisionalRule().check(greeting) is None


def test_the_greeting_going_on_withdraws_it_once() -> None:
    rule = ProvisionalRule()
    assert rule.check(ENDED) is not None
    assert rule.check(replace(ENDED, now=1.5, silence_seconds=0.4)) is None  # still silent
    withdrawn = rule.check(replace(ENDED, now=1.62, speech_seconds=0.7, silence_seconds=0.0))
    assert withdrawn is not None and withdrawn.withdrawn_at == 1.62
    assert withdrawn.decided_at == 1.4
    assert rule.check(replace(ENDED, now=2.5, speech_seconds=0.7)) is None  # once
    assert withdrawn.to_json()["withdrawn_at"] == 1.62


@pytest.mark.parametrize("sign", [{"machine_evidence": True}, {"tones": 1}])
def test_a_machine_sign_after_it_withdraws_it(sign: dict[str, Any]) -> None:
    rule = ProvisionalRule()
    assert rule.check(ENDED) is not None
    withdrawn = rule.check(replace(ENDED, now=1.9, silence_seconds=0.8, **sign))
    assert withdrawn is not None and withdrawn.withdrawn_at == 1.9


def test_the_verdict_ends_the_rule() -> None:
    rule = ProvisionalRule()
    assert rule.check(ENDED) is not None
    assert rule.check(replace(ENDED, decided=True, speech_seconds=3.0)) is None
    assert rule.fired is not None and rule.fired.withdrawn_at is None


@pytest.mark.parametrize(
    "options",
    [{"silence": 0.0}, {"silence": float("nan")}, {"max_speech": -1.0}, {"min_speech": 2.0}],
)
def test_bad_parameters_are_named(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="provisional " + next(iter(options))):
        ProvisionalRule(**options)


# -- the classifier's snapshots of real greetings


def scan(name: str) -> tuple[Provisional | None, Provisional | None, Verdict]:
    """The first and last provisional answer and the verdict for a fixture (then silence)."""
    x = read_wav(FIXTURES / name).samples
    x = np.concatenate([x, np.zeros(9 * RATE, dtype=np.float32)])
    clf = AMDClassifier(RATE)
    rule = ProvisionalRule(silence=PROVISIONAL_SILENCE, max_speech=clf.human_max_greeting)
    first = last = None
    for i in range(0, len(x), 160):
        verdict = clf.push_audio(x[i : i + 160])
        p = rule.check(clf.greeting())
        first, last = first or p, p or last
        if verdict is not None:
            return first, last, verdict
    raise AssertionError("no verdict")


@pytest.mark.parametrize("name", ["human_short_02.wav", "human_short_05.wav", "human_short_09.wav"])
def test_a_short_hello_looks_human_well_before_the_verdict(name: str) -> None:
    end = MANIFEST[name]["greeting_end"]
    first, last, verdict = scan(name)
    assert verdict.category == "human"
    assert first is not None and last == first and first.withdrawn_at is None
    assert 0.0 < first.decided_at - end <= PROVISIONAL_SILENCE + 0.1
    assert verdict.decided_at - first.decided_at >= 0.35


@pytest.mark.parametrize("name", ["vm_beep_00.wav", "ivr_03.wav"])
def test_a_recorded_greeting_pausing_early_is_withdrawn_within_half_a_second(name: str) -> None:
    first, last, verdict = scan(name)
    assert verdict.category.startswith("machine")
    assert first is not None and last is not None and last.withdrawn_at is not None
    assert 0.0 < last.withdrawn_at - first.decided_at <= 0.5
    assert verdict.decided_at > last.withdrawn_at + 1.0


# -- the async adapter


async def test_detector_reports_the_provisional_decision_before_the_verdict() -> None:
    heard: list[Provisional] = []
    det = AMDDetector(RATE, provisional_silence=PROVISIONAL_SILENCE, on_provisional=heard.append)
    x = read_wav(FIXTURES / "human_short_02.wav").samples
    for i in range(0, len(x) + 2 * RATE, 160):
        det.push_audio(x[i : i + 160] if i < len(x) else np.zeros(160, dtype=np.float32))
    verdict = await det.wait()
    assert verdict.category == "human"
    assert len(heard) == 1 and heard[0].decided_at < verdict.decided_at
    assert det.provisional is not None and det.provisional.fired == heard[0]


async def test_detector_without_provisional_silence_says_nothing_early() -> None:
    heard: list[Provisional] = []
    det = AMDDetector(RATE, on_provisional=heard.append)
    x = read_wav(FIXTURES / "human_short_02.wav").samples
    for i in range(0, len(x) + 2 * RATE, 160):
        det.push_audio(x[i : i + 160] if i < len(x) else np.zeros(160, dtype=np.float32))
    assert (await det.wait()).category == "human"
    assert heard == [] and det.provisional is None
