from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from livekit import rtc
from livekit.agents.vad import VADEvent, VADEventType

from pipelines.audio import (
    Audio,
    Float32Array,
    StreamResampler,
    VADCore,
    VADCoreEvent,
    WebRTCVAD,
    detect_segments,
    float_to_int16,
    processing_rate,
    read_wav,
)

RATES = [8000, 16000, 24000, 44100, 48000]


def silence(seconds: float, rate: int) -> Float32Array:
    return np.zeros(int(seconds * rate), dtype=np.float32)


def buzz(seconds: float, rate: int, f0: float = 150.0) -> Float32Array:
    """Harmonic 'vowel' at about -20 dBFS: webrtcvad calls it speech at every mode."""
    t = np.arange(int(seconds * rate)) / rate
    k = np.arange(1, 8)[:, None]
    wave: Float32Array = (0.1 * np.sin(2 * np.pi * f0 * k * t) / k).sum(axis=0).astype(np.float32)
    return wave


def noise(seconds: float, rate: int, seed: int = 0) -> Float32Array:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32)


def concat(*parts: Float32Array) -> Float32Array:
    return np.concatenate(parts).astype(np.float32)


def assert_segments(
    got: list[tuple[float, float]],
    want: list[tuple[float, float]],
    start_tol: float = 0.06,
    end_tol: float = 0.25,
) -> None:
    """Ends may be late by webrtcvad's hangover, never early by more than a frame or two."""
    assert len(got) == len(want), (got, want)
    for (gs, ge), (ws, we) in zip(got, want, strict=True):
        assert abs(gs - ws) <= start_tol, (got, want)
        assert -0.05 <= ge - we <= end_tol, (got, want)


def test_silence_gives_no_speech() -> None:
    core = VADCore()
    events = core.push(silence(3.0, 16000), 16000)
    assert events == []
    assert not core.speaking
    assert core.probability == 0.0
    assert core.timestamp == pytest.approx(3.0)
    assert detect_segments(Audio(silence(2.0, 48000), 48000)) == []


@pytest.mark.parametrize("burst", [buzz, noise])
def test_bursts_with_known_gaps(burst: Callable[[float, int], Float32Array]) -> None:
    rate = 16000
    make = burst
    x = concat(
        silence(0.5, rate), make(1.0, rate), silence(1.0, rate), make(0.8, rate), silence(0.7, rate)
    )
    assert_segments(detect_segments(Audio(x, rate)), [(0.5, 1.5), (2.5, 3.3)])


def test_short_blip_is_ignored() -> None:
    rate = 16000
    # webrtcvad's hangover stretches a 50 ms blip to ~130 ms of voiced frames
    x = concat(silence(0.5, rate), buzz(0.05, rate), silence(1.0, rate))
    assert detect_segments(Audio(x, rate), min_speech_duration=0.25) == []
    assert len(detect_segments(Audio(x, rate), min_speech_duration=0.02)) == 1
    longer = concat(silence(0.5, rate), buzz(0.4, rate), silence(1.0, rate))
    assert len(detect_segments(Audio(longer, rate), min_speech_duration=0.25)) == 1


def test_short_gap_does_not_split() -> None:
    rate = 16000
    x = concat(
        silence(0.5, rate), buzz(0.6, rate), silence(0.2, rate), buzz(0.6, rate), silence(1.0, rate)
    )
    assert_segments(detect_segments(Audio(x, rate), min_silence_duration=0.45), [(0.5, 1.9)])
    split = detect_segments(Audio(x, rate), min_silence_duration=0.05, aggressiveness=3)
    assert len(split) == 2


@pytest.mark.parametrize("rate", RATES)
def test_input_rates_give_the_same_segments(rate: int) -> None:
    def signal(r: int) -> Float32Array:
        return concat(
            silence(0.4, r), buzz(0.9, r), silence(0.8, r), noise(0.5, r), silence(0.6, r)
        )

    reference = detect_segments(Audio(signal(16000), 16000))
    got = detect_segments(Audio(signal(rate), rate))
    assert len(got) == len(reference) == 2
    for (gs, ge), (rs, re) in zip(got, reference, strict=True):
        assert abs(gs - rs) <= 0.03 and abs(ge - re) <= 0.03, (got, reference)


