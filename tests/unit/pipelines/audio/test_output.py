"""Output chain: stretch stage, noise-bed stage, and their installation in a session output."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from livekit import rtc
from livekit.agents.voice import io

from pipelines.audio import (
    BED_DBFS_AT_FULL_VOLUME,
    Float32Array,
    NoiseBedOutput,
    StretchOutput,
    float_to_int16,
    install_output_chain,
    rms_dbfs,
)
from tests.fakes import FakeSink, PassThrough, PausingSink

SR = 24000
FRAME = SR // 100


def tone(seconds: float, freq: float = 200.0) -> Float32Array:
    t = np.arange(int(seconds * SR)) / SR
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def frames(samples: Float32Array) -> list[rtc.AudioFrame]:
    pcm = float_to_int16(samples)
    return [
        rtc.AudioFrame(pcm[i : i + FRAME].tobytes(), SR, 1, len(pcm[i : i + FRAME]))
        for i in range(0, len(pcm), FRAME)
    ]


async def speak(out: io.AudioOutput, samples: Float32Array) -> None:
    for f in frames(samples):
        await out.capture_frame(f)
    out.flush()


async def test_stretch_stage_shortens_speech_and_reports_unstretched_position() -> None:
    sink = FakeSink()
    stage = StretchOutput(sink, playback_rate=2.0)
    await speak(stage, tone(1.0))
    ev = await asyncio.wait_for(stage.wait_for_playout(), 1.0)
    assert len(sink.samples) == SR // 2
    assert abs(ev.playback_position - 1.0) < 1e-6 and not ev.interrupted
    # the next segment starts clean and is stretched too
    await speak(stage, tone(0.4))
    ev = await asyncio.wait_for(stage.wait_for_playout(), 1.0)
    assert len(sink.samples) == SR // 2 + int(0.2 * SR)
    assert abs(ev.playback_position - 0.4) < 1e-6


async def test_stretch_stage_clear_drops_pending_audio() -> None:
    sink = FakeSink()
    stage = StretchOutput(sink, playback_rate=0.5)
    for f in frames(tone(0.2)):
        await stage.capture_frame(f)
    before = len(sink.samples)
    stage.clear_buffer()
    stage.flush()
    ev = await asyncio.wait_for(stage.wait_for_playout(), 1.0)
    assert ev.interrupted and sink.cleared == 1
    # nothing held back by the stretcher came out after the interruption
    assert len(sink.samples) == before < int(0.4 * SR)
    await speak(stage, tone(0.1))
    ev = await asyncio.wait_for(stage.wait_for_playout(), 1.0)
    assert not ev.interrupted and abs(ev.playback_position - 0.1) < 1e-6


async def test_stretch_stage_segment_shorter_than_a_frame() -> None:
    sink = FakeSink()
    stage = StretchOutput(sink, playback_rate=1.5)
    await speak(stage, tone(0.01))
    ev = await asyncio.wait_for(stage.wait_for_playout(), 1.0)
    assert len(sink.samples) == round(0.01 * SR / 1.5)
    assert abs(ev.playback_position - 0.01) < 1e-3


async def test_bed_plays_during_silence_and_speech_mixes_over_it() -> None:
    sink = FakeSink()
    mixer = NoiseBedOutput(sink, noise_preset="city", noise_volume=0.5, tick_ms=10, lead_ms=20)
    mixer.on_attached()
    try:
        await asyncio.sleep(0.3)
        silent = sink.samples
        # paced in real time: about 0.3 s (+ lead) of frames, not a burst
        assert 0.25 * SR <= len(silent) <= 0.4 * SR
        assert rms_dbfs(silent) > BED_DBFS_AT_FULL_VOLUME - 6.0 - 6.0
        speech = tone(0.2, 440.0)
        await speak(mixer, speech)
        ev = await asyncio.wait_for(mixer.wait_for_playout(), 1.0)
        assert not ev.interrupted and abs(ev.playback_position - 0.2) < 1e-6
        out = sink.samples[len(silent) :]
        # the tone is in the track: strong correlation at 440 Hz
        n = len(speech)
        ref = np.exp(-2j * np.pi * 440.0 * np.arange(n) / SR)
        best = max(abs(np.dot(out[i : i + n], ref)) for i in range(0, len(out) - n, FRAME))
        assert best > 0.4 * abs(np.dot(speech, ref))
        # and the bed never stopped: the track has no silent frame
        blocks = sink.samples[: len(sink.samples) // FRAME * FRAME].reshape(-1, FRAME)
        assert np.abs(blocks).max(axis=1).min() > 0.0
    finally:
        await mixer.aclose()


async def test_bed_clear_buffer_interrupts_speech() -> None:
    sink = FakeSink()
    mixer = NoiseBedOutput(sink, noise_preset="office", noise_volume=0.2, tick_ms=10, lead_ms=20)
    mixer.on_attached()
    try:
        await speak(mixer, tone(2.0))
        await asyncio.sleep(0.15)
        mixer.clear_buffer()
        ev = await asyncio.wait_for(mixer.wait_for_playout(), 1.0)
        assert ev.interrupted and 0.05 < ev.playback_position < 0.5
        mark = len(sink.samples)
        await asyncio.sleep(0.15)
        after = sink.samples[mark:]
        # only the bed (office at 0.2 is ~ -34 dBFS) follows, not the 0.5-amplitude tone
        assert len(after) > 0 and rms_dbfs(after) < -25.0
        assert sink.cleared == 0  # the track itself keeps running
    finally:
        await mixer.aclose()


class SourceSink(io.AudioOutput):
    """Shaped like LiveKit's RoomIO sink: a real ``rtc.AudioSource`` (which plays out in
    real time on its own) and a ``subscribed`` future; its ``capture_frame`` must not be
    used by the mixer."""

    def __init__(self) -> None:
        super().__init__(
            label="SourceSink", capabilities=io.AudioOutputCapabilities(pause=True), sample_rate=SR
        )
        self._audio_source = rtc.AudioSource(SR, 1, queue_size_ms=200)
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.subscribed.set_result(None)
        self.sink_frames = 0

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        self.sink_frames += 1

    def flush(self) -> None:
        raise AssertionError("the mixer never ends the track's one segment")

    def clear_buffer(self) -> None:
        raise AssertionError("the mixer drops queued frames in the source itself")


async def test_bed_writes_to_the_track_source_and_drops_queued_bed_for_speech() -> None:
    sink = SourceSink()
    mixer = NoiseBedOutput(sink, noise_preset="office", noise_volume=0.3)
    started: list[float] = []
    mixer.on("playback_started", lambda ev: started.append(ev.created_at))
    mixer.on_attached()
    try:
        await asyncio.sleep(0.3)
        # the bed keeps a lead (100 ms, refilled at 50 ms) queued in the source itself
        assert sink._audio_source.queued_duration >= 0.04
        assert mixer.frames_sent * 0.05 >= 0.3 and sink.sink_frames == 0
        captured_at = time.time()
        await speak(mixer, tone(0.2))
        ev = await asyncio.wait_for(mixer.wait_for_playout(), 2.0)
        assert not ev.interrupted and abs(ev.playback_position - 0.2) < 1e-6
        # speech did not wait behind the queued bed: it was dropped, not played first
        assert mixer.frames_dropped >= 1
        assert started and started[0] - captured_at < 0.03
    finally:
        await mixer.aclose()
        await sink._audio_source.aclose()


async def test_bed_interruption_drops_queued_speech_and_reports_what_played() -> None:
    sink = SourceSink()
    mixer = NoiseBedOutput(sink, noise_preset="office", noise_volume=0.3)
    mixer.on_attached()
    try:
        await asyncio.sleep(0.1)
        await speak(mixer, tone(2.0))
        t0 = time.monotonic()
        await asyncio.sleep(0.3)
        dropped = mixer.frames_dropped
        mixer.clear_buffer()
        elapsed = time.monotonic() - t0
        ev = await asyncio.wait_for(mixer.wait_for_playout(), 1.0)
        assert ev.interrupted
        assert mixer.frames_dropped > dropped  # the queued speech left the track
        # the position is what played, not what was written ahead of the clock
        assert elapsed - 0.05 <= ev.playback_position <= elapsed + 0.01
    finally:
        await mixer.aclose()
        await sink._audio_source.aclose()


async def test_install_inserts_stages_around_wrappers() -> None:
    output = io.AgentOutput(lambda: None, lambda: None, lambda: None)
    sink = FakeSink()
    output.audio = PassThrough(sink)
    assert install_output_chain(output, playback_rate=1.5, noise_preset="cafe", noise_volume=0.3)
    chain: list[io.AudioOutput] = []
    cur: io.AudioOutput | None = output.audio
    while cur is not None:
        chain.append(cur)
        cur = cur.next_in_chain
    labels = [type(stage).__name__ for stage in chain]
    assert labels[0] == "StretchOutput" and labels[1] == "PassThrough"
    assert labels.index("NoiseBedOutput") > 1 and chain[-1] is sink
    mixer = next(s for s in chain if isinstance(s, NoiseBedOutput))
    try:
        assert not install_output_chain(
            output, playback_rate=1.5, noise_preset="cafe", noise_volume=0.3
        )
        await speak(output.audio, tone(0.3))
        ev = await asyncio.wait_for(output.audio.wait_for_playout(), 2.0)
        assert abs(ev.playback_position - 0.3) < 0.01 and not ev.interrupted
    finally:
        output.audio = None
        await mixer.aclose()


async def test_nothing_to_do_is_a_pass_through() -> None:
    sink = FakeSink()
    output = io.AgentOutput(lambda: None, lambda: None, lambda: None)
    output.audio = sink
    assert not install_output_chain(
        output, playback_rate=None, noise_preset="office", noise_volume=None
    )
    assert not install_output_chain(output, playback_rate=None, noise_preset="", noise_volume=0.5)
    assert not install_output_chain(
        output, playback_rate=None, noise_preset="office", noise_volume=0.0
    )
    assert output.audio is sink


async def test_stretch_stage_segment_captured_while_paused_plays_on_resume() -> None:
    # LiveKit pauses the output when a say() starts while the caller still counts as speaking
    sink = PausingSink()
    stage = StretchOutput(PassThrough(sink), playback_rate=1.25)
    started: list[io.PlaybackStartedEvent] = []
    stage.on("playback_started", started.append)
    stage.pause()
    await speak(stage, tone(0.5))
    playout = asyncio.ensure_future(stage.wait_for_playout())
    await asyncio.sleep(0.01)
    assert sink.paused and sink.held > 0 and not started and not playout.done()
    stage.resume()
    ev = await asyncio.wait_for(playout, 1.0)
    assert [e.created_at for e in started] == [1.0]
    assert abs(ev.playback_position - 0.5) < 1e-3 and not ev.interrupted
    assert stage._pending_playback_count == 0


async def test_stretch_stage_paused_segment_cleared_unplayed_then_next_plays() -> None:
    # the caller's final transcript interrupts the paused say() before any of it played
    sink = PausingSink()
    stage = StretchOutput(PassThrough(sink), playback_rate=1.25)
    stage.pause()
    await speak(stage, tone(0.5))
    stage.clear_buffer()
    ev = await asyncio.wait_for(stage.wait_for_playout(), 1.0)
    assert ev.interrupted and ev.playback_position == 0.0
    assert stage._pending_playback_count == 0 and sink.held == 0.0
    stage.resume()
    await speak(stage, tone(0.3))
    ev = await asyncio.wait_for(stage.wait_for_playout(), 1.0)
    assert abs(ev.playback_position - 0.3) < 1e-3 and not ev.interrupted


async def test_livekit_roomio_sink_gets_the_source_writer() -> None:
    """The mixer's direct path depends on RoomIO's sink keeping its ``rtc.AudioSource`` in
    ``_audio_source`` (livekit-agents 1.8): an upgrade that moves it fails here, loudly,
    instead of silently falling back to the slower portable writer."""
    from livekit.agents.voice.room_io._output import _ParticipantAudioOutput

    from pipelines.audio import track_writer
    from pipelines.audio.output import _SourceWriter

    sink = _ParticipantAudioOutput(
        rtc.Room(), sample_rate=SR, num_channels=1, track_publish_options=rtc.TrackPublishOptions()
    )
    assert isinstance(track_writer(sink), _SourceWriter)
    assert not isinstance(track_writer(FakeSink()), _SourceWriter)
