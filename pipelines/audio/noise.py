"""Background-noise bed: looped ambience mixed under the agent's voice, by preset name.

The clips are the ambience recordings livekit-agents ships in ``livekit.agents.resources``
(decoded with PyAV, cached per process). Each preset is normalised to the same loudness,
so ``background_noise_volume`` means the same thing for every preset: a linear gain where
1.0 puts the bed at ``BED_DBFS_AT_FULL_VOLUME`` RMS, about as loud as the speech itself.
"""

from __future__ import annotations

import functools
from importlib.resources import as_file, files

import numpy as np

from pipelines.audio.pcm import Audio, AudioFormatError, Float32Array, resample

PRESETS: dict[str, str] = {
    "office": "office-ambience.ogg",
    "cafe": "crowded-room.ogg",
    "crowded-room": "crowded-room.ogg",
    "city": "city-ambience.ogg",
    "call-center": "office-ambience.ogg+keyboard-typing.ogg",
    "keyboard": "keyboard-typing.ogg",
    "forest": "forest-ambience.ogg",
}
"""Preset name -> clip(s) in ``livekit.agents.resources``; ``+`` layers clips."""

BED_DBFS_AT_FULL_VOLUME = -20.0
_LAYER_DB = (0.0, -6.0)
"""Relative level of each layer of a combined preset (the keyboard sits under the room)."""
_LOOP_CROSSFADE_S = 0.5
_RESOURCES = "livekit.agents.resources"


def preset_names() -> tuple[str, ...]:
    return tuple(sorted(PRESETS))


def validate_volume(volume: float) -> float:
    value = float(volume)
    if not np.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"background_noise_volume must be within 0..1, got {volume!r}")
    return value


def validate_preset(preset: str) -> str:
    if preset not in PRESETS:
        raise ValueError(
            f"background_noise_preset {preset!r} is unknown; known: {', '.join(preset_names())}"
        )
    return preset


def _decode_clip(name: str) -> Audio:
    import av

    with as_file(files(_RESOURCES) / name) as path:
        try:
            with av.open(str(path)) as container:
                stream = container.streams.audio[0]
                rate = int(stream.rate)
                chunks = [frame.to_ndarray() for frame in container.decode(stream)]
        except (av.FFmpegError, OSError, IndexError) as exc:
            raise AudioFormatError(f"{path}: cannot decode ambience clip ({exc})") from exc
    if not chunks:
        raise AudioFormatError(f"{name}: ambience clip is empty")
    raw = np.concatenate(chunks, axis=1)
    if raw.dtype.kind == "i":
        full_scale = float(2 ** (8 * raw.dtype.itemsize - 1))
        data = raw.astype(np.float32) / np.float32(full_scale)
    else:
        data = raw.astype(np.float32)
    return Audio(data.mean(axis=0).astype(np.float32), rate)


def _loopable(samples: Float32Array, sample_rate: int) -> Float32Array:
    """A clip that can repeat without a seam: its tail is cross-faded into its head."""
    fade = min(int(_LOOP_CROSSFADE_S * sample_rate), len(samples) // 4)
    if fade < 2:
        return samples
    # equal-power ramps, because the two ends are uncorrelated noise
    t = (np.arange(fade, dtype=np.float64) + 0.5) / fade
    fade_in = np.sin(0.5 * np.pi * t).astype(np.float32)
    fade_out = np.cos(0.5 * np.pi * t).astype(np.float32)
    body = samples[: len(samples) - fade].copy()
    body[:fade] = body[:fade] * fade_in + samples[len(samples) - fade :] * fade_out
    return body


def _normalised(samples: Float32Array) -> Float32Array:
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    target = 10.0 ** (BED_DBFS_AT_FULL_VOLUME / 20.0)
    return (samples * (target / rms)).astype(np.float32) if rms > 0 else samples


@functools.lru_cache(maxsize=32)
def load_bed(preset: str, sample_rate: int) -> Float32Array:
    """The preset's loop at ``sample_rate``, normalised to full volume; cached per process."""
    validate_preset(preset)
    layers: list[Float32Array] = []
    for i, name in enumerate(PRESETS[preset].split("+")):
        clip = _decode_clip(name)
        loop = _loopable(
            _normalised(resample(clip.samples, clip.sample_rate, sample_rate)), sample_rate
        )
        gain = np.float32(10.0 ** (_LAYER_DB[min(i, len(_LAYER_DB) - 1)] / 20.0))
        layers.append((loop * gain).astype(np.float32))
    if len(layers) == 1:
        bed = layers[0]
    else:
        # each layer repeats seamlessly at its own length inside a loop as long as the
        # longest; that loop's own seam is cross-faded like a single clip's
        length = max(len(layer) for layer in layers)
        mixed = np.zeros(length + int(_LOOP_CROSSFADE_S * sample_rate), dtype=np.float32)
        for layer in layers:
            mixed += np.tile(layer, -(-len(mixed) // len(layer)))[: len(mixed)]
        bed = _loopable(_normalised(mixed), sample_rate)
    bed.setflags(write=False)
    return bed


class NoiseBed:
    """An endless stream of the preset's ambience at ``volume``, looped seamlessly."""

    def __init__(self, preset: str, volume: float, sample_rate: int) -> None:
        self.preset = validate_preset(preset)
        self.volume = validate_volume(volume)
        self.sample_rate = sample_rate
        self._loop = load_bed(preset, sample_rate)
        self._gain = np.float32(self.volume)
        self._pos = 0

    def reset(self) -> None:
        self._pos = 0

    def next(self, n: int) -> Float32Array:
        """The next ``n`` samples of the bed."""
        out = np.empty(n, dtype=np.float32)
        filled = 0
        loop = self._loop
        while filled < n:
            take = min(n - filled, len(loop) - self._pos)
            np.multiply(
                loop[self._pos : self._pos + take], self._gain, out=out[filled : filled + take]
            )
            filled += take
            self._pos = (self._pos + take) % len(loop)
        return out


_KNEE = 0.8
"""Above this level the limiter bends the signal smoothly toward (never past) full scale."""


def soft_limit(samples: Float32Array) -> Float32Array:
    """Leaves |x| <= 0.8 untouched and maps the rest onto (0.8, 1.0) with a tanh knee."""
    mag = np.abs(samples)
    if not len(samples) or float(mag.max()) <= _KNEE:
        return samples
    over = mag > _KNEE
    headroom = 1.0 - _KNEE
    bent = _KNEE + headroom * np.tanh((mag[over] - _KNEE) / headroom)
    out = samples.copy()
    out[over] = np.sign(samples[over]) * bent
    return out.astype(np.float32, copy=False)


def mix(speech: Float32Array, bed: Float32Array) -> Float32Array:
    """Speech over the bed, soft-limited so the sum never clips (nor wraps in int16)."""
    return soft_limit(speech + bed)


def mix_file(audio: Audio, preset: str | None, volume: float | None) -> Audio:
    """Mixes a bed under a whole clip (``voice-worker mix``); no preset or volume: unchanged."""
    if not preset or volume is None:
        return audio
    bed = NoiseBed(preset, volume, audio.sample_rate)
    return Audio(mix(audio.samples, bed.next(len(audio.samples))), audio.sample_rate)
