"""``voice-worker bench stt``: word error rate of the offline call STTs (Moonshine, its
pocketsphinx fallback) on the fixture callers and on espeak-ng voices, at 16 kHz and at
8 kHz (telephone band: the audio goes down to 8 kHz and the STT takes it from there).

Each utterance is one whole VAD segment, as a call's STT gets it: the fixture callers'
turns (from ``fixtures/audio/manifest.json``) and ``SENTENCES`` said by each of
``VOICES``, with silence around. Both engines run as in a call, in their child processes
(``MoonshineSTT`` recycles its child by memory, and the report says how its memory went
over the run).

The sentences come in two halves fixed by a hash of their text (``held_out``): the
"dev" half is the one to look at while working on the STT, the "held_out" half is
reported beside it to show whether a change only fits the sentences it was tuned on.
WER = (substitutions + deletions + insertions) / reference words, pooled per group.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import APIConnectOptions

from pipelines.audio import Audio, Float32Array, float_to_int16, read_wav, resample
from pipelines.engines import EspeakEngine, normalise_text
from pipelines.providers import MoonshineSTT, PocketsphinxSTT
from worker.dev.bench.common import AUDIO_FIXTURES, progress

GOAL_WER_16K = 0.15
"""The issue's goal for Moonshine at 16 kHz."""

VOICES = ("en-us", "en-us+f3", "en-gb+m7")
"""espeak-ng voices the sentences are said in: US male, US female, UK male."""

SENTENCES = (
    "I would like to move my appointment to Friday afternoon",
    "can you tell me how much the first consultation costs",
    "my phone number changed last month and I need to update it",
    "is there parking near your office or should I take the bus",
    "I am calling about the invoice I received yesterday",
    "could somebody call me back after five o'clock please",
    "we need a table for four people on Saturday evening",
    "my package was supposed to arrive this morning but it never came",
    "do you accept insurance or do I have to pay myself",
    "I think I left my umbrella in your waiting room",
    "what documents should I bring to the first meeting",
    "the heating in our apartment stopped working last night",
)
"""Caller-style sentences, none from the fixtures; halves by ``held_out``."""

RATES = (16000, 8000)
PATIENT = APIConnectOptions(max_retry=0, timeout=120.0)
"""A benchmark scores what is heard, however slowly a shared machine hears it."""
ENGINES = ("moonshine", "pocketsphinx")


def held_out(sentence: str) -> bool:
    """The sentence's half, fixed by its text: held out when its SHA-256 starts odd."""
    return hashlib.sha256(sentence.encode()).digest()[0] % 2 == 1


def normalise_words(text: str) -> list[str]:
    """Lowercase words without punctuation ("O'clock." -> ["o'clock"])."""
    return normalise_text(text).split()


