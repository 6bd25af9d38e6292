from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest

from pipelines.amd import (
    AMDClassifier,
    AMDDetector,
    BeepDetector,
    Verdict,
    amd_file,
    transcript_evidence,
)
from pipelines.audio import Float32Array, read_wav
from pipelines.types import AMDCategory
from worker.dev.bench import reference_transcripts
from worker.settings import REPO_ROOT

RATE = 8000
FIXTURES = REPO_ROOT / "fixtures" / "amd"
MANIFEST: dict[str, dict[str, Any]] = {
    e["file"]: e for e in json.loads((FIXTURES / "manifest.json").read_text())
}


def tone(freqs: tuple[float, ...], seconds: float, level: float = 0.3) -> Float32Array:
    t = np.arange(round(seconds * RATE)) / RATE
    x = np.zeros_like(t)
    for f in freqs:
        x += np.sin(2 * np.pi * f * t)
    return (level * x / len(freqs)).astype(np.float32)


def noise(seconds: float, level: float = 0.003, seed: int = 0) -> Float32Array:
    rng = np.random.default_rng(seed)
    return (level * rng.standard_normal(round(seconds * RATE))).astype(np.float32)


def tones_in(x: Float32Array) -> list[tuple[float, float]]:
    det = BeepDetector(RATE)
    for i in range(0, len(x) - 159, 160):
        det.push_frame(x[i : i + 160])
    return [(t.start, t.frequency) for t in det.tones]


# -- beep detector


@pytest.mark.parametrize("freq", [440.0, 1000.0, 1850.0])
def test_beep_detector_finds_tone_with_start_and_frequency(freq: float) -> None:
    x = np.concatenate([noise(1.0), tone((freq,), 0.4) + noise(0.4, seed=1), noise(1.0, seed=2)])
    found = tones_in(x)
    assert len(found) == 1
    start, f = found[0]
    assert abs(start - 1.0) < 0.06
    assert abs(f - freq) < 10.0


@pytest.mark.parametrize(
    "signal",
    [
        tone((250.0,), 0.6),  # below the beep band
        tone((2600.0,), 0.6),  # above it
        tone((1000.0,), 0.12),  # too short
        tone((697.0, 1209.0), 0.5),  # DTMF "1"
        tone((941.0, 1336.0), 0.5),  # DTMF "0"
    ],
)
def test_beep_detector_ignores_non_beeps(signal: Float32Array) -> None:
    assert tones_in(np.concatenate([noise(0.5), signal, noise(0.5)])) == []


def test_beep_detector_ignores_speech() -> None:
    for name in ("human_long_00.wav", "vm_beep_00.wav", "ivr_02.wav", "human_short_04.wav"):
        entry = MANIFEST[name]
        x = read_wav(FIXTURES / name).samples
        end = entry["beep_at"] or len(x) / RATE
        assert tones_in(x[: int(end * RATE)]) == [], name


def tonal_frames(x: Float32Array) -> list[bool]:
    det = BeepDetector(RATE)
    flags = []
    for i in range(0, len(x) - 159, 160):
        det.push_frame(x[i : i + 160])
        flags.append(det.tonal)
    return flags


def test_only_a_held_tone_is_tonal() -> None:
    # a vowel can put most of its energy into one harmonic for a frame or two: not a tone
    blip = np.concatenate([noise(0.5), tone((700.0,), 0.08) + noise(0.08, seed=1), noise(0.5)])
    assert not any(tonal_frames(blip))
    held = np.concatenate([noise(0.5), tone((700.0,), 0.5) + noise(0.5, seed=1), noise(0.5)])
    flags = tonal_frames(held)
    assert any(flags[25:50]) and not any(flags[:25]) and not any(flags[55:])


def test_a_menu_is_not_cut_into_a_short_human_answer_by_tonal_vowels() -> None:
    # ivr_03's first phrase is followed by the second after ~0.4 s; counting its tonal
    # vowels as non-speech made a 0.75 s "silence" and a human verdict at 2.6 s
    v = amd_file(FIXTURES / "ivr_03.wav", transcripts=[])
    assert v.category != "human"
    assert v.decided_at > 5.0


# -- transcript phrases


@pytest.mark.parametrize(
    ("text", "category", "strong"),
    [
        ("hi you've reached sam please leave a message after the tone", "machine-vm", False),
        ("sorry i'm not available right now leave a message", "machine-vm", False),
        ("the mailbox is full and cannot accept messages", "machine-unavailable", True),
        ("the person you are calling is not available", "machine-unavailable", False),
        ("for sales press one for support press two", "machine-ivr", True),
        ("for sales press 1", "machine-ivr", True),
        ("hello who is this", "human", False),
        ("hello and welcome to acme support", "machine-ivr", False),
        ("welcome to the voicemail of dana please leave a message", "machine-vm", False),
        ("hello", None, False),
        ("", None, False),
    ],
)
def test_transcript_evidence(text: str, category: AMDCategory | None, strong: bool) -> None:
    ev = transcript_evidence(text)
    assert ev.category == category
    assert ev.strong == strong


