"""Streaming pitch-preserving time-stretch (WSOLA) for the agent's synthesized speech.

``tts_playback_rate`` speeds up or slows down the rendered waveform without changing its
pitch: every pause and breath is scaled alike. The core is WSOLA (waveform-similarity
overlap-add): output frames of ``2 * hop`` samples are overlap-added every ``hop`` samples
with a periodic Hann window (whose halves sum to exactly 1), read from the input every
``hop * rate`` samples, each shifted by up to ``tolerance`` so that it lines up with the
natural continuation of the frame before it. The alignment search runs on a 4 kHz boxcar
decimation of the input (vectorised ``np.correlate``), then is refined at full rate over
one decimation step, so a frame costs a few small numpy calls.

The output depends only on the samples, never on how they were chunked: a frame is
computed only once every sample it could read has arrived, so streaming and one-shot
processing give identical results, and TTS chunks join without seams.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np

from pipelines.audio.pcm import Audio, Float32Array

PLAYBACK_RATE_RANGE: Final = (0.5, 3.0)
"""What ``tts_playback_rate`` may be: checked at the config boundary and by ``TimeStretcher``."""
MIN_RATE, MAX_RATE = PLAYBACK_RATE_RANGE

_HOP_S = 0.015
"""Synthesis hop: frames are twice this long (30 ms, three periods of a 100 Hz voice)."""
_TOLERANCE_S = 0.0075
"""How far a frame may move to line up; half the period of the lowest voices (~67 Hz)."""
_SEARCH_RATE = 4000
"""Sample rate of the coarse alignment search."""


def stretch_rate(rate: float | None) -> float | None:
    """The rate to stretch at, or None where no stretch is wanted (unset, or 1.0)."""
    return None if rate is None or float(rate) == 1.0 else float(rate)


def validate_rate(rate: float) -> float:
    """Returns ``rate`` as a float; ValueError naming ``tts_playback_rate`` outside 0.5..3.0."""
    value = float(rate)
    if not math.isfinite(value) or not MIN_RATE <= value <= MAX_RATE:
        raise ValueError(f"tts_playback_rate must be within {MIN_RATE}..{MAX_RATE}, got {rate!r}")
    return value


class TimeStretcher:
    """WSOLA time-scale modifier for one mono float32 stream.

    ``rate`` > 1 plays faster (output is ``1/rate`` as long). ``process`` takes any number
    of samples and returns what is ready; ``flush`` ends a segment and returns the tail, so
    the segment's output is ``round(len(input) / rate)`` samples; ``reset`` drops everything
    (an interruption). At rate 1.0 every call is a zero-cost pass-through.
    """

    def __init__(self, rate: float, sample_rate: int) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.rate = validate_rate(rate)
        self.sample_rate = sample_rate
        self.passthrough = self.rate == 1.0

        self._hop = max(8, round(_HOP_S * sample_rate))
        self._frame = 2 * self._hop
        self._decim = max(1, sample_rate // _SEARCH_RATE)
        self._tol = max(self._decim, round(_TOLERANCE_S * sample_rate))
        self._analysis_hop = self._hop * self.rate
        n = np.arange(self._frame, dtype=np.float64)
        window = (0.5 - 0.5 * np.cos(2.0 * np.pi * n / self._frame)).astype(np.float32)
        self._rise = window[: self._hop].copy()
        self._fall = window[self._hop :].copy()
        self._frame_d = self._frame // self._decim
        self.reset()

    @property
    def lookahead_ms(self) -> float:
        """Input audio held back beyond the last emitted output, at most, in ms of input.

        A frame needs its whole search window (``tolerance`` past the nominal position plus a
        frame) and, when slowing down, the previous frame's natural continuation too.
        """
        if self.passthrough:
            return 0.0
        held = self._tol + self._frame + 2 * self._decim + max(0.0, self._hop - self._analysis_hop)
        return 1000.0 * held / self.sample_rate

    def reset(self) -> None:
        """Forgets all buffered input and output: the next sample starts a new segment."""
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0
        self._dbuf = np.zeros(0, dtype=np.float32)
        self._received = 0
        self._k = 0
        self._prev_pos = 0
        self._ola = np.zeros(self._hop, dtype=np.float32)
        self._emitted = 0
        self._last_pos: int | None = None

    def process(self, samples: Float32Array) -> Float32Array:
        """Pushes input; returns the output that no later input can change."""
        if self.passthrough:
            return samples
        self._append(np.asarray(samples, dtype=np.float32))
        return self._run()

    def flush(self) -> Float32Array:
        """Ends the segment: returns the rest of its output and starts afresh."""
        if self.passthrough or self._received == 0:
            self.reset()
            return np.zeros(0, dtype=np.float32)
        target = round(self._received / self.rate)
        remaining = target - self._emitted
        pad = int(remaining * self.rate) + 4 * self._frame + 2 * self._tol + 4 * self._decim
        # frames stay inside the segment, so its end is not cut off inside a frame (a click)
        self._last_pos = max(self._received - self._frame, 0)
        self._append(np.zeros(max(pad, 0), dtype=np.float32))
        parts = [self._run(limit=target)]
        if self._emitted < target:
            parts.append(self._ola[: target - self._emitted])
        self.reset()
        out = np.concatenate(parts).astype(np.float32, copy=False)
        return out[: max(remaining, 0)]

    def _append(self, samples: Float32Array) -> None:
        if len(samples) == 0:
            return
        self._received += len(samples)
        self._buf = np.concatenate((self._buf, samples))
        d = self._decim
        done_d = self._buf_start // d + len(self._dbuf)
        usable = (self._buf_start + len(self._buf)) // d - done_d
        if usable > 0:
            lo = done_d * d - self._buf_start
            block = self._buf[lo : lo + usable * d]
            # a sum, not a mean: the search's normalised correlation ignores scale
            dec = block.reshape(usable, d).sum(axis=1) if d > 1 else block
            self._dbuf = np.concatenate((self._dbuf, dec.astype(np.float32, copy=False)))

    def _run(self, limit: int | None = None) -> Float32Array:
        hop, frame, tol, d = self._hop, self._frame, self._tol, self._decim
        end = self._buf_start + len(self._buf)
        out: list[Float32Array] = []
        while limit is None or self._emitted < limit:
            k = self._k
            if k == 0:
                if end < frame:
                    break
                x = self._buf
                out.append(x[:hop].copy())
                self._ola = self._fall * x[hop:frame]
                self._prev_pos = 0
            else:
                nominal = round(k * self._analysis_hop)
                cont = self._prev_pos + hop
                if max(nominal + tol, cont) + frame + 2 * d > end:
                    break
                pos = self._align(nominal, cont)
                lo = pos - self._buf_start
                seg = self._buf[lo : lo + frame]
                out.append(self._ola + self._rise * seg[:hop])
                self._ola = self._fall * seg[hop:]
                self._prev_pos = pos
            self._k = k + 1
            self._emitted += hop
        self._trim()
        if not out:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(out)

    def _align(self, nominal: int, cont: int) -> int:
        """Position within ``nominal ± tolerance`` that best continues the frame at ``cont``."""
        d, frame, base = self._decim, self._frame, self._buf_start
        lo = max(nominal - self._tol, 0)
        hi = nominal + self._tol
        if self._last_pos is not None:
            hi = min(hi, self._last_pos)
            lo = min(lo, hi)
        if hi <= lo:
            return lo
        coarse = min(max(nominal, lo), hi)
        dbase = base // d
        j_lo = -(-lo // d)
        j_hi = hi // d
        if j_hi > j_lo:
            fd = self._frame_d
            t0 = round(cont / d) - dbase
            tmpl = self._dbuf[t0 : t0 + fd]
            region = self._dbuf[j_lo - dbase : j_hi - dbase + fd]
            coarse = d * (j_lo + _best_match(region, tmpl))
        # refine at full rate around the coarse pick
        f_lo = max(coarse - d, lo)
        f_hi = min(coarse + d, hi)
        tmpl_full = self._buf[cont - base : cont - base + frame]
        region_full = self._buf[f_lo - base : f_hi - base + frame]
        return f_lo + _best_match(region_full, tmpl_full)

    def _trim(self) -> None:
        # keep what the next frame's template and search window can still read
        nominal = round(self._k * self._analysis_hop)
        # a flush may clamp the last frames to end inside the input received so far
        last = self._received - self._frame
        if self._last_pos is not None:
            last = self._last_pos
        keep_from = min(self._prev_pos + self._hop, nominal - self._tol, last) - 2 * self._decim
        keep_from = max(keep_from, 0)
        keep_from -= keep_from % self._decim
        drop = keep_from - self._buf_start
        if drop >= 4 * self._frame:
            self._buf = self._buf[drop:]
            self._buf_start = keep_from
            self._dbuf = self._dbuf[drop // self._decim :]


def _best_match(region: Float32Array, template: Float32Array) -> int:
    """Offset in ``region`` whose window best matches ``template`` (normalised correlation)."""
    n = len(template)
    corr = np.correlate(region, template, mode="valid")
    cum = np.cumsum(np.square(region))
    energy = cum[n - 1 :].copy()
    energy[1:] -= cum[: len(cum) - n]
    np.maximum(energy, 1e-9, out=energy)
    return int((corr / np.sqrt(energy)).argmax())


def stretch_audio(audio: Audio, rate: float) -> Audio:
    """Time-stretches a whole clip (the ``voice-worker stretch`` command)."""
    stretcher = TimeStretcher(rate, audio.sample_rate)
    if stretcher.passthrough:
        return audio
    head = stretcher.process(audio.samples)
    tail = stretcher.flush()
    return Audio(np.concatenate((head, tail)).astype(np.float32), audio.sample_rate)