def test_processing_rate_never_upsamples() -> None:
    assert processing_rate(48000) == 16000
    assert processing_rate(44100) == 16000
    assert processing_rate(8000) == 8000
    assert processing_rate(11025) == 8000
    assert processing_rate(4000) == 8000
    assert processing_rate(48000, 48000) == 48000


@pytest.mark.parametrize(("src", "dst"), [(44100, 16000), (48000, 16000), (8000, 16000)])
def test_resampler_output_does_not_depend_on_chunking(src: int, dst: int) -> None:
    x = noise(1.0, src, seed=3)
    whole = StreamResampler(src, dst).process(x)
    rs = StreamResampler(src, dst)
    rng = np.random.default_rng(1)
    cuts = np.sort(rng.integers(0, len(x), 40))
    pieces = [rs.process(p) for p in np.split(x, cuts)]
    np.testing.assert_allclose(np.concatenate(pieces), whole, atol=1e-6)
    assert abs(len(whole) - len(x) * dst / src) <= 1


def test_events_do_not_depend_on_chunking() -> None:
    rate = 44100
    x = concat(silence(0.3, rate), buzz(0.7, rate), silence(0.9, rate), noise(0.4, rate))
    whole = VADCore(keep_speech_audio=False)
    expected = whole.push(x, rate) + whole.finish()
    core = VADCore(keep_speech_audio=False)
    rng = np.random.default_rng(2)
    got: list[VADCoreEvent] = []
    for piece in np.split(x, np.sort(rng.integers(0, len(x), 200))):
        got += core.push(piece, rate)
    got += core.finish()
    assert [(e.type, e.samples_index, e.speech_duration) for e in got] == [
        (e.type, e.samples_index, e.speech_duration) for e in expected
    ]
    assert [e.type for e in got] == [VADEventType.START_OF_SPEECH, VADEventType.END_OF_SPEECH] * 2


def test_event_fields_and_speech_audio() -> None:
    rate = 48000
    core = VADCore(prefix_padding_duration=0.2)
    x = concat(silence(1.0, rate), buzz(1.0, rate), silence(1.0, rate))
    events: list[VADCoreEvent] = []
    for i in range(0, len(x), 480):
        events += core.push(x[i : i + 480], rate)
    start, end = events
    assert core.utterance_audio() is None  # silent again
    assert start.type is VADEventType.START_OF_SPEECH
    assert start.speech_start == pytest.approx(1.0, abs=0.06)
    assert start.silence_duration == 0.0
    assert end.type is VADEventType.END_OF_SPEECH
    assert end.speech_end == pytest.approx(2.0, abs=0.25)
    assert end.speech_duration == pytest.approx(1.0, abs=0.25)
    assert end.silence_duration >= 0.45
    assert start.audio is not None and end.audio is not None
    assert start.sample_rate == end.sample_rate == rate
    # END audio: pre-roll + utterance + the trailing silence that decided the end
    assert len(end.audio) / rate == pytest.approx(
        end.timestamp - start.speech_start + 0.2, abs=0.02
    )
    assert np.all(end.audio[: int(0.15 * rate)] == 0.0)  # pre-roll is the silence before
    assert np.abs(end.audio).max() > 0.1


def test_max_buffered_speech_bounds_event_audio() -> None:
    rate = 16000
    core = VADCore(max_buffered_speech=0.5, prefix_padding_duration=0.1)
    x = concat(silence(0.5, rate), buzz(2.0, rate), silence(1.0, rate), buzz(0.5, rate))
    events: list[VADCoreEvent] = []
    for i in range(0, len(x), 160):
        events += core.push(x[i : i + 160], rate)
    events += core.finish()
    ends = [e for e in events if e.type is VADEventType.END_OF_SPEECH]
    assert len(ends) == 2
    assert ends[0].audio is not None and ends[1].audio is not None
    assert len(ends[0].audio) <= int(0.62 * rate)
    # the next utterance is buffered again, aligned to its own onset
    assert len(ends[1].audio) / rate == pytest.approx(0.1 + ends[1].speech_duration, abs=0.05)


