"""The AMD window's own transcripts (``AMDTranscripts``) against its real transcriber child:
callee audio pushed at the pace of a call, interims while an utterance is open, a final per
utterance, all before the utterance ends plus a bounded delay."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np

from pipelines.audio import read_wav, resample
from pipelines.providers.amd_transcripts import RATE, AMDTranscripts

AMD = Path(__file__).resolve().parents[4] / "fixtures" / "amd"


def fixture(label: str) -> tuple[np.ndarray, list[list[object]]]:
    entry = next(e for e in json.loads((AMD / "manifest.json").read_text()) if e["label"] == label)
    audio = read_wav(AMD / entry["file"])
    return resample(audio.samples, audio.sample_rate, RATE), entry["speech"]


async def test_an_ivr_menu_is_read_while_it_plays() -> None:
    samples, speech = fixture("machine-ivr")
    results: list[tuple[float, str, bool]] = []
    own = AMDTranscripts(lambda text, final: results.append((time.monotonic(), text, final)))
    own.start()
    await asyncio.sleep(4.0)  # the phone rings while both models load
    chunk = RATE // 50
    t0 = time.monotonic()
    try:
        for i in range(0, len(samples) + RATE, chunk):  # the menu, then a second of silence
            own.push(samples[i : i + chunk] if i < len(samples) else np.zeros(chunk, np.float32))
            await asyncio.sleep(max(0.0, t0 + (i + chunk) / RATE - time.monotonic()))
        await asyncio.sleep(3.0)
    finally:
        await own.aclose()
    assert not own.failed
    finals = [(at - t0, text) for at, text, final in results if final]
    interims = [(at - t0, text) for at, text, final in results if not final]
    print("finals", finals, "interims", interims)
    # one final per phrase of the menu (its pauses are longer than the 0.3 s cut)
    assert len(finals) == len(speech)
    heard = " ".join(text for _, text in finals)
    for word in ("calling", "press"):
        assert word in heard, heard
    # each phrase's final comes within 3 s of its end (under 1.5 s on a quiet machine)
    for (at, _), (_, end, _) in zip(finals, speech, strict=True):
        assert at - float(end) < 3.0, (at, end)  # type: ignore[arg-type]


async def test_off_when_the_call_stt_streams() -> None:
    results: list[str] = []
    own = AMDTranscripts(lambda text, final: results.append(text), enabled=False)
    own.start()
    own.push(np.full(RATE, 0.3, dtype=np.float32))
    await own.aclose()
    assert own.failed and own.requests == 0 and results == []
