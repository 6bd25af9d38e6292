"""Generates the caller recordings in fixtures/audio/ with espeak-ng and sox.

Deterministic: same espeak-ng/sox versions give the same files. Each fixture is a list of
caller turns separated by silences long enough for the agent to answer; the turn texts
and timings go to ``fixtures/audio/manifest.json`` so tests and benchmarks know where
each turn ends.

    python scripts/make_audio_fixtures.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from pipelines.audio import Audio, read_wav, resample, write_wav  # noqa: E402

OUT = ROOT / "fixtures" / "audio"
RATE = 16000
LEAD_IN = 4.0
"""Silence before the first turn: the agent greets first."""

FIXTURES: dict[str, dict[str, object]] = {
    "booking_two_turns": {
        "voice": "en-us+m3",
        "gap": 9.0,
        "turns": [
            "Hello, I would like to book a cleaning appointment.",
            "My name is Sam Carter, and next Tuesday morning works for me.",
        ],
    },
    "hours_question": {
        "voice": "en-gb+f3",
        "gap": 9.0,
        "turns": ["Hi, what time do you open tomorrow?", "Thank you, goodbye."],
    },
    "short_hello": {"voice": "en-us", "gap": 6.0, "turns": ["Hello?"]},
    # One clear turn and almost no trailing silence: the caller keeps listening for the
    # answer (integration tests end the call as soon as it has played).
    "one_turn": {
        "voice": "en-us+m3",
        "gap": 1.0,
        "turns": ["Hello, I would like to book a cleaning appointment."],
    },
}


def speak(text: str, voice: str, rate: int = 160) -> Audio:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(rate), "-w", str(raw), text], check=True
        )
        # A telephone-ish band and a little level headroom, as a caller would sound.
        band = Path(tmp) / "band.wav"
        subprocess.run(
            ["sox", str(raw), "-r", str(RATE), str(band), "sinc", "200-3600", "gain", "-n", "-3"],
            check=True,
        )
        audio = read_wav(band)
    return Audio(resample(audio.samples, audio.sample_rate, RATE), RATE)


def build(name: str, spec: dict[str, object]) -> dict[str, object]:
    voice, gap = str(spec["voice"]), float(spec["gap"])  # type: ignore[arg-type]
    parts = [np.zeros(int(LEAD_IN * RATE), dtype=np.float32)]
    t = LEAD_IN
    turns = []
    for text in spec["turns"]:  # type: ignore[attr-defined]
        speech = speak(str(text), voice).samples
        turns.append({"text": text, "start": round(t, 3), "end": round(t + len(speech) / RATE, 3)})
        parts += [speech, np.zeros(int(gap * RATE), dtype=np.float32)]
        t += len(speech) / RATE + gap
    write_wav(OUT / f"{name}.wav", Audio(np.concatenate(parts), RATE))
    return {"file": f"{name}.wav", "sample_rate": RATE, "turns": turns, "duration": round(t, 3)}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    manifest = {name: build(name, spec) for name, spec in FIXTURES.items()}
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps({k: v["duration"] for k, v in manifest.items()}))


if __name__ == "__main__":
    main()