def test_non_finite_chunks_are_dropped_and_counted() -> None:
    rate = 16000
    core = VADCore()
    bad = buzz(0.01, rate)
    bad[3] = np.nan
    inf = buzz(0.01, rate)
    inf[7] = np.inf
    events: list[VADCoreEvent] = []
    for _ in range(50):
        events += core.push(bad, rate)
    events += core.push(inf, rate)
    assert core.dropped_frames == 51
    assert events == []
    assert core.timestamp == pytest.approx(0.51)  # the clock keeps step with the input
    x = buzz(1.0, rate)
    for i in range(0, len(x), 160):
        events += core.push(x[i : i + 160], rate)
    assert [e.type for e in events] == [VADEventType.START_OF_SPEECH]
    assert np.isfinite(core.probability)


def test_bad_input_is_rejected_or_ignored() -> None:
    core = VADCore()
    assert core.push(np.zeros(0, dtype=np.float32), 16000) == []
    assert core.timestamp == 0.0
    with pytest.raises(ValueError, match="float32"):
        core.push(np.zeros(160, dtype=np.float64), 16000)
    with pytest.raises(ValueError, match="float32"):
        core.push(np.zeros(160, dtype=np.int16), 16000)
    with pytest.raises(ValueError, match="mono"):
        core.push(np.zeros((160, 2), dtype=np.float32), 16000)
    with pytest.raises(ValueError, match="sample_rate"):
        core.push(np.zeros(160, dtype=np.float32), 0)
    with pytest.raises(ValueError, match="aggressiveness"):
        VADCore(aggressiveness=4)
    with pytest.raises(ValueError, match="frame_ms"):
        VADCore(frame_ms=25)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_silence_duration"):
        VADCore(min_silence_duration=float("nan"))


def test_out_of_range_and_rate_change_do_not_stick_the_stream() -> None:
    core = VADCore()
    loud = (buzz(0.5, 16000) * 40).astype(np.float32)  # far beyond full scale: clipped
    events = core.push(loud, 16000)
    events += core.push(silence(0.2, 48000), 48000)
    events += core.push(silence(1.0, 8000), 8000)
    assert [e.type for e in events] == [
        VADEventType.START_OF_SPEECH,
        VADEventType.END_OF_SPEECH,
    ]
    assert core.timestamp == pytest.approx(1.7, abs=0.02)
    events = core.push(buzz(0.5, 8000), 8000)
    assert [e.type for e in events] == [VADEventType.START_OF_SPEECH]


def test_reset_and_update_options() -> None:
    core = VADCore()
    core.push(buzz(0.5, 16000), 16000)
    assert core.speaking
    core.reset()
    assert not core.speaking and core.timestamp == 0.0 and core.probability == 0.0
    core.update_options(min_speech_duration=1.0, frame_ms=30)
    assert core.push(buzz(0.5, 16000), 16000) == []
    assert len(core.push(buzz(0.6, 16000), 16000)) == 1


def _frames(x: Float32Array, rate: int, ms: int = 10) -> list[rtc.AudioFrame]:
    step = rate * ms // 1000
    pcm = float_to_int16(x)
    return [
        rtc.AudioFrame(
            data=pcm[i : i + step].tobytes(),
            sample_rate=rate,
            num_channels=1,
            samples_per_channel=step,
        )
        for i in range(0, len(pcm) - step + 1, step)
    ]


def test_utterance_audio_while_speaking() -> None:
    rate = 16000
    core = VADCore(prefix_padding_duration=0.2)
    assert core.utterance_audio() is None
    core.push(concat(silence(0.5, rate), buzz(0.5, rate)), rate)
    audio = core.utterance_audio()
    assert audio is not None
    assert len(audio) / rate == pytest.approx(0.7, abs=0.05)
    assert VADCore(keep_speech_audio=False).utterance_audio() is None


async def test_default_constructed_vad_works() -> None:
    vad = WebRTCVAD()
    assert vad.model == "webrtcvad" and vad.capabilities.update_interval == 0.01
    stream = vad.stream()
    for frame in _frames(concat(buzz(0.3, 16000), silence(0.8, 16000)), 16000, ms=20):
        stream.push_frame(frame)
    stream.end_input()
    kinds = [ev.type async for ev in stream if ev.type is not VADEventType.INFERENCE_DONE]
    await stream.aclose()
    assert kinds == [VADEventType.START_OF_SPEECH, VADEventType.END_OF_SPEECH]


