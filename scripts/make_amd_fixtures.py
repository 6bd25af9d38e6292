"""Generates the labelled answering-machine-detection recordings in ``fixtures/amd/``.

Every recording is what the caller hears after the callee picks up: 8 kHz 16-bit mono,
telephone band, line noise. Speech comes from espeak-ng (several voices and rates), band
limiting from sox, everything else (gaps, beeps, DTMF, SIT tones, noise) from numpy with a
fixed seed per recording, so a rerun rewrites identical files.

    python scripts/make_amd_fixtures.py [--out fixtures/amd]

``manifest.json`` lists, per file: ``label`` (an AMD category), ``greeting_end`` (seconds
at which the callee's first greeting ends: the end of the first utterance for a human,
the end of the whole recorded message for a machine), ``beep_at`` (seconds, or null),
``seed`` (the generator seed; even seeds are the tuning half, odd seeds the held-out half),
``speech`` (``[start, end, text]`` of every spoken phrase: the reference transcript) and
``description``.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.audio import Audio, Float32Array, int16_to_float, write_wav

RATE = 8000
VOICES = (
    "en-us",
    "en-us+f2",
    "en-us+klatt",
    "en-gb+m3",
    "en-us+f4",
    "en-029",
    "en-gb-x-rp+m2",
    "en-us+Annie",
)

HUMAN_SHORT = (
    "Hello?",
    "Hello.",
    "Hi, this is Sam.",
    "Yeah, hello?",
    "Hello, who's this?",
    "Sam speaking.",
    "Hi there.",
    "Hello, Dana here.",
    "Yes?",
    "Good morning.",
)
HUMAN_LONG = (
    ("Hi, this is Sam.", "Sorry, I'm just driving, who is calling please?"),
    ("Hello, yes, this is Jordan speaking.", "How can I help you?"),
    ("Good afternoon, Acme plumbing, this is Dana.",),
    ("Hello?", "Yeah, I can hear you, go ahead."),
    ("Hi, you got Chris.", "What's up?"),
    ("Hello, this is Pat, who am I speaking with?",),
    ("Yes, hello, sorry,", "I was in the other room, who is this?"),
    ("Morning, Riley here.", "Who's calling?"),
)
VOICEMAIL = (
    ("Hi, you've reached Sam.", "I can't take your call right now.", "Please leave a message."),
    (
        "Hello, you have reached the voicemail of Jordan Lee.",
        "Please leave a message after the tone.",
    ),
    ("Hey, it's Chris.", "Leave a message and I'll get back to you."),
    ("You have reached 5 5 5, 0 1 4 2.", "Please leave your message after the beep."),
    (
        "Hi, this is Dana.",
        "I'm not available right now.",
        "Leave your name and number after the tone.",
    ),
    ("Thanks for calling Pat.", "Sorry I missed you,", "leave a message and I will call you back."),
    (
        "The person you are calling cannot take your call.",
        "Please record your message after the tone.",
    ),
    ("Hello, you've reached the Morgan family.", "We can't come to the phone.", "Leave a message."),
    ("Riley here.", "Can't talk now, leave a message."),
)
MAILBOX_FULL = (
    ("The mailbox is full and cannot accept any messages at this time.", "Goodbye."),
    ("Sorry, the mailbox of the person you are calling is full.", "Please try again later."),
    ("The voice mailbox is full and cannot accept new messages.",),
    ("This mailbox is full.", "Goodbye."),
)
NOT_AVAILABLE = (
    ("The person you are calling is not available.", "Please try again later."),
    ("The number you have dialed is not available.",),
    ("The subscriber you have called is not available at the moment.", "Please try later."),
    (
        "The wireless customer you are calling is not available.",
        "Please try your call again later.",
    ),
)
IVR = (
    ("Thank you for calling Acme.", "For sales, press 1.", "For support, press 2."),
    (
        "Welcome to First National Bank.",
        "Please listen carefully, as our menu options have changed.",
        "For account balances, press 1.",
    ),
    (
        "Thanks for calling City Dental.",
        "To book an appointment, press 1.",
        "For billing, press 2.",
        "To speak to the operator, press 0.",
    ),
    (
        "You have reached the main office.",
        "If you know your party's extension, dial it now.",
        "For a directory, press 9.",
    ),
    ("Hello, and welcome to Acme support.", "Para espanol, oprima dos.", "For English, press 1."),
    ("Thank you for calling.", "For hours and directions, press 1.", "For pharmacy, press 2."),
)


@dataclass
class Recording:
    """One fixture being assembled: audio so far plus its labels."""

    name: str
    label: str
    seed: int
    description: str
    rng: np.random.Generator
    parts: list[Float32Array] = field(default_factory=list)
    greeting_end: float | None = None
    speech: list[tuple[float, float, str]] = field(default_factory=list)
    beep_at: float | None = None

    @property
    def duration(self) -> float:
        return sum(len(p) for p in self.parts) / RATE

    def add(self, x: Float32Array) -> float:
        """Appends audio, returns its start time."""
        start = self.duration
        self.parts.append(x.astype(np.float32))
        return start

    def gap(self, seconds: float) -> None:
        self.add(np.zeros(round(seconds * RATE), dtype=np.float32))

    def say(self, text: str, voice: str, rate: int, level_db: float) -> tuple[float, float]:
        speech = synth(text, voice, rate)
        peak = float(np.max(np.abs(speech))) or 1.0
        start = self.add(speech / peak * 10 ** (level_db / 20))
        self.speech.append((round(start, 3), round(self.duration, 3), text))
        return start, self.duration


def synth(text: str, voice: str, rate: int) -> Float32Array:
    """espeak-ng speech at 8 kHz, band-limited like a phone line, silence trimmed."""
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(rate), "--stdout", text],
        check=True,
        capture_output=True,
    ).stdout
    band = subprocess.run(
        [
            "sox",
            "-D",
            "-t",
            "wav",
            "-",
            "-t",
            "wav",
            "-r",
            str(RATE),
            "-b",
            "16",
            "-",
            "highpass",
            "250",
            "lowpass",
            "3400",
        ],
        input=wav,
        check=True,
        capture_output=True,
    ).stdout
    with wave.open(io.BytesIO(band), "rb") as wf:
        x = int16_to_float(wf.readframes(wf.getnframes()))
    loud = np.flatnonzero(np.abs(x) > 0.01 * float(np.max(np.abs(x))))
    return x[loud[0] : loud[-1] + 1] if len(loud) else x


def tone(freqs: tuple[float, ...], seconds: float, level_db: float) -> Float32Array:
    t = np.arange(round(seconds * RATE)) / RATE
    x = sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs)
    ramp = min(len(t) // 2, round(0.005 * RATE))
    env = np.ones(len(t))
    env[:ramp] = np.linspace(0, 1, ramp)
    env[len(t) - ramp :] = np.linspace(1, 0, ramp)
    return (x * env * 10 ** (level_db / 20)).astype(np.float32)


DTMF = {"1": (697, 1209), "2": (697, 1336), "5": (770, 1336), "9": (852, 1477), "0": (941, 1336)}
SIT = ((913.8, 0.274), (1370.6, 0.274), (1776.7, 0.380))


def line_noise(n: int, rng: np.random.Generator, level_db: float) -> Float32Array:
    """Hiss plus a little mains hum, the idle sound of a phone line."""
    hiss = rng.standard_normal(n)
    hiss = np.convolve(hiss, np.ones(3) / 3, mode="same")
    hiss *= 10 ** (level_db / 20) / (np.std(hiss) or 1.0)
    hum = 10 ** ((level_db - 6) / 20) * np.sin(2 * np.pi * 60 * np.arange(n) / RATE)
    return (hiss + hum).astype(np.float32)


def finish(rec: Recording, out: Path, tail: float) -> dict[str, object]:
    rec.gap(tail)
    x = np.concatenate(rec.parts)
    noise_db = float(rec.rng.uniform(-58, -40))
    x = x + line_noise(len(x), rec.rng, noise_db)
    write_wav(out / f"{rec.name}.wav", Audio(np.clip(x, -1, 1).astype(np.float32), RATE))
    return {
        "file": f"{rec.name}.wav",
        "label": rec.label,
        "greeting_end": None if rec.greeting_end is None else round(rec.greeting_end, 3),
        "beep_at": None if rec.beep_at is None else round(rec.beep_at, 3),
        "seed": rec.seed,
        "speech": [list(s) for s in rec.speech],
        "description": f"{rec.description}; noise {noise_db:.0f} dBFS",
    }


def speaker(rng: np.random.Generator) -> tuple[str, int, float]:
    voice = VOICES[int(rng.integers(len(VOICES)))]
    return voice, int(rng.integers(135, 200)), float(rng.uniform(-12, -3))


def human_short(rec: Recording, i: int) -> float:
    voice, rate, level = speaker(rec.rng)
    text = HUMAN_SHORT[i % len(HUMAN_SHORT)]
    rec.gap(rec.rng.uniform(0.2, 1.2))
    _, rec.greeting_end = rec.say(text, voice, rate, level)
    rec.description = f"human, short answer {text!r} ({voice} {rate} wpm)"
    if rec.rng.random() < 0.4:
        # nobody answered the answer: the human says hello again
        rec.gap(rec.rng.uniform(2.5, 3.5))
        rec.say("Hello?", voice, rate, level)
        rec.description += ", repeats 'Hello?' after a pause"
    return float(rec.rng.uniform(3.0, 5.0))


def human_long(rec: Recording, i: int) -> float:
    voice, rate, level = speaker(rec.rng)
    phrases = HUMAN_LONG[i % len(HUMAN_LONG)]
    rec.gap(rec.rng.uniform(0.2, 1.0))
    for k, text in enumerate(phrases):
        if k:
            rec.gap(rec.rng.uniform(0.15, 0.45))
        _, rec.greeting_end = rec.say(text, voice, rate, level)
    rec.description = f"human, longer answer {' '.join(phrases)!r} ({voice} {rate} wpm)"
    if rec.rng.random() < 0.3:
        rec.gap(rec.rng.uniform(0.6, 1.5))
        key = "5" if rec.rng.random() < 0.5 else "1"
        rec.add(tone(DTMF[key], 0.12, -12))
        rec.description += f", presses DTMF {key} by accident"
    return float(rec.rng.uniform(3.0, 5.0))


def machine(rec: Recording, phrases: tuple[str, ...], kind: str) -> None:
    voice, rate, level = speaker(rec.rng)
    rec.gap(rec.rng.uniform(0.1, 0.8))
    for k, text in enumerate(phrases):
        if k:
            rec.gap(rec.rng.uniform(0.2, 0.55))
        _, rec.greeting_end = rec.say(text, voice, rate, level)
    rec.description = f"{kind} {' '.join(phrases)!r} ({voice} {rate} wpm)"


def voicemail(rec: Recording, i: int, beep: bool) -> float:
    machine(rec, VOICEMAIL[i % len(VOICEMAIL)], "voicemail greeting")
    if beep:
        rec.gap(rec.rng.uniform(0.2, 0.9))
        freq = float(rec.rng.choice([440, 700, 850, 1000, 1400, 1800]) + rec.rng.uniform(-20, 20))
        length = float(rec.rng.uniform(0.25, 1.2))
        rec.beep_at = rec.add(tone((freq,), length, float(rec.rng.uniform(-16, -6))))
        rec.description += f", beep {freq:.0f} Hz {length:.2f} s"
    else:
        rec.description += ", no beep"
    return float(rec.rng.uniform(2.0, 4.0))


def unavailable(rec: Recording, i: int, full: bool) -> float:
    if not full and i % 2 == 0:
        rec.gap(0.2)
        for freq, length in SIT:
            rec.add(tone((freq,), length, -14))
        sit = True
    else:
        sit = False
    table = MAILBOX_FULL if full else NOT_AVAILABLE
    machine(rec, table[i % len(table)], "mailbox full" if full else "callee not available")
    if sit:
        rec.description = "SIT tones, then " + rec.description
    return float(rec.rng.uniform(1.5, 3.0))


def ivr(rec: Recording, i: int) -> float:
    machine(rec, IVR[i % len(IVR)], "IVR menu")
    return float(rec.rng.uniform(1.0, 2.5))


def dead_air(rec: Recording, i: int) -> float:
    rec.description = "dead air: the callee picked up and never spoke"
    return 10.0


def build(out: Path) -> list[dict[str, object]]:
    plan: list[tuple[str, str, int]] = (
        [("human_short", "human", i) for i in range(12)]
        + [("human_long", "human", i) for i in range(8)]
        + [("vm_beep", "machine-vm", i) for i in range(10)]
        + [("vm_nobeep", "machine-vm", i) for i in range(6)]
        + [("mailbox_full", "machine-unavailable", i) for i in range(4)]
        + [("not_available", "machine-unavailable", i) for i in range(4)]
        + [("ivr", "machine-ivr", i) for i in range(8)]
        + [("dead_air", "uncertain", i) for i in range(2)]
    )
    out.mkdir(parents=True, exist_ok=True)
    manifest = []
    for seed, (kind, label, i) in enumerate(plan):
        rec = Recording(f"{kind}_{i:02d}", label, seed, "", np.random.default_rng(1000 + seed))
        if kind == "human_short":
            tail = human_short(rec, i)
        elif kind == "human_long":
            tail = human_long(rec, i)
        elif kind in ("vm_beep", "vm_nobeep"):
            tail = voicemail(rec, i + (3 if kind == "vm_nobeep" else 0), kind == "vm_beep")
        elif kind in ("mailbox_full", "not_available"):
            tail = unavailable(rec, i, kind == "mailbox_full")
        elif kind == "ivr":
            tail = ivr(rec, i)
        else:
            tail = dead_air(rec, i)
        manifest.append(finish(rec, out, tail))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "fixtures" / "amd")
    args = parser.parse_args()
    manifest = build(args.out)
    print(f"wrote {len(manifest)} recordings to {args.out}")


if __name__ == "__main__":
    main()
