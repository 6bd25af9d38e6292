"""Cost and quality of the output chain's DSP, next to audiotsm's WSOLA and ``sox tempo``.

``bench_stretch_mix(speech)`` returns plain figures (JSON-ready); the CLI prints and charts
them. Quality proxies: duration error against ``input / rate`` and pitch drift, both the
median f0 of voiced frames against the input's and the median of frame-by-frame f0 ratios
with the output frame at ``t`` compared with the input frame at ``t * rate`` (robust to
voices whose pitch histogram has two modes).
"""

from __future__ import annotations

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
    mix,
    read_wav,
    resample,
    write_wav,
)

RATES = (0.75, 1.25, 2.0)
FRAME_MS = 10


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