# -- classifier logic


def feed(clf: AMDClassifier, x: Float32Array) -> Verdict | None:
    for i in range(0, len(x), 160):
        v = clf.push_audio(x[i : i + 160])
        if v:
            return v
    return None


def test_silence_forever_is_uncertain_exactly_at_the_deadline() -> None:
    clf = AMDClassifier(RATE, timeout_seconds=8.0)
    v = feed(clf, noise(20.0))
    assert v is not None
    assert v.category == "uncertain"
    assert v.decided_at == 8.0
    assert clf.push_audio(noise(1.0)) is None  # one verdict only
    assert clf.verdict is v


def test_tick_enforces_the_deadline_without_audio() -> None:
    clf = AMDClassifier(RATE, timeout_seconds=3.0)
    assert clf.tick(2.9) is None
    v = clf.tick(3.2)
    assert v is not None and v.category == "uncertain" and v.decided_at == 3.0


def test_ivr_phrase_decides_immediately_even_mid_greeting() -> None:
    clf = AMDClassifier(RATE)
    speech = read_wav(FIXTURES / "ivr_00.wav").samples[: 3 * RATE]
    assert feed(clf, speech) is None
    v = clf.push_transcript("thank you for calling for sales press one", False, 3.0)
    assert v is not None and v.category == "machine-ivr"
    assert v.decided_at == pytest.approx(3.0, abs=0.03)


def test_a_recorded_welcome_names_the_monologue_an_ivr() -> None:
    # the menu lines went unheard; "welcome to <business>" still says which machine talks
    heard = [(2.6, "welcome to first national bank", True)]
    v = amd_file(FIXTURES / "ivr_07.wav", transcripts=heard)
    assert v.category == "machine-ivr"
    assert v.decided_at <= 8.0
    unnamed = amd_file(FIXTURES / "ivr_07.wav", transcripts=[(2.6, "first national bank", True)])
    assert unnamed.category == "machine-vm"  # the length alone says only "a recording"


def test_a_short_welcome_then_silence_is_a_receptionist() -> None:
    # "welcome to <business>" names an IVR only in a monologue, not a live short greeting
    entry = MANIFEST["human_short_02.wav"]
    end = entry["greeting_end"]
    v = amd_file(FIXTURES / entry["file"], transcripts=[(end, "welcome to joe's", True)])
    assert v.category == "human"
    assert "short greeting" in v.reason


@pytest.mark.parametrize(
    ("first", "category"),
    [("yes hello sorry", "human"), ("hello sorry", "machine-vm")],
)
def test_an_ambiguous_greeting_opening_with_yes_leans_human(first: str, category: str) -> None:
    # 2.8 s of speech, no phrase heard: the length alone leans machine; an answer word
    # ("yes", "yeah") at the start of the call is someone replying to the ring
    entry = MANIFEST["human_long_06.wav"]
    heard = [(2.8, first, True), (5.1, "i went in the corner room", True)]
    v = amd_file(FIXTURES / entry["file"], transcripts=heard)
    assert v.category == category
    assert "ambiguous greeting" in v.reason
    assert v.decided_at - entry["greeting_end"] <= 1.0


def test_short_greeting_then_silence_is_human_within_a_second() -> None:
    entry = MANIFEST["human_short_02.wav"]
    clf = AMDClassifier(RATE)
    v = feed(clf, read_wav(FIXTURES / entry["file"]).samples)
    assert v is not None and v.category == "human"
    assert 0.0 < v.decided_at - entry["greeting_end"] <= 1.0


def test_reset_forgets_the_call() -> None:
    clf = AMDClassifier(RATE, timeout_seconds=1.0)
    assert feed(clf, noise(2.0)) is not None
    clf.reset()
    assert clf.verdict is None and clf.now == 0.0 and clf.transcript == ""


def test_verdict_json() -> None:
    v = Verdict("machine-vm", 0.951234, "beep", 5.12345, beep_at=4.9)
    assert v.to_json() == {
        "category": "machine-vm",
        "confidence": 0.951,
        "reason": "beep",
        "decided_at": 5.123,
        "beep_at": 4.9,
        "evidence": {},
    }


# -- real fixtures end to end (reference transcripts; the offline phrase STT for a few)


