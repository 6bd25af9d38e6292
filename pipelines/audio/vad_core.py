"""Voice activity detection with webrtcvad: the synchronous numpy core.

``VADCore`` turns float32 mono audio of any rate and any chunking into webrtcvad decisions,
a smoothed speaking probability and start/end-of-speech events with hysteresis; its state
is explicit and ``reset()`` returns to a fresh stream. ``detect_segments`` runs it over a
whole recording; ``pipelines.audio.vad.WebRTCVAD`` is the LiveKit VAD around it. Options
(meaning, defaults, ranges) are ``pipelines.audio.vad_options``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal, Unpack

import numpy as np
import webrtcvad
from livekit.agents.vad import VADEventType

from pipelines.audio.pcm import Audio, Float32Array, StreamResampler, float_to_int16
from pipelines.audio.vad_options import VADOptions, VADSettings, VADUpdate, processing_rate

logger = logging.getLogger(__name__)


NOISE_GATE_DB = 3.0
"""A frame is speech only this far above the noise floor (and voiced by webrtcvad). Small
on purpose: the floor tracks the quietest frames, and a quiet greeting's word edges sit
only a few dB above a hissy line; a larger gate (8 dB was tried) cut them into false
pauses, so voicemail greetings and IVR menus read as short human answers on live calls."""
NOISE_FLOOR_RISE_DB_S = 6.0
NOISE_FLOOR_START_DB = -50.0
DIGITAL_SILENCE_DB = -90.0
"""The floor's first value at most: a stream that opens with speech is not gated off."""


@dataclass(slots=True)
class VADCoreEvent:
    """A start or end of speech decided by ``VADCore``."""

    type: Literal[VADEventType.START_OF_SPEECH, VADEventType.END_OF_SPEECH]
    samples_index: int
    """Processed samples (at the processing rate) when the event was decided."""
    timestamp: float
    """Stream time in seconds when the event was decided."""
    speech_duration: float
    """START: speech heard so far; END: length of the finished utterance."""
    silence_duration: float
    """START: 0; END: silence heard since the utterance ended."""
    audio: Float32Array | None = None
    """Input-rate audio of the utterance so far, from ``prefix_padding_duration`` before the
    onset up to the decision; None when the core keeps no audio."""
    sample_rate: int = 0
    """Rate of ``audio``."""

    @property
    def speech_start(self) -> float:
        """Stream time the utterance began (START events)."""
        return self.timestamp - self.speech_duration

    @property
    def speech_end(self) -> float:
        """Stream time the utterance ended (END events)."""
        return self.timestamp - self.silence_duration


