"""Options of the webrtcvad VAD, shared by the numpy core (``pipelines.audio.vad_core``) and
the LiveKit VAD around it (``pipelines.audio.vad``): their meaning, their one set of
defaults (``VADOptions.create``), their ranges, and how an update changes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal, TypedDict, Unpack

from livekit.agents.utils import is_given

WEBRTC_RATES: tuple[int, ...] = (8000, 16000, 32000, 48000)
"""Sample rates webrtcvad accepts."""

FrameMs = Literal[10, 20, 30]
ProcessingRate = Literal[8000, 16000, 32000, 48000]


@dataclass
class VADOptions:
    """The options of one VAD stream, validated (built by ``create``, changed by ``updated``)."""

    aggressiveness: int
    """webrtcvad mode, 0 (lenient: more audio counts as speech) to 3 (strict)."""
    frame_ms: int
    """webrtcvad frame length: 10, 20 or 30 ms."""
    sample_rate: int
    """Preferred processing rate; lower-rate input is processed at its own rate, never upsampled."""
    min_speech_duration: float
    """Seconds of continuous speech before START_OF_SPEECH."""
    min_silence_duration: float
    """Seconds of continuous silence before END_OF_SPEECH. webrtcvad itself keeps calling
    frames voiced for ~0.1-0.2 s after speech stops (its hangover), so the end is decided
    about that much later than this value alone says."""
    activation_threshold: float
    """Smoothed probability at which a frame counts as speech."""
    deactivation_threshold: float
    """While speaking, a frame stays speech until the probability drops to this value."""
    smoothing: float
    """Time constant (seconds) of the exponential smoothing of voiced decisions."""
    prefix_padding_duration: float
    """Seconds of audio before the speech onset included in START/END event audio."""
    max_buffered_speech: float
    """Seconds of speech audio kept for one utterance; the rest is not buffered."""

    @classmethod
    def create(
        cls,
        *,
        aggressiveness: int = 2,
        frame_ms: FrameMs = 10,
        sample_rate: ProcessingRate = 16000,
        min_speech_duration: float = 0.1,
        min_silence_duration: float = 0.45,
        activation_threshold: float = 0.5,
        deactivation_threshold: float | None = None,
        smoothing: float = 0.03,
        prefix_padding_duration: float = 0.3,
        max_buffered_speech: float = 60.0,
    ) -> VADOptions:
        """Validated options from ``VADSettings``; the defaults live here only."""
        opts = cls(
            aggressiveness=aggressiveness,
            frame_ms=frame_ms,
            sample_rate=sample_rate,
            min_speech_duration=min_speech_duration,
            min_silence_duration=min_silence_duration,
            activation_threshold=activation_threshold,
            deactivation_threshold=(
                max(activation_threshold - 0.15, 0.01)
                if deactivation_threshold is None
                else deactivation_threshold
            ),
            smoothing=smoothing,
            prefix_padding_duration=prefix_padding_duration,
            max_buffered_speech=max_buffered_speech,
        )
        opts.validate()
        return opts

    def updated(self, **changes: Unpack[VADUpdate]) -> VADOptions:
        """A validated copy with the given options changed; a new ``activation_threshold``
        alone lowers ``deactivation_threshold`` to it where it was above."""
        given = {k: v for k, v in changes.items() if is_given(v)}
        new = replace(self, **given)  # type: ignore[arg-type]
        if "activation_threshold" in given and "deactivation_threshold" not in given:
            new.deactivation_threshold = min(new.deactivation_threshold, new.activation_threshold)
        new.validate()
        return new

    def validate(self) -> None:
        if self.aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"aggressiveness must be 0..3, got {self.aggressiveness}")
        if self.frame_ms not in (10, 20, 30):
            raise ValueError(f"frame_ms must be 10, 20 or 30, got {self.frame_ms}")
        if self.sample_rate not in WEBRTC_RATES:
            raise ValueError(f"sample_rate must be one of {WEBRTC_RATES}, got {self.sample_rate}")
        for name in (
            "min_speech_duration",
            "min_silence_duration",
            "smoothing",
            "prefix_padding_duration",
            "max_buffered_speech",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if not 0.0 < self.activation_threshold <= 1.0:
            raise ValueError(
                f"activation_threshold must be in (0, 1], got {self.activation_threshold}"
            )
        if not 0.0 <= self.deactivation_threshold <= self.activation_threshold:
            raise ValueError(
                "deactivation_threshold must be in [0, activation_threshold], "
                f"got {self.deactivation_threshold}"
            )


class _Options(TypedDict, total=False):
    aggressiveness: int
    frame_ms: FrameMs
    sample_rate: ProcessingRate
    min_speech_duration: float
    min_silence_duration: float
    activation_threshold: float
    smoothing: float
    prefix_padding_duration: float
    max_buffered_speech: float


class VADSettings(_Options, total=False):
    """Keyword options of ``VADCore``, ``WebRTCVAD.load`` and ``detect_segments``: the
    fields of ``VADOptions``, each optional (defaults in ``VADOptions.create``)."""

    deactivation_threshold: float | None
    """None: ``activation_threshold`` - 0.15, at least 0.01."""


class VADUpdate(_Options, total=False):
    """Keyword options of ``update_options``: those given change, the others stay."""

    deactivation_threshold: float


def processing_rate(input_rate: int, preferred: int = 16000) -> int:
    """The webrtcvad rate used for ``input_rate``: ``preferred``, or for lower-rate input the
    largest webrtcvad rate it fills (upsampling adds no information), 8 kHz at least."""
    if input_rate >= preferred:
        return preferred
    return max((r for r in WEBRTC_RATES if r <= input_rate), default=WEBRTC_RATES[0])