def word_errors(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance in words: substitutions + deletions + insertions."""
    prev = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        cur = [i] + [0] * len(hypothesis)
        for j, hyp in enumerate(hypothesis, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ref != hyp))
        prev = cur
    return prev[-1]


@dataclass(frozen=True)
class Utterance:
    source: str
    """"fixture" or the espeak voice."""
    half: str
    """"fixture", "dev" or "held_out"."""
    text: str
    audio: Audio


def fixture_turns(manifest: Path = AUDIO_FIXTURES / "manifest.json") -> list[Utterance]:
    """Each fixture caller's turns, cut with 0.3 s of context on each side."""
    out: list[Utterance] = []
    seen: set[str] = set()
    for name, entry in json.loads(manifest.read_text()).items():
        audio = read_wav(manifest.parent / entry["file"])
        rate = audio.sample_rate
        for turn in entry["turns"]:
            if turn["text"] in seen:  # one_turn.wav repeats booking's first turn
                continue
            seen.add(turn["text"])
            a = max(0, int((turn["start"] - 0.3) * rate))
            b = min(len(audio.samples), int((turn["end"] + 0.3) * rate))
            out.append(
                Utterance(
                    f"fixture:{name}", "fixture", turn["text"], Audio(audio.samples[a:b], rate)
                )
            )
    return out


def espeak_utterances(voices: Sequence[str] = VOICES) -> list[Utterance]:
    out = []
    for voice in voices:
        engine = EspeakEngine(voice=voice)
        for sentence in SENTENCES:
            speech = engine.synthesize(sentence)
            pad = np.zeros(int(0.3 * speech.sample_rate), dtype=np.float32)
            samples = np.concatenate([pad, speech.samples, pad])
            half = "held_out" if held_out(sentence) else "dev"
            out.append(Utterance(voice, half, sentence, Audio(samples, speech.sample_rate)))
    return out


def _frames(samples: Float32Array, rate: int) -> list[rtc.AudioFrame]:
    pcm = float_to_int16(samples)
    return [rtc.AudioFrame(pcm.tobytes(), rate, 1, len(pcm))]


def _at_rate(audio: Audio, rate: int) -> Float32Array:
    return resample(audio.samples, audio.sample_rate, rate)


async def _transcribe_all(
    engine: str, utterances: Sequence[Utterance]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    stt: MoonshineSTT | PocketsphinxSTT = (
        MoonshineSTT() if engine == "moonshine" else PocketsphinxSTT()
    )
    rows: list[dict[str, Any]] = []
    rss: list[float] = []
    try:
        for rate in RATES:
            for u in utterances:
                started = time.perf_counter()
                ev = await stt.recognize(
                    _frames(_at_rate(u.audio, rate), rate), conn_options=PATIENT
                )
                took = time.perf_counter() - started
                heard = ev.alternatives[0].text if ev.alternatives else ""
                ref, hyp = normalise_words(u.text), normalise_words(heard)
                rows.append(
                    {
                        "engine": engine,
                        "rate": rate,
                        "source": u.source,
                        "half": u.half,
                        "said": u.text,
                        "heard": heard,
                        "words": len(ref),
                        "errors": word_errors(ref, hyp),
                        "seconds": round(took, 3),
                    }
                )
                if isinstance(stt, MoonshineSTT):
                    rss.append(stt.child.rss_mb)
            progress(f"stt {engine} at {rate} Hz: {len(utterances)} utterances")
        memory: dict[str, Any] = {}
        if isinstance(stt, MoonshineSTT):
            memory = {
                "child_rss_mb_max": max(rss),
                "child_rss_mb_last": rss[-1],
                "child_recycled": stt.child.recycled,
                "segments": len(rss),
                "limit_mb": stt.child.max_rss_mb,
            }
        return rows, memory
    finally:
        await stt.aclose()


def _wer(rows: Sequence[dict[str, Any]]) -> float | None:
    words = sum(r["words"] for r in rows)
    return round(sum(r["errors"] for r in rows) / words, 3) if words else None


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """WER per engine, rate and half, and per espeak voice (both halves)."""
    out: dict[str, Any] = {}
    for engine in ENGINES:
        for rate in RATES:
            mine = [r for r in rows if r["engine"] == engine and r["rate"] == rate]
            if not mine:
                continue
            out[f"{engine}_{rate // 1000}k"] = {
                "fixture_callers": _wer([r for r in mine if r["half"] == "fixture"]),
                "espeak_dev": _wer([r for r in mine if r["half"] == "dev"]),
                "espeak_held_out": _wer([r for r in mine if r["half"] == "held_out"]),
                "per_voice": {
                    v: _wer([r for r in mine if r["source"] == v])
                    for v in dict.fromkeys(r["source"] for r in mine if r["half"] != "fixture")
                },
                "seconds_per_utterance": round(sum(r["seconds"] for r in mine) / len(mine), 3),
            }
    return out


async def bench_stt(
    engines: Sequence[str] = ENGINES, voices: Sequence[str] = VOICES
) -> dict[str, Any]:
    utterances = fixture_turns() + espeak_utterances(voices)
    rows: list[dict[str, Any]] = []
    memory: dict[str, Any] = {}
    for engine in engines:
        got, mem = await _transcribe_all(engine, utterances)
        rows += got
        memory = memory or mem
    wer = summarise(rows)
    goal: dict[str, Any] = {}
    if "moonshine_16k" in wer:
        worst = max(
            w
            for k, w in wer["moonshine_16k"].items()
            if k.startswith(("fixture", "espeak")) and w is not None
        )
        goal = {
            "moonshine_16k_wer_max": worst,
            "goal": f"<= {GOAL_WER_16K}",
            "met": worst <= GOAL_WER_16K,
        }
    return {
        "goal": goal,
        "wer": wer,
        "moonshine_memory": memory,
        "halves": {
            "dev": [s for s in SENTENCES if not held_out(s)],
            "held_out": [s for s in SENTENCES if held_out(s)],
        },
        "turns": rows,
    }