class VADCore:
    """webrtcvad with hysteresis over a stream of float32 mono chunks.

    ``push(samples, sample_rate)`` resamples to the processing rate, slices webrtcvad frames
    (a partial frame waits for the next chunk), smooths the voiced decisions into a speaking
    probability, and returns the START/END events decided in the chunk. State between chunks
    is explicit; ``reset()`` returns to a fresh stream. Non-finite chunks are replaced by
    silence of the same length (the stream clock keeps step) and counted in ``dropped_frames``.
    """

    def __init__(self, *, keep_speech_audio: bool = True, **settings: Unpack[VADSettings]) -> None:
        """``settings`` as in ``VADOptions`` (defaults in ``VADOptions.create``);
        ``keep_speech_audio=False`` skips buffering input audio for events (offline use)."""
        self._opts = VADOptions.create(**settings)
        self._keep_audio = keep_speech_audio
        self._vad = webrtcvad.Vad(self._opts.aggressiveness)
        self.reset()

    def reset(self) -> None:
        """Forgets all stream state: clock, resampler phase, hysteresis, buffered audio."""
        self._vad = webrtcvad.Vad(self._opts.aggressiveness)
        self._input_rate = 0
        self._proc_rate = 0
        self._frame_len = 0
        self._resampler: StreamResampler | None = None
        self._leftover = np.zeros(0, dtype=np.int16)
        self._frames = 0
        self._frames_base_samples = 0
        self._probability = 0.0
        self._speaking = False
        self._speech_frames = 0
        self._silence_frames = 0
        self._acc_speech_frames = 0
        self._acc_silence_frames = 0
        self._last_push_frames = 0
        self.dropped_frames = 0
        """Pushed chunks that held NaN or infinite samples (processed as silence)."""
        # speech audio at the input rate; _audio_first is the input-sample index of _audio[0]
        self._audio = np.zeros(0, dtype=np.float32)
        self._audio_len = 0
        self._audio_first = 0
        self._input_samples = 0
        self._input_t0 = 0.0
        self._utterance_first = 0
        self._max_buffer_warned = False
        self._floor_db: float | None = None
        self._derive()

    def update_options(self, **changes: Unpack[VADUpdate]) -> None:
        """Changes options mid-stream; a new frame length or processing rate takes effect at
        the next chunk (a partial frame in waiting is dropped)."""
        self.apply_options(self._opts.updated(**changes))

    def apply_options(self, opts: VADOptions) -> None:
        """Switches to ``opts`` as ``update_options`` would (a LiveKit VAD's update reaches
        its open streams this way)."""
        old = self._opts
        self._opts = opts
        if opts.aggressiveness != old.aggressiveness:
            self._vad.set_mode(opts.aggressiveness)
        if (opts.frame_ms, opts.sample_rate) != (old.frame_ms, old.sample_rate):
            # durations are counted in frames: carry them over in seconds
            frame_s = self._frame_s
            self._frames_base_samples = self.samples_index
            self._frames = 0
            acc_speech = self._acc_speech_frames * frame_s
            acc_silence = self._acc_silence_frames * frame_s
            speech, silence = self._speech_frames * frame_s, self._silence_frames * frame_s
            self._leftover = np.zeros(0, dtype=np.int16)
            if self._input_rate:
                self._set_input_rate(self._input_rate)
            self._derive()
            self._acc_speech_frames = round(acc_speech / self._frame_s)
            self._acc_silence_frames = round(acc_silence / self._frame_s)
            self._speech_frames = round(speech / self._frame_s)
            self._silence_frames = round(silence / self._frame_s)
        else:
            self._derive()

    def _derive(self) -> None:
        o = self._opts
        rate = self._proc_rate or o.sample_rate
        self._frame_len = rate * o.frame_ms // 1000
        self._frame_s = o.frame_ms / 1000.0
        self._alpha = 1.0 - math.exp(-self._frame_s / o.smoothing) if o.smoothing > 0 else 1.0
        self._min_speech_frames = max(1, math.ceil(o.min_speech_duration / self._frame_s - 1e-9))
        self._min_silence_frames = max(1, math.ceil(o.min_silence_duration / self._frame_s - 1e-9))

    def _set_input_rate(self, rate: int) -> None:
        if self._input_rate and self._input_rate != rate:
            logger.warning(
                "VAD input sample rate changed", extra={"old": self._input_rate, "new": rate}
            )
            # buffered audio was at the old rate: restart the audio clock from here
            self._input_t0 += self._input_samples / self._input_rate
            self._input_samples = 0
            self._audio_len = 0
            self._audio_first = 0
            self._utterance_first = 0
        self._input_rate = rate
        proc = processing_rate(rate, self._opts.sample_rate)
        if proc != self._proc_rate:
            if self._proc_rate:
                self._frames_base_samples = self.samples_index * proc // self._proc_rate
                self._frames = 0
            self._leftover = np.zeros(0, dtype=np.int16)
            self._proc_rate = proc
        self._resampler = None if rate == proc else StreamResampler(rate, proc)
        self._derive()

    @property
    def speaking(self) -> bool:
        return self._speaking

    @property
    def probability(self) -> float:
        """Smoothed fraction of voiced frames, after the last processed frame."""
        return self._probability

    @property
    def samples_index(self) -> int:
        """Samples processed, at the processing rate."""
        return self._frames_base_samples + self._frames * self._frame_len

    @property
    def processing_rate(self) -> int:
        """webrtcvad rate in use (0 before the first chunk)."""
        return self._proc_rate

    @property
    def timestamp(self) -> float:
        """Stream time in seconds at the end of the last processed frame."""
        rate = self._proc_rate or self._opts.sample_rate
        return self.samples_index / rate

    @property
    def speech_duration(self) -> float:
        """Seconds spent speaking in the current utterance (0 while silent)."""
        return self._speech_frames * self._frame_s

    @property
    def silence_duration(self) -> float:
        """Seconds since the last utterance ended (0 while speaking)."""
        return self._silence_frames * self._frame_s

    @property
    def raw_accumulated_speech(self) -> float:
        """Seconds of consecutive speech frames, before hysteresis."""
        return self._acc_speech_frames * self._frame_s

    @property
    def raw_accumulated_silence(self) -> float:
        """Seconds of consecutive non-speech frames, before hysteresis."""
        return self._acc_silence_frames * self._frame_s

    @property
    def last_push_frames(self) -> int:
        """webrtcvad frames processed by the last ``push``."""
        return self._last_push_frames

    def push(self, samples: Float32Array, sample_rate: int) -> list[VADCoreEvent]:
        if not isinstance(samples, np.ndarray) or samples.dtype != np.float32:
            got = samples.dtype if isinstance(samples, np.ndarray) else type(samples).__name__
            raise ValueError(f"VAD input must be a float32 numpy array, got {got}")
        if samples.ndim != 1:
            raise ValueError(f"VAD input must be mono (1-D), got shape {samples.shape}")
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self._last_push_frames = 0
        if len(samples) == 0:
            return []
        # float64 sum of float32 values cannot overflow: it is finite iff every sample is
        if not math.isfinite(float(np.add.reduce(samples, dtype=np.float64))):
            self.dropped_frames += 1
            samples = np.zeros_like(samples)
        if sample_rate != self._input_rate:
            self._set_input_rate(sample_rate)
        if self._keep_audio:
            self._append_audio(samples)
        self._input_samples += len(samples)

        x = self._resampler.process(samples) if self._resampler is not None else samples
        pcm = float_to_int16(x)
        if len(self._leftover):
            pcm = np.concatenate((self._leftover, pcm))
        flen = self._frame_len
        n = len(pcm) // flen
        self._leftover = pcm[n * flen :]
        if n == 0:
            return []
        return self._run_frames(memoryview(pcm[: n * flen].tobytes()), n)

    def _run_frames(self, buf: memoryview, n: int) -> list[VADCoreEvent]:
        events: list[VADCoreEvent] = []
        is_speech = self._vad.is_speech
        rate, flen = self._proc_rate, self._frame_len
        nbytes = 2 * flen
        alpha = self._alpha
        act, deact = self._opts.activation_threshold, self._opts.deactivation_threshold
        min_speech, min_silence = self._min_speech_frames, self._min_silence_frames
        p = self._probability
        speaking = self._speaking
        acc_speech, acc_silence = self._acc_speech_frames, self._acc_silence_frames
        speech, silence = self._speech_frames, self._silence_frames
        frames0 = self._frames
        loud = self._above_noise_floor(buf, n, flen)
        for i in range(n):
            voiced = loud[i] and is_speech(buf[i * nbytes : (i + 1) * nbytes], rate, flen)
            p += alpha * ((1.0 if voiced else 0.0) - p)
            if speaking:
                speech += 1
            else:
                silence += 1
            if p >= act or (speaking and p > deact):
                acc_speech += 1
                acc_silence = 0
                if not speaking and acc_speech >= min_speech:
                    speaking = True
                    silence = 0
                    speech = acc_speech
                    self._frames = frames0 + i + 1
                    events.append(self._event(VADEventType.START_OF_SPEECH, speech, 0))
            else:
                acc_silence += 1
                acc_speech = 0
                if speaking and acc_silence >= min_silence:
                    speaking = False
                    silence = acc_silence
                    self._frames = frames0 + i + 1
                    ev = self._event(VADEventType.END_OF_SPEECH, max(0, speech - silence), silence)
                    events.append(ev)
                    speech = 0
        self._frames = frames0 + n
        self._probability = p
        self._speaking = speaking
        self._acc_speech_frames, self._acc_silence_frames = acc_speech, acc_silence
        self._speech_frames, self._silence_frames = speech, silence
        self._last_push_frames = n
        return events

    def _above_noise_floor(self, buf: memoryview, n: int, flen: int) -> list[bool]:
        """Per frame: is it at least ``NOISE_GATE_DB`` above the tracked noise floor?

        webrtcvad judges spectral shape, not level, so a codec's comfort noise or a hissy
        line at -55 dBFS can read as speech. The floor follows the quietest frames at once
        and rises slowly (``NOISE_FLOOR_RISE_DB_S``), so speech never drags it up."""
        pcm = np.frombuffer(buf, dtype=np.int16, count=n * flen).reshape(n, flen)
        power = np.mean(np.square(pcm, dtype=np.float64), axis=1) / (32768.0**2)
        energy = 10.0 * np.log10(power + 1e-12)
        floor = self._floor_db
        rise = NOISE_FLOOR_RISE_DB_S * flen / self._proc_rate
        loud: list[bool] = []
        for e in energy.tolist():
            if e < DIGITAL_SILENCE_DB:
                # No signal at all (a stream before its first packet): not a noise floor,
                # and tracking it would let the real line noise pass the gate for seconds.
                loud.append(False)
                continue
            if floor is None:
                floor = min(e, NOISE_FLOOR_START_DB)
            floor = e if e < floor else floor + rise
            loud.append(e > floor + NOISE_GATE_DB)
        self._floor_db = floor
        return loud

    def _event(
        self,
        kind: Literal[VADEventType.START_OF_SPEECH, VADEventType.END_OF_SPEECH],
        speech_frames: int,
        silence_frames: int,
    ) -> VADCoreEvent:
        ev = VADCoreEvent(
            type=kind,
            samples_index=self.samples_index,
            timestamp=self.timestamp,
            speech_duration=speech_frames * self._frame_s,
            silence_duration=silence_frames * self._frame_s,
        )
        if self._keep_audio and self._input_rate:
            if kind is VADEventType.START_OF_SPEECH:
                onset = ev.speech_start - self._opts.prefix_padding_duration
                self._utterance_first = max(self._audio_first, self._input_index(onset))
            first = max(self._utterance_first, self._audio_first)
            last = min(self._audio_first + self._audio_len, self._input_index(ev.timestamp))
            lo, hi = first - self._audio_first, max(first, last) - self._audio_first
            ev.audio = self._audio[lo:hi].copy()
            ev.sample_rate = self._input_rate
        return ev

    def _input_index(self, t: float) -> int:
        return max(0, round((t - self._input_t0) * self._input_rate))

    def _append_audio(self, x: Float32Array) -> None:
        o, rate = self._opts, self._input_rate
        if self._audio_first + self._audio_len != self._input_samples:
            # a gap (the utterance outgrew max_buffered_speech): buffered audio is contiguous
            if self._speaking:
                return
            self._audio_first, self._audio_len = self._input_samples, 0
        if not self._speaking:
            # idle: keep only what a coming onset could claim (its padding and pre-trigger)
            keep = int(
                (o.prefix_padding_duration + o.min_speech_duration + 3 * self._frame_s + 0.1) * rate
            )
            if self._audio_len > 2 * keep:
                drop = self._audio_len - keep
                self._audio[:keep] = self._audio[drop : self._audio_len]
                self._audio_len = keep
                self._audio_first += drop
            self._max_buffer_warned = False
        elif (
            self._input_samples - self._utterance_first
            >= (o.max_buffered_speech + o.prefix_padding_duration) * rate
        ):
            if not self._max_buffer_warned:
                self._max_buffer_warned = True
                logger.warning("max_buffered_speech reached, not buffering more of this speech")
            return
        end = self._audio_len + len(x)
        if end > len(self._audio):
            grown = np.zeros(max(end, 2 * len(self._audio), rate), dtype=np.float32)
            grown[: self._audio_len] = self._audio[: self._audio_len]
            self._audio = grown
        self._audio[self._audio_len : end] = x
        self._audio_len = end

    def utterance_audio(self) -> Float32Array | None:
        """Input-rate audio of the open utterance so far, pre-roll included (what its END
        event would carry now); None while silent or when the core keeps no audio."""
        if not (self._speaking and self._keep_audio):
            return None
        first = max(self._utterance_first, self._audio_first) - self._audio_first
        return self._audio[first : self._audio_len].copy()

    def finish(self) -> list[VADCoreEvent]:
        """Ends the stream: an utterance still open gets its END_OF_SPEECH, stamped at the
        end of the audio processed so far. The state then resets."""
        events: list[VADCoreEvent] = []
        if self._speaking:
            silence = self._acc_silence_frames
            events.append(
                self._event(
                    VADEventType.END_OF_SPEECH, max(0, self._speech_frames - silence), silence
                )
            )
        self.reset()
        return events


def detect_segments(audio: Audio, **settings: Unpack[VADSettings]) -> list[tuple[float, float]]:
    """Speech segments ``(start, end)`` in seconds of ``audio``, as the streaming VAD would
    decide them (an utterance still open at the end closes there)."""
    core = VADCore(keep_speech_audio=False, **settings)
    events = core.push(audio.samples.astype(np.float32, copy=False), audio.sample_rate)
    events += core.finish()
    segments: list[tuple[float, float]] = []
    start = 0.0
    for ev in events:
        if ev.type is VADEventType.START_OF_SPEECH:
            start = ev.speech_start
        else:
            segments.append((round(start, 3), round(ev.speech_end, 3)))
    return segments
