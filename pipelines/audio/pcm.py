"""Small PCM helpers shared by every stage: WAV I/O, format conversion, resampling.

Audio inside the DSP cores is mono ``float32`` in [-1, 1]; on the wire (LiveKit frames,
WAV files) it is ``int16``. These helpers are the one place that converts between the two.
"""

from __future__ import annotations

import math
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

Float32Array = npt.NDArray[np.float32]
Int16Array = npt.NDArray[np.int16]


class AudioFormatError(ValueError):
    """Audio that cannot be used as given (wrong width, empty, unreadable); names the source."""


@dataclass(frozen=True, slots=True)
class Audio:
    """Mono audio in memory."""

    samples: Float32Array
    """Mono float32 samples in [-1, 1]."""
    sample_rate: int
    """Samples per second."""

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate if self.sample_rate else 0.0


def int16_to_float(pcm: Int16Array | bytes) -> Float32Array:
    arr = np.frombuffer(pcm, dtype=np.int16) if isinstance(pcm, bytes | bytearray) else pcm
    return (arr.astype(np.float32) / 32768.0).astype(np.float32)


def float_to_int16(samples: Float32Array) -> Int16Array:
    """Converts with a hard limit: values beyond full scale are clipped, never wrapped."""
    scaled = np.multiply(samples, 32767.0, dtype=np.float32)
    np.clip(scaled, -32768.0, 32767.0, out=scaled)  # +-inf land on full scale
    nan = np.isnan(scaled)
    if nan.any():
        scaled[nan] = 0.0
    return np.rint(scaled, out=scaled).astype(np.int16)


def read_wav(path: str | Path) -> Audio:
    """Reads a 16-bit PCM WAV; stereo is downmixed to mono."""
    p = Path(path)
    try:
        with wave.open(str(p), "rb") as wf:
            width = wf.getsampwidth()
            channels = wf.getnchannels()
            rate = wf.getframerate()
            raw = wf.readframes(wf.getnframes())
    except (wave.Error, EOFError, OSError) as exc:
        raise AudioFormatError(f"{p}: not a readable WAV file ({exc})") from exc
    if width != 2:
        raise AudioFormatError(f"{p}: sample width {width * 8} bits, expected 16-bit PCM")
    pcm = np.frombuffer(raw, dtype=np.int16)
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return Audio(int16_to_float(pcm), rate)


def write_wav(path: str | Path, audio: Audio) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(p), "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(audio.sample_rate)
        wf.writeframes(float_to_int16(audio.samples).tobytes())


def lowpass_kernel(cutoff: float, taps: int = 63) -> Float32Array:
    """Hann-windowed sinc low-pass; ``cutoff`` as a fraction of the sample rate (< 0.5)."""
    n = np.arange(taps, dtype=np.float64) - (taps - 1) / 2
    kernel = 2 * cutoff * np.sinc(2 * cutoff * n) * np.hanning(taps)
    out: Float32Array = (kernel / kernel.sum()).astype(np.float32)
    return out


def resample(samples: Float32Array, src_rate: int, dst_rate: int) -> Float32Array:
    """Whole-buffer resampling for files and offline engines, band-limited both ways.

    Down: a windowed-sinc low-pass below the new Nyquist, then interpolation (no aliasing).
    Up by an integer factor (8 -> 16 kHz): zero-stuffing and a low-pass just under the
    source Nyquist, because linear interpolation leaves images of the speech band above
    4 kHz that a 16 kHz acoustic model hears as fricatives. Other ratios up: linear.
    Streaming stages keep their phase across chunks instead (``StreamResampler``)."""
    if src_rate == dst_rate or len(samples) == 0:
        return samples.astype(np.float32, copy=False)
    factor, rest = divmod(dst_rate, src_rate)
    if not rest and factor >= 2:
        stuffed = np.zeros(len(samples) * factor, dtype=np.float32)
        stuffed[::factor] = samples * factor
        kernel = lowpass_kernel(0.46 / factor, taps=64 * factor - 1)
        up: Float32Array = np.convolve(stuffed, kernel, mode="same").astype(np.float32)
        return up
    if dst_rate < src_rate:
        kernel = lowpass_kernel(0.45 * dst_rate / src_rate)
        samples = np.convolve(samples, kernel, mode="same").astype(np.float32)
    n_out = round(len(samples) * dst_rate / src_rate)
    x_old = np.arange(len(samples), dtype=np.float64) / src_rate
    x_new = np.arange(n_out, dtype=np.float64) / dst_rate
    return np.interp(x_new, x_old, samples).astype(np.float32)


class StreamResampler:
    """Linear-interpolation resampler for a stream (the VAD's) that keeps its phase across
    chunks, so any chunking of a stream gives the same output. Output sample n sits exactly
    at input position n * src / dst (integer arithmetic: no drift). Downsampling runs a
    moving average of round(src / dst) taps first: a cheap low-pass that is plenty for VAD
    features."""

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        g = math.gcd(src_rate, dst_rate)
        self._up = dst_rate // g
        self._down = src_rate // g
        taps = max(1, round(src_rate / dst_rate)) if dst_rate < src_rate else 1
        self._kernel = np.full(taps, 1.0 / taps, dtype=np.float32)
        self.reset()

    def reset(self) -> None:
        self._fir_hist = np.zeros(len(self._kernel) - 1, dtype=np.float32)
        self._prev = np.zeros(0, dtype=np.float32)
        self._in_count = 0
        self._out_count = 0

    def process(self, x: Float32Array) -> Float32Array:
        if len(self._kernel) > 1:
            xx = np.concatenate((self._fir_hist, x))
            x = np.convolve(xx, self._kernel, mode="valid").astype(np.float32, copy=False)
            self._fir_hist = xx[len(xx) - len(self._fir_hist) :]
        buf = np.concatenate((self._prev, x)) if len(self._prev) else x
        base = self._in_count - len(self._prev)
        self._in_count += len(x)
        if self._in_count == 0:
            return x
        n_end = (self._in_count - 1) * self._up // self._down + 1
        self._prev = buf[-1:]
        if n_end <= self._out_count:
            return np.zeros(0, dtype=np.float32)
        pos = np.arange(self._out_count, n_end, dtype=np.int64) * self._down
        self._out_count = n_end
        if self._up == 1:
            return buf[pos - base]
        idx = pos // self._up - base
        frac = (pos % self._up).astype(np.float32) * np.float32(1.0 / self._up)
        nxt = np.minimum(idx + 1, len(buf) - 1)
        lo = buf[idx]
        return (lo + frac * (buf[nxt] - lo)).astype(np.float32, copy=False)


def rms_dbfs(samples: Float32Array) -> float:
    """Root-mean-square level in dB relative to full scale; -inf for silence."""
    if len(samples) == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")
