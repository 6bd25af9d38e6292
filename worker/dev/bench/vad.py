"""VAD benchmark: cost per 10 ms frame, memory per stream, and agreement with silero.

Each fixture is a 16-bit WAV; if ``<name>.json`` beside it holds ``speech_segments`` (or
``segments``) as ``[[start, end], ...]`` in seconds, both VADs are also scored against those
labels. With no fixtures, a labelled one is generated with espeak-ng.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.audio import (
    Audio,
    VADCore,
    WebRTCVAD,
    detect_segments,
    float_to_int16,
    read_wav,
    write_wav,
)

GOAL_MS_PER_FRAME = 0.05
"""The issue's budget for VAD + endpointing per 10 ms of audio."""
GRID = 0.01

Segments = list[tuple[float, float]]


def bench_vad(fixtures: list[Path]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        paths = list(fixtures) or [_generated_fixture(Path(tmp))]
        rows = [_bench_one(p) for p in paths]
    core_ms = [r["webrtcvad"]["ms_per_10ms_frame"] for r in rows]
    summary: dict[str, Any] = {
        "goal_ms_per_10ms_frame": GOAL_MS_PER_FRAME,
        "webrtcvad_ms_per_10ms_frame_max": max(core_ms),
        "webrtcvad_within_goal": max(core_ms) <= GOAL_MS_PER_FRAME,
        "memory_per_stream_bytes": _memory_per_stream(keep_speech_audio=True),
        "memory_per_stream_bytes_without_speech_audio": _memory_per_stream(keep_speech_audio=False),
    }
    silero_ms = [r["silero"]["ms_per_10ms_frame"] for r in rows if "silero" in r]
    if silero_ms:
        summary["silero_ms_per_10ms_frame_max"] = max(silero_ms)
        summary["agreement_mean"] = float(np.mean([r["agreement"] for r in rows]))
    return {"summary": summary, "fixtures": rows}


def _bench_one(path: Path) -> dict[str, Any]:
    audio = read_wav(path)
    labels = _labels(path)
    step = audio.sample_rate // 100
    chunks = [audio.samples[i : i + step] for i in range(0, len(audio.samples), step)]

    core = VADCore(keep_speech_audio=False)
    started = time.perf_counter()
    for chunk in chunks:
        core.push(chunk, audio.sample_rate)
    core_s = time.perf_counter() - started

    stream_s = asyncio.run(_livekit_stream_seconds(WebRTCVAD.load(), audio))
    webrtc = detect_segments(audio)
    row: dict[str, Any] = {
        "fixture": str(path),
        "duration_s": round(audio.duration, 3),
        "sample_rate": audio.sample_rate,
        "webrtcvad": {
            "ms_per_10ms_frame": round(core_s * 1000 / len(chunks), 5),
            "real_time_factor": core_s / audio.duration,
            "livekit_stream_ms_per_10ms_frame": round(stream_s * 1000 / len(chunks), 5),
            "segments": webrtc,
        },
    }
    if labels is not None:
        row["reference_segments"] = labels
        row["webrtcvad"].update(_scores(webrtc, labels, audio.duration))
    silero_result = _silero(audio)
    if silero_result is not None:
        silero_segments, silero_s = silero_result
        row["silero"] = {
            "ms_per_10ms_frame": round(silero_s * 1000 / len(chunks), 5),
            "real_time_factor": silero_s / audio.duration,
            "segments": silero_segments,
        }
        if labels is not None:
            row["silero"].update(_scores(silero_segments, labels, audio.duration))
        row["agreement"] = _agreement(webrtc, silero_segments, audio.duration)
    return row


def _labels(path: Path) -> Segments | None:
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return None
    data = json.loads(sidecar.read_text())
    raw = data.get("speech_segments", data.get("segments")) if isinstance(data, dict) else None
    if not isinstance(raw, list):
        return None
    return [(float(s), float(e)) for s, e in raw]


def _mask(segments: Segments, duration: float) -> np.ndarray[Any, np.dtype[np.bool_]]:
    n = int(np.ceil(duration / GRID))
    mask = np.zeros(n, dtype=bool)
    for start, end in segments:
        mask[round(start / GRID) : round(end / GRID)] = True
    return mask


def _agreement(a: Segments, b: Segments, duration: float) -> float:
    return round(float(np.mean(_mask(a, duration) == _mask(b, duration))), 4)


def _scores(got: Segments, ref: Segments, duration: float) -> dict[str, float]:
    g, r = _mask(got, duration), _mask(ref, duration)
    tp = float(np.sum(g & r))
    return {
        "frame_accuracy": round(float(np.mean(g == r)), 4),
        "precision": round(tp / max(1.0, float(g.sum())), 4),
        "recall": round(tp / max(1.0, float(r.sum())), 4),
    }


async def _livekit_stream_seconds(vad: WebRTCVAD, audio: Audio) -> float:
    from livekit import rtc

    step = audio.sample_rate // 100
    pcm = float_to_int16(audio.samples)
    frames = [
        rtc.AudioFrame(pcm[i : i + step].tobytes(), audio.sample_rate, 1, step)
        for i in range(0, len(pcm) - step + 1, step)
    ]
    stream = vad.stream()
    started = time.perf_counter()
    for frame in frames:
        stream.push_frame(frame)
    stream.end_input()
    async for _ in stream:
        pass
    elapsed = time.perf_counter() - started
    await stream.aclose()
    return elapsed


def _silero(audio: Audio) -> tuple[Segments, float] | None:
    try:
        from livekit.plugins import silero
    except ImportError:
        return None  # silero is in the "bench" extra; the webrtcvad figures still stand
    return asyncio.run(_silero_run(silero.VAD.load(), audio))


async def _silero_run(vad: Any, audio: Audio) -> tuple[Segments, float]:
    from livekit import rtc
    from livekit.agents.vad import VADEventType

    step = audio.sample_rate // 100
    pcm = float_to_int16(audio.samples)
    stream = vad.stream()
    segments: Segments = []
    open_start: float | None = None
    last_ts = 0.0
    started = time.perf_counter()
    for i in range(0, len(pcm) - step + 1, step):
        stream.push_frame(rtc.AudioFrame(pcm[i : i + step].tobytes(), audio.sample_rate, 1, step))
    stream.end_input()
    async for ev in stream:
        last_ts = ev.timestamp
        if ev.type is VADEventType.START_OF_SPEECH:
            open_start = round(ev.timestamp - ev.speech_duration, 3)
        elif ev.type is VADEventType.END_OF_SPEECH and open_start is not None:
            segments.append((open_start, round(ev.timestamp - ev.silence_duration, 3)))
            open_start = None
    elapsed = time.perf_counter() - started
    await stream.aclose()
    # a LiveKit VAD stops on end_input without closing an open utterance: close it here
    if open_start is not None:
        segments.append((open_start, round(last_ts, 3)))
    return segments, elapsed


def _memory_per_stream(*, keep_speech_audio: bool) -> int:
    """Python heap held by one VADCore after a second of 48 kHz audio; the speech-audio
    buffer (pre-roll for START/END frames) is most of it."""
    x = (0.1 * np.random.default_rng(0).standard_normal(48000)).astype(np.float32)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    core = VADCore(keep_speech_audio=keep_speech_audio)
    for i in range(0, len(x), 480):
        core.push(x[i : i + 480], 48000)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    held = sum(s.size_diff for s in after.compare_to(before, "filename"))
    del core
    return int(held)


def _generated_fixture(folder: Path) -> Path:
    """Two espeak-ng sentences with known silences; labels from where the samples are voiced."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is needed to generate the VAD benchmark fixture")
    parts: list[np.ndarray[Any, np.dtype[np.float32]]] = []
    labels: Segments = []
    rate = 22050
    t = 0.0
    for text, pause in (("Hello, I am calling about my order.", 1.0), ("Thank you, bye.", 1.5)):
        wav = folder / "s.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
        speech = read_wav(wav)
        rate = speech.sample_rate
        voiced = np.nonzero(np.abs(speech.samples) > 0.01)[0]
        lead = np.zeros(int(pause * rate), dtype=np.float32)
        parts += [lead, speech.samples]
        t += pause
        labels.append((round(t + voiced[0] / rate, 3), round(t + voiced[-1] / rate, 3)))
        t += len(speech.samples) / rate
    parts.append(np.zeros(rate, dtype=np.float32))
    path = folder / "vad_generated.wav"
    write_wav(path, Audio(np.concatenate(parts), rate))
    path.with_suffix(".json").write_text(json.dumps({"speech_segments": labels}))
    return path


if __name__ == "__main__":
    import sys

    print(json.dumps(bench_vad([Path(a) for a in sys.argv[1:]]), indent=2))
