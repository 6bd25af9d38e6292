"""The energy segmenter of the STT wire servers: utterances cut from a sample stream by
short-term energy, on audio time (not wall time, so results do not depend on how fast the
caller pushes audio)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from pipelines.audio import Float32Array, rms_dbfs


@dataclass(frozen=True, slots=True)
class SegmentEvent:
    kind: Literal["start", "end"]
    sample: int
    """Stream position of the event, in samples since the stream began."""


class EnergySegmenter:
    """Cuts a sample stream into utterances by short-term energy.

    Speech starts once ``min_speech_ms`` of frames are louder than ``threshold_dbfs`` and
    ends after ``silence_ms`` of quieter frames; event positions are in samples.
    """

    def __init__(
        self,
        sample_rate: int,
        *,
        threshold_dbfs: float = -40.0,
        min_speech_ms: int = 60,
        silence_ms: int = 400,
        frame_ms: int = 20,
    ) -> None:
        self.sample_rate = sample_rate
        self.threshold_dbfs = threshold_dbfs
        self.frame_len = max(1, sample_rate * frame_ms // 1000)
        self.min_speech_frames = max(1, min_speech_ms // frame_ms)
        self.silence_frames = max(1, silence_ms // frame_ms)
        self.reset()

    def reset(self) -> None:
        self.position = 0
        """Samples consumed so far (including the partial frame held back)."""
        self.in_speech = False
        self._pending = np.zeros(0, dtype=np.float32)
        self._loud_run = 0
        self._quiet_run = 0
        self._frames_done = 0

    @property
    def quiet_samples(self) -> int:
        """Samples since the last loud frame of the utterance in progress (0 outside one),
        the partial frame held back included."""
        return self._quiet_run * self.frame_len + len(self._pending) if self.in_speech else 0

    @property
    def loud_end(self) -> int:
        """Stream position just past the last loud frame of the utterance in progress
        (frame-aligned: it does not move while only quiet frames come)."""
        return (self._frames_done - self._quiet_run) * self.frame_len

    def interrupt(self) -> None:
        """Ends the current utterance now (a caller's ``Finalize``); the next loud audio
        starts a new one."""
        self.in_speech = False
        self._loud_run = 0
        self._quiet_run = 0

    def push(self, samples: Float32Array) -> list[SegmentEvent]:
        self.position += len(samples)
        buf = np.concatenate([self._pending, samples]) if len(self._pending) else samples
        events: list[SegmentEvent] = []
        n_frames = len(buf) // self.frame_len
        for i in range(n_frames):
            frame = buf[i * self.frame_len : (i + 1) * self.frame_len]
            loud = rms_dbfs(frame) > self.threshold_dbfs
            frame_end = (self._frames_done + 1) * self.frame_len
            self._frames_done += 1
            if not self.in_speech:
                self._loud_run = self._loud_run + 1 if loud else 0
                if self._loud_run >= self.min_speech_frames:
                    self.in_speech = True
                    self._quiet_run = 0
                    events.append(
                        SegmentEvent("start", frame_end - self._loud_run * self.frame_len)
                    )
            else:
                self._quiet_run = 0 if loud else self._quiet_run + 1
                if self._quiet_run >= self.silence_frames:
                    self.in_speech = False
                    self._loud_run = 0
                    events.append(SegmentEvent("end", frame_end - self._quiet_run * self.frame_len))
        self._pending = buf[n_frames * self.frame_len :].copy()
        return events
