"""``bench audio``: what the audio stages cost per 10 ms frame, next to the reference
implementations run in the same process, against the goals (``bench_audio``).

VAD + endpointing (``bench_vad``): webrtcvad's cost per frame, alone and behind LiveKit's
VAD stream, memory per stream, and agreement with silero. Each fixture is a 16-bit WAV; if
``<name>.json`` beside it holds ``speech_segments`` (or ``segments``) as
``[[start, end], ...]`` in seconds, both VADs are also scored against those labels. With no
fixtures, a labelled one is generated with espeak-ng.

Time-stretch and noise-bed mixing (``bench_stretch_mix``), next to audiotsm's WSOLA and
``sox tempo``. Quality proxies: duration error against ``input / rate`` and pitch drift,
both the median f0 of voiced frames against the input's and the median of frame-by-frame
f0 ratios with the output frame at ``t`` compared with the input frame at ``t * rate``
(robust to voices whose pitch histogram has two modes).

``python -m worker.dev.bench.audio [WAV ...]`` prints the VAD figures as JSON.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipelines.audio import (
    Audio,
    Float32Array,
    NoiseBed,
    TimeStretcher,
    VADCore,
    WebRTCVAD,
    detect_segments,
    float_to_int16,
    mix,
    read_wav,
    resample,
    write_wav,
)
from worker.dev.bench.common import AUDIO_FIXTURES

RATES = (0.75, 1.25, 2.0)
FRAME_MS = 10
VAD_GOAL_MS_PER_FRAME = 0.05
"""The issue's budget for VAD + endpointing per 10 ms of audio."""
STRETCH_GOAL_REALTIME_FACTOR = 100
MIX_GOAL_MS_PER_FRAME = 0.02
GRID = 0.01
"""Seconds per cell of the masks VAD segments are compared on."""

Segments = list[tuple[float, float]]


def bench_audio(*, quick: bool = False) -> dict[str, Any]:
    """VAD + endpointing, time-stretch and mixing cost per 10 ms frame against the goals
    and the reference implementations run in the same process."""
    fixtures = sorted(AUDIO_FIXTURES.glob("*.wav"))
    if quick:
        fixtures = fixtures[:1]
    vad = bench_vad(fixtures)
    source = read_wav(AUDIO_FIXTURES / "one_turn.wav")
    speech = resampled(source, 24000)
    if quick:
        speech = Audio(speech.samples[: 24000 * 3], 24000)
    stretch = bench_stretch_mix(speech, repeats=1 if quick else 3)
    vad_ms = vad["summary"]["webrtcvad_ms_per_10ms_frame_max"]
    silero_ms = vad["summary"].get("silero_ms_per_10ms_frame_max")
    rows = stretch["stretch"]
    stretch_rtf = min(r["ours"]["realtime_factor"] for r in rows.values())
    speedups = {rate: r["speedup_vs_audiotsm"] for rate, r in rows.items()}
    mix_ms = stretch["mix"]["ms_per_frame"]
    goals = {
        "vad_endpointing_ms_per_10ms_frame": {
            "value": vad_ms,
            "goal": f"< {VAD_GOAL_MS_PER_FRAME}",
            "met": vad_ms < VAD_GOAL_MS_PER_FRAME,
            "vs_silero": None if not silero_ms else round(silero_ms / vad_ms, 1),
        },
        "stretch_realtime_factor_min": {
            "value": round(stretch_rtf, 1),
            "goal": f">= {STRETCH_GOAL_REALTIME_FACTOR} and faster than audiotsm",
            "met": stretch_rtf >= STRETCH_GOAL_REALTIME_FACTOR and min(speedups.values()) > 1.0,
            "speedup_vs_audiotsm": {k: round(v, 2) for k, v in speedups.items()},
        },
        "mix_ms_per_10ms_frame": {
            "value": mix_ms,
            "goal": f"< {MIX_GOAL_MS_PER_FRAME}",
            "met": mix_ms < MIX_GOAL_MS_PER_FRAME,
        },
    }
    return {
        "benchmark": "audio",
        "quick": quick,
        "goals": goals,
        "vad": vad,
        "stretch_mix": stretch,
    }