@pytest.mark.parametrize(
    "name",
    [
        "human_short_05.wav",
        "human_long_03.wav",
        "vm_beep_04.wav",
        "vm_nobeep_02.wav",
        "mailbox_full_01.wav",
        "not_available_00.wav",  # SIT tones
        "ivr_00.wav",
        "dead_air_00.wav",
    ],
)
def test_fixture_end_to_end(name: str) -> None:
    entry = MANIFEST[name]
    v = amd_file(FIXTURES / name, transcripts=reference_transcripts(entry["speech"]))
    assert v.category == entry["label"]
    assert v.decided_at <= 8.0
    if entry["greeting_end"] is not None:
        limit = 1.0 if entry["label"] == "human" else 1.5
        assert v.decided_at - entry["greeting_end"] <= limit
    if entry["beep_at"] is not None:
        assert v.beep_at == pytest.approx(entry["beep_at"], abs=0.06)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("human_short_08.wav", "short greeting"),
        ("ivr_00.wav", "phrase 'for sale"),  # decided mid-menu, before its end
        ("vm_nobeep_02.wav", "greeting ended; phrase"),  # a voicemail phrase, no beep
        ("not_available_01.wav", "phrase 'number you have dialed"),  # short, no SIT
    ],
)
def test_fixture_end_to_end_with_the_offline_stt(name: str, reason: str) -> None:
    entry = MANIFEST[name]
    v = amd_file(
        FIXTURES / name
    )  # default transcriber: Moonshine and pipelines.amd.phrase_lm together
    assert v.category == entry["label"]
    assert reason in v.reason
    limit = 1.0 if entry["label"] == "human" else 1.5
    assert v.decided_at - entry["greeting_end"] <= limit


# -- async adapter


async def test_detector_answers_at_the_deadline_when_audio_stalls() -> None:
    det = AMDDetector(RATE, timeout_seconds=0.3)
    det.push_audio(noise(0.1))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    v = await det.wait()
    assert v.category == "uncertain"
    assert loop.time() - t0 < 0.5


async def test_detector_uses_tiebreaker_on_an_ambiguous_greeting() -> None:
    asked: list[str] = []

    async def tiebreaker(text: str) -> AMDCategory | None:
        asked.append(text)
        return "machine-vm"

    entry = MANIFEST["human_long_01.wav"]  # ~2 s of speech: between the length rules
    x = read_wav(FIXTURES / entry["file"]).samples
    det = AMDDetector(RATE, timeout_seconds=8.0, tiebreaker=tiebreaker)
    det.push_transcript("blah blah blah", is_final=True)
    for i in range(0, len(x), 160):
        det.push_audio(x[i : i + 160])
        await asyncio.sleep(0)
        if det.core.verdict:
            break
    v = await det.wait()
    await det.aclose()
    assert asked == ["blah blah blah"]
    assert v.category == "machine-vm" and v.reason.endswith("tiebreaker")


async def test_slow_tiebreaker_cannot_hold_the_call() -> None:
    async def slow(text: str) -> AMDCategory | None:
        await asyncio.sleep(10)
        return "human"

    det = AMDDetector(RATE, timeout_seconds=0.4, tiebreaker=slow, tiebreak_timeout=5.0)
    det.push_transcript("something", is_final=True)
    v = await asyncio.wait_for(det.wait(), 1.0)
    await det.aclose()
    assert v.decided_at == 0.4


def test_a_long_greeting_waits_for_its_final_transcript_before_guessing_by_length() -> None:
    # a live STT finalises a segment after its own endpointing and compute: the full
    # mailbox's words arrive 1.1 s after it ended, past the end silence
    entry = MANIFEST["mailbox_full_00.wav"]
    end = entry["greeting_end"]
    late = [(end + 1.1, "the mailbox is full and cannot accept any messages", True)]
    guessed = amd_file(FIXTURES / entry["file"], transcripts=late)
    assert guessed.category == "machine-vm" and "long greeting" in guessed.reason
    waited = amd_file(FIXTURES / entry["file"], transcripts=late, transcript_wait=1.25)
    assert waited.category == "machine-unavailable"
    assert end + 1.1 <= waited.decided_at <= end + 1.2


def test_the_transcript_wait_is_bounded_and_spares_short_greetings() -> None:
    long_entry = MANIFEST["vm_nobeep_01.wav"]
    v = amd_file(FIXTURES / long_entry["file"], transcripts=[], transcript_wait=1.25)
    assert v.category == "machine-vm"  # no final ever came: the length decides, later
    assert 0.75 + 1.25 - 0.1 <= v.decided_at - long_entry["greeting_end"] <= 0.75 + 1.25 + 0.3
    short = MANIFEST["human_short_02.wav"]
    h = amd_file(FIXTURES / short["file"], transcripts=[], transcript_wait=1.25)
    assert h.category == "human" and h.decided_at - short["greeting_end"] <= 1.0
    with pytest.raises(ValueError, match="transcript_wait"):
        AMDClassifier(RATE, transcript_wait=-1.0)
