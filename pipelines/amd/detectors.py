"""Tone detectors for answering machine detection: the voicemail beep (one steady
narrow-band tone, 400-2000 Hz, 0.2-2 s) and the special information tone (SIT, the carrier's
three rising tones before "not available" announcements). Synchronous numpy with explicit
state and ``reset()``; ``pipelines.amd.classifier`` feeds them 20 ms frames.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from pipelines.audio import Float32Array, rms_dbfs


@dataclass(frozen=True, slots=True)
class Tone:
    """A steady single-frequency tone heard in the callee audio."""

    start: float
    end: float
    frequency: float

    @property
    def duration(self) -> float:
        return self.end - self.start


class BeepDetector:
    """Finds steady pure tones: one spectral peak holding most of the energy of a 64 ms
    window, at a stable frequency, for at least ``min_duration``.

    Speech spreads its energy over harmonics and formants; DTMF is two tones; a beep is
    one. ``push_frame`` takes consecutive hops of any fixed length (20 ms in the classifier)
    and returns the tone that just reached ``min_duration`` (once per tone); ``tones`` keeps
    every tone heard, with its end once it stopped.

    ``tonal`` says the audio is signalling, not speech: a single tone held at one frequency
    for ``min_tonal`` seconds, or two tones (DTMF, call progress) held for ``min_dual``.
    A single 64 ms window is not enough: a synthetic or very clean voice's vowel often puts
    80 % of the band's energy into one or two harmonics for a frame or two, and calling
    those frames "not speech" cut greetings into false pauses (an IVR's first phrase then
    read as a short human answer).
    """

    def __init__(
        self,
        sample_rate: int,
        *,
        min_freq: float = 400.0,
        max_freq: float = 2000.0,
        min_duration: float = 0.2,
        max_duration: float = 2.0,
        concentration: float = 0.8,
        min_level_dbfs: float = -45.0,
        min_tonal: float = 0.15,
        min_dual: float = 0.06,
    ) -> None:
        self.sample_rate = sample_rate
        self.min_tonal, self.min_dual = min_tonal, min_dual
        self.min_freq, self.max_freq = min_freq, max_freq
        self.min_duration, self.max_duration = min_duration, max_duration
        self.concentration = concentration
        self.min_level_dbfs = min_level_dbfs
        self._window_len = int(0.064 * sample_rate)
        self._nfft = 1 << (2 * self._window_len - 1).bit_length()
        self._hann = np.hanning(self._window_len).astype(np.float32)
        freqs = np.fft.rfftfreq(self._nfft, 1.0 / sample_rate)
        self._bin_hz = float(freqs[1])
        self._band = (freqs >= 200.0) & (freqs <= min(3800.0, 0.475 * sample_rate))
        self._peak_halfwidth = max(1, math.ceil(40.0 / self._bin_hz))
        self.reset()

    def reset(self) -> None:
        self._buf = np.zeros(self._window_len, dtype=np.float32)
        self._t = 0.0
        self._run_start: float | None = None
        self._run_freq = 0.0
        self._run_end = 0.0
        self._run_reported = False
        self._dual_s = 0.0
        self.tonal = False
        """Whether the last frame was part of a held tone or tone pair (so not speech)."""
        self.tones: list[Tone] = []

    def push_frame(self, frame: Float32Array) -> Tone | None:
        n = len(frame)
        if n >= self._window_len:
            self._buf = frame[-self._window_len :].astype(np.float32)
        else:
            self._buf = np.concatenate((self._buf[n:], frame.astype(np.float32)))
        self._t += n / self.sample_rate
        freq, dual = self._tone_frequency()
        self._dual_s = self._dual_s + n / self.sample_rate if dual else 0.0
        self.tonal = self._dual_s >= self.min_dual - 1e-9
        if freq is not None and (self._run_start is None or abs(freq - self._run_freq) <= 30.0):
            if self._run_start is None:
                # the window is centred half a window before its end
                self._run_start = max(0.0, self._t - self._window_len / self.sample_rate / 2)
                self._run_freq = freq
                self._run_reported = False
            self._run_end = self._t
            dur = self._run_end - self._run_start
            self.tonal = dur >= self.min_tonal
            if not self._run_reported and dur >= self.min_duration:
                self._run_reported = True
                tone = Tone(self._run_start, self._run_end, self._run_freq)
                self.tones.append(tone)
                return tone
            if self._run_reported:
                self.tones[-1] = Tone(self._run_start, self._run_end, self._run_freq)
            return None
        self._run_start = None
        if freq is not None:
            return self.push_frame(np.zeros(0, dtype=np.float32))  # start a new run
        return None

    def _tone_frequency(self) -> tuple[float | None, bool]:
        """The beep-band frequency of a single steady tone, and whether the window is
        instead two tones (DTMF, call-progress tones): signalling, not speech, not a beep."""
        x = self._buf
        if rms_dbfs(x) < self.min_level_dbfs:
            return None, False
        spec = np.abs(np.fft.rfft(x * self._hann, self._nfft)) ** 2
        band = np.where(self._band, spec, 0.0)
        total = float(band.sum())
        if total <= 0.0:
            return None, False
        w = self._peak_halfwidth
        peak = int(np.argmax(band))
        lo, hi = max(0, peak - w), peak + w + 1
        first = float(band[lo:hi].sum())
        if first < self.concentration * total:
            rest = band.copy()
            rest[lo:hi] = 0.0
            second = int(np.argmax(rest))
            dual = first + float(rest[max(0, second - w) : second + w + 1].sum())
            return None, dual >= self.concentration * total
        # parabolic interpolation of the peak for a sub-bin frequency estimate
        a, b, c = (float(np.log(spec[i] + 1e-20)) for i in (peak - 1, peak, peak + 1))
        denom = a - 2 * b + c
        offset = 0.5 * (a - c) / denom if denom != 0 else 0.0
        freq = (peak + offset) * self._bin_hz
        return (freq if self.min_freq <= freq <= self.max_freq else None), False


def is_sit(tones: list[Tone]) -> bool:
    """The special information tone: two or three short tones of rising frequency in a
    row (913.8, 1370.6, 1776.7 Hz in the North American standard)."""
    for first, second in itertools.pairwise(tones):
        if (
            first.duration <= 0.5
            and second.start - first.end <= 0.12
            and second.frequency - first.frequency >= 200.0
        ):
            return True
    return False