# VAD + endpointing
def bench_vad(fixtures: list[Path]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        paths = list(fixtures) or [_generated_fixture(Path(tmp))]
        rows = [_bench_one(p) for p in paths]
    core_ms = [r["webrtcvad"]["ms_per_10ms_frame"] for r in rows]
    summary: dict[str, Any] = {
        "goal_ms_per_10ms_frame": VAD_GOAL_MS_PER_FRAME,
        "webrtcvad_ms_per_10ms_frame_max": max(core_ms),
        "webrtcvad_within_goal": max(core_ms) <= VAD_GOAL_MS_PER_FRAME,
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


# time-stretch and mixing
def f0_frames(
    samples: Float32Array,
    sample_rate: int,
    *,
    fmin: float = 70.0,
    fmax: float = 400.0,
    window_s: float = 0.03,
    hop_s: float = 0.01,
    silence_db: float = -30.0,
    voicing: float = 0.6,
) -> npt.NDArray[np.float64]:
    """Autocorrelation f0 per ``hop_s`` frame; NaN where unvoiced or quiet."""
    n = int(window_s * sample_rate)
    hop = int(hop_s * sample_rate)
    lag_min, lag_max = int(sample_rate / fmax), min(int(sample_rate / fmin), n - 2)
    starts = np.arange(0, max(len(samples) - n, 0), hop)
    out = np.full(len(starts), np.nan)
    if not len(starts):
        return out
    frames = np.stack([samples[s : s + n].astype(np.float64) for s in starts])
    frames -= frames.mean(axis=1, keepdims=True)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    loud = rms >= rms.max() * 10.0 ** (silence_db / 20.0)
    spec = np.fft.rfft(frames, 2 * n, axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, :n]
    # unbiased: divide out the shrinking overlap
    ac = ac / np.maximum(ac[:, :1] * (n - np.arange(n)) / n, 1e-12)
    seg = ac[:, lag_min:lag_max]
    best = np.argmax(seg, axis=1)
    peak = seg[np.arange(len(seg)), best]
    for i in np.nonzero(loud & (peak >= voicing))[0]:
        # the shortest lag nearly as good as the best: a clean tone repeats at every period
        row = seg[i]
        j = int(np.argmax(row >= 0.9 * peak[i]))
        while j + 1 < len(row) and row[j + 1] > row[j]:
            j += 1
        lag = float(lag_min + j)
        if 0 < j < seg.shape[1] - 1:
            a, b, c = row[j - 1], row[j], row[j + 1]
            den = a - 2 * b + c
            if den:
                lag += 0.5 * (a - c) / den
        out[i] = sample_rate / lag
    return out


def median_f0(samples: Float32Array, sample_rate: int) -> float:
    track = f0_frames(samples, sample_rate)
    voiced = track[~np.isnan(track)]
    return float(np.median(voiced)) if len(voiced) else float("nan")


def aligned_f0_ratio(
    original: Float32Array, stretched: Float32Array, sample_rate: int, rate: float
) -> float:
    """Median of f0(out, t) / f0(in, t * rate) over frames voiced in both."""
    f_in = f0_frames(original, sample_rate)
    f_out = f0_frames(stretched, sample_rate)
    idx = np.round(np.arange(len(f_out)) * rate).astype(int)
    ok = idx < len(f_in)
    ratios = f_out[ok] / f_in[idx[ok]]
    ratios = ratios[~np.isnan(ratios)]
    return float(np.median(ratios)) if len(ratios) else float("nan")


def _quality(speech: Audio, out: Float32Array, rate: float) -> dict[str, float]:
    sr = speech.sample_rate
    expected = len(speech.samples) / rate
    f0_in = median_f0(speech.samples, sr)
    return {
        "duration_error_pct": 100.0 * (len(out) - expected) / expected,
        "median_f0_error_pct": 100.0 * (median_f0(out, sr) / f0_in - 1.0),
        "aligned_f0_error_pct": 100.0 * (aligned_f0_ratio(speech.samples, out, sr, rate) - 1.0),
    }


def _best_of(fn: Callable[[], Float32Array], repeats: int) -> tuple[float, Float32Array]:
    best, out = float("inf"), np.zeros(0, dtype=np.float32)
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _ours_streaming(speech: Audio, rate: float) -> Float32Array:
    frame = speech.sample_rate * FRAME_MS // 1000
    st = TimeStretcher(rate, speech.sample_rate)
    x = speech.samples
    parts = [st.process(x[i : i + frame]) for i in range(0, len(x), frame)]
    parts.append(st.flush())
    return np.concatenate(parts)


def _audiotsm(speech: Audio, rate: float) -> Float32Array:
    from audiotsm import wsola
    from audiotsm.io.array import ArrayReader, ArrayWriter

    reader = ArrayReader(speech.samples[np.newaxis, :].astype(np.float64))
    writer = ArrayWriter(1)
    wsola(1, speed=rate).run(reader, writer)
    return np.asarray(writer.data[0], dtype=np.float32)


def _sox(speech: Audio, rate: float, tmp: Path) -> Float32Array:
    src, dst = tmp / "in.wav", tmp / "out.wav"
    write_wav(src, speech)
    subprocess.run(["sox", str(src), str(dst), "tempo", "-s", str(rate)], check=True)
    return read_wav(dst).samples


def _stream_memory(speech: Audio, rate: float) -> int:
    frame = speech.sample_rate * FRAME_MS // 1000
    x = speech.samples[: speech.sample_rate * 2]
    tracemalloc.start()
    try:
        st = TimeStretcher(rate, speech.sample_rate)
        bed = NoiseBed("office", 0.3, speech.sample_rate)
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for i in range(0, len(x), frame):
            out = st.process(x[i : i + frame])
            mix(out, bed.next(len(out)))
        return int(tracemalloc.get_traced_memory()[1] - base)
    finally:
        tracemalloc.stop()


def bench_stretch_mix(speech: Audio, *, repeats: int = 3) -> dict[str, Any]:
    """Per-frame cost, real-time factor and quality of stretch (ours, audiotsm, sox) and mix."""
    sr = speech.sample_rate
    frames = len(speech.samples) / (sr * FRAME_MS / 1000)
    result: dict[str, Any] = {
        "input_seconds": speech.duration,
        "sample_rate": sr,
        "frame_ms": FRAME_MS,
        "stretch": {},
    }
    sox = shutil.which("sox")
    with tempfile.TemporaryDirectory() as tmpdir:
        for rate in RATES:
            row: dict[str, Any] = {}
            lookahead = TimeStretcher(rate, sr).lookahead_ms
            engines: dict[str, Callable[[], Float32Array]] = {
                "ours": lambda rate=rate: _ours_streaming(speech, rate),  # type: ignore[misc]
                "audiotsm_wsola": lambda rate=rate: _audiotsm(speech, rate),  # type: ignore[misc]
            }
            if sox:
                engines["sox_tempo"] = lambda rate=rate: _sox(speech, rate, Path(tmpdir))  # type: ignore[misc]
            for name, fn in engines.items():
                seconds, out = _best_of(fn, repeats)
                row[name] = {
                    "seconds": seconds,
                    "realtime_factor": speech.duration / seconds,
                    "ms_per_frame": 1000.0 * seconds / frames,
                    **_quality(speech, out, rate),
                }
            row["ours"]["lookahead_ms"] = lookahead
            row["ours"]["memory_bytes_per_stream"] = _stream_memory(speech, rate)
            row["speedup_vs_audiotsm"] = row["audiotsm_wsola"]["seconds"] / row["ours"]["seconds"]
            result["stretch"][str(rate)] = row
    result["mix"] = _bench_mix(speech, repeats)
    return result


def _bench_mix(speech: Audio, repeats: int) -> dict[str, float]:
    sr = speech.sample_rate
    frame = sr * FRAME_MS // 1000
    bed = NoiseBed("office", 0.3, sr)
    x = speech.samples
    chunks = [x[i : i + frame] for i in range(0, len(x) - frame + 1, frame)]

    def run() -> Float32Array:
        for chunk in chunks:
            mix(chunk, bed.next(frame))
        return x

    seconds, _ = _best_of(run, repeats)
    per_frame_ms = 1000.0 * seconds / max(len(chunks), 1)
    return {
        "ms_per_frame": per_frame_ms,
        "realtime_factor": FRAME_MS / per_frame_ms if per_frame_ms else float("inf"),
    }


def resampled(speech: Audio, sample_rate: int) -> Audio:
    """``speech`` at ``sample_rate`` (benchmarks run at the sink's rate, 24 kHz by default)."""
    return Audio(resample(speech.samples, speech.sample_rate, sample_rate), sample_rate)


if __name__ == "__main__":
    import sys

    print(json.dumps(bench_vad([Path(a) for a in sys.argv[1:]]), indent=2))
