"""Time-stretch: duration, pitch, seams, streaming invariance, reset, rate validation."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipelines.audio import Audio, Float32Array, TimeStretcher, read_wav, resample, stretch_audio
from worker.dev.bench import aligned_f0_ratio, median_f0

SR = 24000


def sine(freq: float, seconds: float, sr: int = SR) -> Float32Array:
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Audio:
    assert shutil.which("espeak-ng"), "espeak-ng is required (Debian package espeak-ng)"
    wav: Path = tmp_path_factory.mktemp("speech") / "speech.wav"
    text = (
        "Hello, thank you for calling. This is the voice agent speaking. "
        "How can I help you today? I can book appointments and answer questions."
    )
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True)
    audio = read_wav(wav)
    return Audio(resample(audio.samples, audio.sample_rate, SR), SR)


def stream(stretcher: TimeStretcher, x: Float32Array, chunk_sizes: list[int]) -> Float32Array:
    parts, i, k = [], 0, 0
    while i < len(x):
        n = chunk_sizes[k % len(chunk_sizes)]
        parts.append(stretcher.process(x[i : i + n]))
        i, k = i + n, k + 1
    parts.append(stretcher.flush())
    return np.concatenate(parts)


def test_f0_estimator_reads_sines() -> None:
    for freq in (90.0, 150.0, 240.0):
        assert median_f0(sine(freq, 1.0), SR) == pytest.approx(freq, rel=0.01)


@pytest.mark.parametrize("rate", [0.5, 0.75, 1.25, 2.0, 3.0])
def test_duration_is_input_over_rate(speech: Audio, rate: float) -> None:
    out = stretch_audio(speech, rate)
    expected = len(speech.samples) / rate
    assert abs(len(out.samples) - expected) <= 0.01 * expected
    assert out.sample_rate == speech.sample_rate


@pytest.mark.parametrize("rate", [0.75, 1.25, 2.0])
def test_pitch_preserved_on_speech(speech: Audio, rate: float) -> None:
    out = stretch_audio(speech, rate).samples
    f0_in = median_f0(speech.samples, SR)
    assert median_f0(out, SR) == pytest.approx(f0_in, rel=0.03)
    assert aligned_f0_ratio(speech.samples, out, SR, rate) == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("rate", [0.5, 1.5, 3.0])
@pytest.mark.parametrize("freq", [97.3, 220.0, 440.0])
def test_sine_keeps_pitch_without_clicks(freq: float, rate: float) -> None:
    x = sine(freq, 2.0)
    y = stretch_audio(Audio(x, SR), rate).samples
    assert median_f0(y, SR) == pytest.approx(median_f0(x, SR), rel=0.01)
    # a seam would show as a sample-to-sample jump well above the tone's own slope
    assert np.abs(np.diff(y)).max() <= 1.1 * np.abs(np.diff(x)).max()
    # and as energy far above the tone: the second difference of a sine scales with f^2
    hf_in = np.mean(np.diff(x, 2) ** 2)
    assert np.mean(np.diff(y, 2) ** 2) <= 1.2 * hf_in
    # the envelope does not dip at frame joins
    body = y[SR // 10 : -SR // 10]
    body = body[: len(body) // 240 * 240].reshape(-1, 240)
    assert np.abs(body).max(axis=1).min() > 0.45


def test_streaming_output_does_not_depend_on_chunking(speech: Audio) -> None:
    x = speech.samples
    whole = stretch_audio(speech, 1.7).samples
    for sizes in ([1, 7, 240, 13, 999], [480], [SR]):
        assert np.array_equal(stream(TimeStretcher(1.7, SR), x, sizes), whole)


def test_lookahead_bounds_what_is_held_back(speech: Audio) -> None:
    for rate in (0.5, 1.25, 3.0):
        st = TimeStretcher(rate, SR)
        got = 0
        held_max = 0.0
        x = speech.samples[: SR * 2]
        for i in range(0, len(x), 48):
            got += len(st.process(x[i : i + 48]))
            held_input = (i + 48) - got * rate
            held_max = max(held_max, held_input)
        # output comes in hops, so allow one hop of output on top of the look-ahead
        bound = st.lookahead_ms * SR / 1000 + 0.015 * SR * rate
        assert held_max <= bound
        assert st.lookahead_ms <= 50.0


def test_rate_one_is_a_pass_through() -> None:
    st = TimeStretcher(1.0, SR)
    x = sine(200.0, 0.1)
    assert st.process(x) is x
    assert len(st.flush()) == 0
    audio = Audio(x, SR)
    assert stretch_audio(audio, 1.0) is audio


@pytest.mark.parametrize("rate", [0.49, 3.01, 0.0, -1.0, float("nan")])
def test_rate_out_of_range_names_the_field(rate: float) -> None:
    with pytest.raises(ValueError, match="tts_playback_rate"):
        TimeStretcher(rate, SR)


def test_reset_drops_buffered_audio() -> None:
    st = TimeStretcher(1.5, SR)
    st.process(sine(300.0, 0.5))
    st.reset()
    assert len(st.flush()) == 0
    # after a reset the stream starts clean: same output as a fresh stretcher
    x = sine(150.0, 0.3)
    fresh = stream(TimeStretcher(1.5, SR), x, [480])
    assert np.array_equal(stream(st, x, [480]), fresh)


def test_segments_are_independent_after_flush() -> None:
    st = TimeStretcher(0.8, SR)
    a, b = sine(200.0, 0.4), sine(330.0, 0.25)
    out_a = stream(st, a, [480])
    out_b = stream(st, b, [480])
    assert len(out_a) == round(len(a) / 0.8)
    assert len(out_b) == round(len(b) / 0.8)


def test_short_segment_is_not_lost() -> None:
    st = TimeStretcher(2.0, SR)
    x = sine(200.0, 0.01)
    out = np.concatenate([st.process(x), st.flush()])
    assert len(out) == round(len(x) / 2.0)
    assert np.abs(out).max() > 0.1