async def test_stream_emits_livekit_events() -> None:
    rate = 48000
    vad = WebRTCVAD.load(prefix_padding_duration=0.2)
    stream = vad.stream()
    x = concat(silence(0.5, rate), buzz(1.0, rate), silence(1.0, rate))
    for frame in _frames(x, rate):
        stream.push_frame(frame)
    stream.end_input()
    events: list[VADEvent] = [ev async for ev in stream]
    await stream.aclose()

    kinds = [e.type for e in events if e.type is not VADEventType.INFERENCE_DONE]
    assert kinds == [VADEventType.START_OF_SPEECH, VADEventType.END_OF_SPEECH]
    start = next(e for e in events if e.type is VADEventType.START_OF_SPEECH)
    end = next(e for e in events if e.type is VADEventType.END_OF_SPEECH)
    assert start.speaking and not end.speaking
    assert start.timestamp - start.speech_duration == pytest.approx(0.5, abs=0.06)
    assert end.timestamp - end.silence_duration == pytest.approx(1.5, abs=0.25)
    speech_audio = sum(f.samples_per_channel for f in end.frames) / rate
    assert speech_audio == pytest.approx(end.timestamp - 0.5 + 0.2, abs=0.08)
    assert all(f.sample_rate == rate for f in end.frames)

    inference = [e for e in events if e.type is VADEventType.INFERENCE_DONE]
    assert len(inference) == len(_frames(x, rate))  # 10 ms frames: one inference each
    assert all(0.0 <= e.probability <= 1.0 for e in inference)
    assert any(e.speaking and e.raw_accumulated_speech > 0 for e in inference)
    assert inference[-1].raw_accumulated_silence > 0.4
    assert sum(f.samples_per_channel for e in inference for f in e.frames) == len(x)


async def test_flush_is_a_hard_boundary_and_options_reach_streams() -> None:
    rate = 16000
    vad = WebRTCVAD.load()
    stream = vad.stream()
    for frame in _frames(buzz(0.5, rate), rate):
        stream.push_frame(frame)
    async for ev in stream:
        if ev.type is VADEventType.START_OF_SPEECH:
            break
    stream.flush()
    vad.update_options(min_speech_duration=2.0)
    for frame in _frames(concat(buzz(0.5, rate), silence(1.0, rate)), rate):
        stream.push_frame(frame)
    stream.end_input()
    events = [ev async for ev in stream]
    await stream.aclose()
    # after the flush no END for the old utterance, and 0.5 s of speech is under 2.0 s
    assert [e.type for e in events if e.type is not VADEventType.INFERENCE_DONE] == []
    assert stream.core.timestamp == 0.0  # end_input flushes too
    assert max(e.timestamp for e in events) == pytest.approx(1.5)


def test_real_speech_segment_bounds(tmp_path: Path) -> None:
    wav = tmp_path / "speech.wav"
    subprocess.run(
        ["espeak-ng", "-w", str(wav), "Please call me back tomorrow morning."],
        check=True,
        capture_output=True,
    )
    speech = read_wav(wav)
    rate = speech.sample_rate
    voiced = np.nonzero(np.abs(speech.samples) > 0.01)[0]
    onset = 0.8 + voiced[0] / rate
    offset = 0.8 + voiced[-1] / rate
    x = concat(silence(0.8, rate), speech.samples, silence(1.2, rate))
    segments = detect_segments(Audio(x, rate))
    assert len(segments) == 1, segments
    start, end = segments[0]
    assert abs(start - onset) <= 0.08, (segments, onset)
    assert -0.08 <= end - offset <= 0.3, (segments, offset)


def test_noise_floor_is_learned_from_the_line_not_from_digital_silence() -> None:
    """A received stream opens with exact zeros before its first packet. Were the floor
    learned from those (-120 dB) it would need ~10 s to climb to the -50 dBFS line hum,
    and the gate would let the hum (or a codec's comfort noise) through as speech."""
    rate = 16000
    t = np.arange(2 * rate) / rate
    hum = (10 ** (-50 / 20) * np.sqrt(2) * np.sin(2 * np.pi * 150 * t)).astype(np.float32)
    core = VADCore(sample_rate=16000)
    for chunk in np.array_split(np.concatenate([np.zeros(rate, dtype=np.float32), hum]), 30):
        core.push(chunk, rate)
    assert core._floor_db is not None
    assert -56.0 < core._floor_db < -44.0
