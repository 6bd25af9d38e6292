"""Noise bed: presets, seamless loop, level, limiter, validation."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.audio import (
    BED_DBFS_AT_FULL_VOLUME,
    Audio,
    NoiseBed,
    float_to_int16,
    load_bed,
    mix,
    mix_file,
    preset_names,
    rms_dbfs,
    soft_limit,
)

SR = 16000


def test_required_presets_exist() -> None:
    for name in ("office", "cafe", "crowded-room", "city", "call-center", "keyboard", "forest"):
        assert name in preset_names()


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_decodes_at_the_output_rate(preset: str) -> None:
    bed = load_bed(preset, SR)
    assert bed.dtype == np.float32 and len(bed) > SR * 5
    assert rms_dbfs(bed) == pytest.approx(BED_DBFS_AT_FULL_VOLUME, abs=1.0)


def test_decoded_clips_are_cached() -> None:
    assert load_bed("office", SR) is load_bed("office", SR)


@pytest.mark.parametrize("volume", [0.1, 0.5, 1.0])
def test_volume_is_linear_gain(volume: float) -> None:
    out = NoiseBed("city", volume, SR).next(SR * 5)
    expected = BED_DBFS_AT_FULL_VOLUME + 20 * np.log10(volume)
    assert rms_dbfs(out) == pytest.approx(expected, abs=1.5)


def test_loop_point_has_no_seam() -> None:
    loop = load_bed("forest", SR)
    nb = NoiseBed("forest", 1.0, SR)
    out = nb.next(len(loop) * 2 + 100)
    # continuous: chunked reads equal one read, and the stream repeats the loop exactly
    nb2 = NoiseBed("forest", 1.0, SR)
    chunked = np.concatenate(
        [nb2.next(n) for n in [160] * (len(out) // 160)] + [nb2.next(len(out) % 160)]
    )
    assert np.array_equal(chunked, out)
    assert np.array_equal(out[len(loop) : 2 * len(loop)], out[: len(loop)])
    # across the wrap, the step between samples is typical of the clip, not a jump
    steps = np.abs(np.diff(loop))
    wrap_step = abs(float(loop[0]) - float(loop[-1]))
    assert wrap_step <= np.percentile(steps, 99.9)
    # and the level around the seam is one the clip has elsewhere (no dip, no bump):
    # ambience varies by itself, so compare with every other window of the same length
    w = SR // 2
    around = rms_dbfs(np.concatenate([loop[-w // 2 :], loop[: w // 2]]))
    levels = [rms_dbfs(loop[i : i + w]) for i in range(0, len(loop) - w, w // 2)]
    assert min(levels) - 1.0 <= around <= max(levels) + 1.0


def test_unknown_preset_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="office") as exc:
        NoiseBed("disco", 0.5, SR)
    assert "disco" in str(exc.value)


@pytest.mark.parametrize("volume", [-0.1, 1.01, float("nan")])
def test_volume_out_of_range_names_the_field(volume: float) -> None:
    with pytest.raises(ValueError, match="background_noise_volume"):
        NoiseBed("office", volume, SR)


def test_limiter_never_clips_or_wraps() -> None:
    t = np.arange(SR) / SR
    speech = (0.95 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    loud = NoiseBed("cafe", 1.0, SR).next(SR) * np.float32(3.0)
    out = mix(speech, loud)
    assert np.abs(out).max() < 1.0
    pcm = float_to_int16(out)
    # no wrap-around: the sign follows the float signal wherever it is loud
    big = np.abs(out) > 0.5
    assert np.all(np.sign(pcm[big]) == np.sign(out[big]))
    # quiet material passes untouched
    quiet = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    assert soft_limit(quiet) is quiet


def test_mix_file_adds_the_bed_and_keeps_length() -> None:
    silence = Audio(np.zeros(SR * 20, dtype=np.float32), SR)
    out = mix_file(silence, "office", 0.5)
    assert len(out.samples) == len(silence.samples) and out.sample_rate == SR
    assert rms_dbfs(out.samples) == pytest.approx(BED_DBFS_AT_FULL_VOLUME - 6.0, abs=1.5)


@pytest.mark.parametrize(("preset", "volume"), [("", 0.5), (None, 0.5), ("office", None)])
def test_empty_preset_or_volume_disables(preset: str | None, volume: float | None) -> None:
    audio = Audio(np.zeros(100, dtype=np.float32), SR)
    assert mix_file(audio, preset, volume) is audio
