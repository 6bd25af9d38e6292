"""pipelines.audio.pcm: the one resampler every offline stage and file tool uses."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.audio import Audio, float_to_int16, read_wav, resample, rms_dbfs, write_wav


def band_energy(x: np.ndarray, rate: int, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    return float(spec[(freqs >= lo) & (freqs < hi)].sum())


def tone(freq: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_upsampling_keeps_the_band_and_adds_no_images() -> None:
    """8 -> 16 kHz: linear interpolation would mirror the band above 4 kHz."""
    x = tone(1000, 8000)
    y = resample(x, 8000, 16000)
    assert len(y) == 16000
    mid = y[2000:14000]
    assert np.sqrt(np.mean(mid**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)
    linear = np.interp(np.arange(16000) / 16000, np.arange(8000) / 8000, x)[2000:14000]
    images = band_energy(mid, 16000, 4200, 8000) / band_energy(mid, 16000, 0, 4000)
    linear_images = band_energy(linear, 16000, 4200, 8000) / band_energy(linear, 16000, 0, 4000)
    assert images < 1e-5 < linear_images


def test_downsampling_does_not_alias() -> None:
    """A 10 kHz tone has no place at 16 kHz: it must vanish, not fold to 6 kHz."""
    y = resample(tone(10000, 22050), 22050, 16000)
    assert rms_dbfs(y[500:-500]) < -60
    kept = resample(tone(1000, 22050), 22050, 16000)
    assert rms_dbfs(kept[500:-500]) == pytest.approx(rms_dbfs(tone(1000, 16000)), abs=0.5)


@pytest.mark.parametrize(("src", "dst"), [(8000, 12000), (44100, 16000), (16000, 48000)])
def test_any_ratio_gives_the_right_length(src: int, dst: int) -> None:
    assert len(resample(tone(440, src), src, dst)) == dst


def test_wav_round_trip_limits_instead_of_wrapping(tmp_path) -> None:  # type: ignore[no-untyped-def]
    loud = np.array([0.0, 1.5, -1.5, np.nan, 0.25], dtype=np.float32)
    assert list(float_to_int16(loud)) == [0, 32767, -32768, 0, 8192]
    write_wav(tmp_path / "x.wav", Audio(loud, 8000))
    back = read_wav(tmp_path / "x.wav")
    assert back.sample_rate == 8000 and back.samples[1] > 0.99 and back.samples[2] < -0.99
