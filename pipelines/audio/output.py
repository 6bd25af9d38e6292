"""The agent's audio output chain: time-stretch on top, noise bed at the tail.

After ``AgentSession.start(room=...)`` the session's audio output is

    RecorderAudioOutput -> TranscriptSynchronizer -> _AudioSinkProxy -> RoomIO track

``install_output_chain`` turns it into

    StretchOutput -> RecorderAudioOutput -> TranscriptSynchronizer -> _AudioSinkProxy
        -> NoiseBedOutput -> RoomIO track

so the recorder and the transcript synchronizer see (and pace text by) the stretched
speech, and the bed is mixed into the agent's own published track: a phone leg, a room
egress and any subscriber hear one mix, not two tracks. The mixer owns the track's clock:
it keeps ~100 ms queued in the track's ``rtc.AudioSource``, bed only while the agent is
silent, speech over the bed while it talks, and reports playback of each speech segment
itself. When speech starts (or is interrupted) the queued bed-only (or speech) frames are
dropped from the source, so the queue costs the reply no latency.

Unlike LiveKit's ``BackgroundAudioPlayer`` (a second track), nothing here publishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc
from livekit.agents.voice import io

from pipelines.audio.noise import NoiseBed, mix
from pipelines.audio.pcm import Float32Array, float_to_int16, int16_to_float, resample
from pipelines.audio.stretch import TimeStretcher
from pipelines.audio.tap import Tap

logger = logging.getLogger(__name__)

DEFAULT_SAMPLE_RATE = 24000
"""RoomIO's default output rate, used when the sink accepts any rate."""


def _frame_samples(frame: rtc.AudioFrame) -> Float32Array:
    pcm = np.frombuffer(frame.data, dtype=np.int16)
    if frame.num_channels > 1:
        pcm = pcm.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
    return int16_to_float(pcm)


def _make_frame(samples: Float32Array, sample_rate: int) -> rtc.AudioFrame:
    return rtc.AudioFrame(float_to_int16(samples).tobytes(), sample_rate, 1, len(samples))


class StretchOutput(io.AudioOutput):
    """Time-stretches each speech segment before passing it on.

    ``flush`` (segment end) emits the stretcher's tail before flushing downstream;
    ``clear_buffer`` (interruption) drops everything it holds. Playback positions coming
    back up are in stretched time and are reported in the caller's (unstretched) time.
    """

    def __init__(self, next_in_chain: io.AudioOutput, *, playback_rate: float) -> None:
        super().__init__(
            label="TimeStretch",
            capabilities=io.AudioOutputCapabilities(pause=True),
            next_in_chain=next_in_chain,
            sample_rate=next_in_chain.sample_rate,
        )
        self.playback_rate = playback_rate
        self._stretcher: TimeStretcher | None = None
        self._tail_task: asyncio.Task[None] | None = None
        self._forwarded = False

    @property
    def _next(self) -> io.AudioOutput:
        assert self._next_in_chain is not None
        return self._next_in_chain

    def _stretcher_for(self, sample_rate: int) -> TimeStretcher:
        if self._stretcher is None or self._stretcher.sample_rate != sample_rate:
            self._stretcher = TimeStretcher(self.playback_rate, sample_rate)
        return self._stretcher

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        if self._tail_task is not None:
            await asyncio.shield(self._tail_task)
        await super().capture_frame(frame)
        stretcher = self._stretcher_for(frame.sample_rate)
        out = stretcher.process(_frame_samples(frame))
        if len(out):
            self._forwarded = True
            await self._next.capture_frame(_make_frame(out, frame.sample_rate))

    def flush(self) -> None:
        super().flush()
        tail = self._stretcher.flush() if self._stretcher is not None else np.zeros(0)
        if len(tail) and self._stretcher is not None:
            frame = _make_frame(tail.astype(np.float32), self._stretcher.sample_rate)
            self._tail_task = asyncio.create_task(self._push_tail(frame))
            return
        self._end_segment(interrupted=False)

    async def _push_tail(self, frame: rtc.AudioFrame) -> None:
        # a cancellation comes from clear_buffer, which ends the segment itself
        self._forwarded = True
        await self._next.capture_frame(frame)
        self._tail_task = None
        self._end_segment(interrupted=False)

    def _end_segment(self, *, interrupted: bool) -> None:
        if self._forwarded:
            self._next.flush()
        elif self._pending_playback_count > 0:
            # nothing reached the sink, so no sink will report this segment
            self.on_playback_finished(playback_position=0.0, interrupted=interrupted)
        self._forwarded = False

    def clear_buffer(self) -> None:
        if self._stretcher is not None:
            self._stretcher.reset()
        task, self._tail_task = self._tail_task, None
        if task is not None and not task.done():
            task.cancel()
            forwarded = self._forwarded
            self._end_segment(interrupted=True)
            if not forwarded:
                return
        self._next.clear_buffer()

    def _forward_next_playback_finished(self, ev: io.PlaybackFinishedEvent) -> None:
        self.on_playback_finished(
            playback_position=ev.playback_position * self.playback_rate,
            interrupted=ev.interrupted,
            synchronized_transcript=ev.synchronized_transcript,
        )

    def _forward_next_playback_progressed(self, ev: io.PlaybackProgressedEvent) -> None:
        self.on_playback_progressed(
            started_at=ev.started_at,
            offset=ev.offset * self.playback_rate,
            duration=ev.duration * self.playback_rate,
        )


@dataclass
class _Segment:
    chunks: deque[Float32Array] = field(default_factory=deque)
    flushed: bool = False
    dropped: bool = False
    """Cleared while still being captured: the rest of its audio is thrown away."""
    played: int = 0
    started: bool = False


class _TrackWriter:
    """Where the mixer's frames go, and how much of what it wrote has not played yet.

    The portable form writes through the sink's ``capture_frame`` and keeps its own account
    of the queue; it cannot take back what it wrote.
    """

    def __init__(self, sink: io.AudioOutput) -> None:
        self._sink = sink
        self._until = 0.0

    async def ready(self) -> None:
        return

    def queued(self) -> float:
        return max(self._until - time.monotonic(), 0.0)

    def drop_queued(self) -> bool:
        """Discards the queued, unplayed frames; False when this writer cannot."""
        return False

    async def write(self, frame: rtc.AudioFrame) -> None:
        await self._sink.capture_frame(frame)
        self._until = max(self._until, time.monotonic()) + frame.duration


class _SourceWriter(_TrackWriter):
    """Writes straight into the ``rtc.AudioSource`` of LiveKit's RoomIO sink.

    The sink's own path re-chunks into 50 ms frames and queues them behind a forwarding
    task; the mixer already paces real time, so it skips both, and it can drop queued bed
    when speech starts (``AudioSource.clear_queue``). The sink still publishes the track;
    writing waits for the first subscriber, as the sink's ``capture_frame`` does.
    """

    def __init__(self, sink: io.AudioOutput, source: rtc.AudioSource) -> None:
        super().__init__(sink)
        self._source = source

    async def ready(self) -> None:
        subscribed = getattr(self._sink, "subscribed", None)
        if isinstance(subscribed, asyncio.Future):
            await asyncio.shield(subscribed)

    def queued(self) -> float:
        return self._source.queued_duration

    def drop_queued(self) -> bool:
        self._source.clear_queue()
        return True

    async def write(self, frame: rtc.AudioFrame) -> None:
        await self._source.capture_frame(frame)


def track_writer(sink: io.AudioOutput) -> _TrackWriter:
    """A ``_SourceWriter`` for LiveKit's RoomIO sink (its ``_audio_source``, livekit-agents
    1.8), the portable writer for any other sink."""
    source = getattr(sink, "_audio_source", None)
    if isinstance(source, rtc.AudioSource):
        return _SourceWriter(sink, source)
    return _TrackWriter(sink)


class NoiseBedOutput(io.AudioOutput):
    """Keeps the agent's track continuous and mixes a noise bed under its speech.

    Sits directly above the sink that publishes the track. A real-time loop keeps about
    ``lead_ms`` of ``tick_ms`` frames queued in the track (50 ms frames: each frame is an FFI
    call, and 20 ms frames cost a call ~3 % of a core more): the bed alone while no speech is
    queued, speech plus bed otherwise. The first frame of a speech segment does not wait
    behind the queued bed: the queue is dropped and speech is mixed from the next frame on
    (likewise an interruption drops queued speech). The sink sees one endless stream, so
    this stage reports ``playback_started``/``playback_finished`` for each speech segment
    itself, from the samples it has sent. ``pause`` holds speech while the bed keeps playing.
    Without a preset (or at volume 0) the bed is silence: the call recording still needs
    the track's clock. ``tap`` is shown every frame written, with the loop time it plays.
    """

    def __init__(
        self,
        sink: io.AudioOutput,
        *,
        noise_preset: str | None,
        noise_volume: float | None,
        sample_rate: int | None = None,
        tick_ms: int = 50,
        lead_ms: int = 100,
        tap: Tap | None = None,
    ) -> None:
        rate = sink.sample_rate or sample_rate or DEFAULT_SAMPLE_RATE
        super().__init__(
            label="NoiseBed",
            capabilities=io.AudioOutputCapabilities(pause=True),
            next_in_chain=sink,
            sample_rate=rate,
        )
        self.bed = (
            NoiseBed(noise_preset, noise_volume, rate) if noise_preset and noise_volume else None
        )
        self.tap = tap
        self._rate = rate
        self._tick = tick_ms / 1000.0
        self._tick_samples = rate * tick_ms // 1000
        self._lead = lead_ms / 1000.0
        self._writer = track_writer(sink)
        self._segments: deque[_Segment] = deque()
        self._capturing: _Segment | None = None
        self._paused = False
        self._pending_finish: list[tuple[asyncio.TimerHandle, _Segment, float]] = []
        self._speech_until = 0.0
        """Loop time at which the last speech sample written so far plays."""
        self._wakeup: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.frames_sent = 0
        self.frames_dropped = 0
        """Queued frames taken back from the track (speech start, interruption)."""

    @property
    def _next(self) -> io.AudioOutput:
        assert self._next_in_chain is not None
        return self._next_in_chain

    # the sink sees one endless segment; its events say nothing about speech segments
    def _dispatch_playback_finished(self, ev: io.PlaybackFinishedEvent) -> None:
        return

    def _forward_next_playback_started(self, ev: io.PlaybackStartedEvent) -> None:
        return

    def _forward_next_playback_progressed(self, ev: io.PlaybackProgressedEvent) -> None:
        return

    def on_attached(self) -> None:
        super().on_attached()
        self.start()

    def on_detached(self) -> None:
        super().on_detached()
        self.stop()

    def start(self) -> None:
        """Starts the clock (done on attach); needs a running event loop."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="noise_bed")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        if self._capturing is None:
            self._capturing = _Segment()
            self._segments.append(self._capturing)
            if not self._paused and not any(seg.started for seg in self._segments):
                # only bed is queued ahead of this speech: take it back, mix speech now
                self._drop_queued(speech=False)
        if self._capturing.dropped:
            return
        samples = _frame_samples(frame)
        if frame.sample_rate != self._rate:
            samples = resample(samples, frame.sample_rate, self._rate)
        self._capturing.chunks.append(samples)

    def flush(self) -> None:
        super().flush()
        seg, self._capturing = self._capturing, None
        if seg is None:
            return
        seg.flushed = True
        if seg.dropped or (not seg.chunks and not seg.played):
            self._finish_now(seg, interrupted=seg.dropped)

    def clear_buffer(self) -> None:
        unplayed = self._drop_queued(speech=True)
        self._fire_pending(unplayed)
        for seg in list(self._segments):
            seg.chunks.clear()
            if seg.started:
                seg.played = max(seg.played - round(unplayed * self._rate), 0)
            if seg.flushed:
                self._finish_now(seg, interrupted=True)
            else:
                seg.dropped = True

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def _drop_queued(self, *, speech: bool) -> float:
        """Drops the track's queued frames if they hold speech (``speech``) or only bed
        (not ``speech``) and the writer can; returns the seconds of speech dropped."""
        now = asyncio.get_running_loop().time()
        unplayed = max(self._speech_until - now, 0.0)
        if (unplayed > 0.0) != speech:
            return 0.0
        queued = self._writer.queued()
        if queued <= 0.0 or not self._writer.drop_queued():
            return 0.0
        self.frames_dropped += round(queued / self._tick)
        self._speech_until = min(self._speech_until, now)
        self._wake()
        return unplayed

    def _finish_now(self, seg: _Segment, *, interrupted: bool) -> None:
        if seg in self._segments:
            self._segments.remove(seg)
        self.on_playback_finished(
            playback_position=seg.played / self._rate, interrupted=interrupted
        )

    def _fire_pending(self, unplayed: float = 0.0) -> None:
        """Reports the segments whose last samples are queued; ``unplayed`` seconds of the
        queue were just dropped, cutting their ends."""
        pending, self._pending_finish = self._pending_finish, []
        if not pending:
            return
        now = asyncio.get_running_loop().time()
        for handle, seg, when in pending:
            handle.cancel()
            cut = min(max(when - now, 0.0), unplayed)
            self.on_playback_finished(
                playback_position=max(seg.played / self._rate - cut, 0.0), interrupted=cut > 0
            )

    def _on_timer(self, seg: _Segment) -> None:
        self._pending_finish = [p for p in self._pending_finish if p[1] is not seg]
        self.on_playback_finished(playback_position=seg.played / self._rate, interrupted=False)

    def render(self, n: int, *, play_at: float | None = None) -> Float32Array:
        """The next ``n`` samples of the track; ``play_at`` is when they play (loop time)."""
        speech = np.zeros(n, dtype=np.float32)
        filled = 0
        while not self._paused and filled < n and self._segments:
            seg = self._segments[0]
            if seg.chunks:
                if not seg.started:
                    seg.started = True
                    self.on_playback_started(created_at=self._wall(play_at, filled))
                chunk = seg.chunks[0]
                take = min(n - filled, len(chunk))
                speech[filled : filled + take] = chunk[:take]
                if take == len(chunk):
                    seg.chunks.popleft()
                else:
                    seg.chunks[0] = chunk[take:]
                filled += take
                seg.played += take
            elif seg.flushed:
                self._segments.popleft()
                self._schedule_finish(seg, play_at, filled)
            else:
                break  # waiting for more of this segment
        if filled and play_at is not None:
            self._speech_until = play_at + filled / self._rate
        return mix(speech, self.bed.next(n)) if self.bed is not None else speech

    def _wall(self, play_at: float | None, offset: int) -> float:
        if play_at is None:
            return time.time()
        delay = play_at - asyncio.get_running_loop().time() + offset / self._rate
        return time.time() + max(delay, 0.0)

    def _schedule_finish(self, seg: _Segment, play_at: float | None, offset: int) -> None:
        if play_at is None:
            self.on_playback_finished(playback_position=seg.played / self._rate, interrupted=False)
            return
        loop = asyncio.get_running_loop()
        when = play_at + offset / self._rate
        handle = loop.call_at(when, self._on_timer, seg)
        self._pending_finish.append((handle, seg, when))

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _run(self) -> None:
        await self._writer.ready()
        loop = asyncio.get_running_loop()
        n = self._tick_samples
        while True:
            while (queued := self._writer.queued()) < self._lead:
                play_at = loop.time() + queued
                frame = _make_frame(self.render(n, play_at=play_at), self._rate)
                if self.tap is not None:
                    self.tap(frame, play_at)
                await self._writer.write(frame)
                self.frames_sent += 1
            # sleep until about one tick is left above the lead, or until speech starts
            self._wakeup = loop.create_future()
            timer = loop.call_later(queued - self._lead + self._tick, self._wake)
            try:
                await self._wakeup
            finally:
                timer.cancel()
                self._wakeup = None


def install_output_chain(
    output: io.AgentOutput,
    *,
    playback_rate: float | None,
    noise_preset: str | None,
    noise_volume: float | None,
    sample_rate: int | None = None,
    tap: Tap | None = None,
) -> bool:
    """Inserts the stretch and bed stages into a started session's audio output.

    Call with ``session.output`` after ``await session.start(agent, room=...)`` (RoomIO
    has then set the audio output) and before the agent first speaks: at the top of
    ``Agent.on_enter``, or right after ``start`` when the first message is said after it.
    ``playback_rate`` None means no stretch (``stretch.stretch_rate`` decides that), a
    missing preset or a volume of 0 no bed. ``tap`` (the call recording) is shown what the
    track plays; it needs the mixer, so the mixer goes in with a silent bed if need be.
    Idempotent; returns False when there is nothing to do or no audio output.
    """
    if output.audio is None:
        return False
    bed = (bool(noise_preset) and bool(noise_volume)) or tap is not None
    stretch = playback_rate is not None
    chain: list[io.AudioOutput] = []
    cur: io.AudioOutput | None = output.audio
    while cur is not None:
        chain.append(cur)
        cur = cur.next_in_chain
    if any(isinstance(stage, StretchOutput | NoiseBedOutput) for stage in chain):
        return False
    if bed:
        mixer = NoiseBedOutput(
            chain[-1],
            noise_preset=noise_preset,
            noise_volume=noise_volume,
            sample_rate=sample_rate,
            tap=tap,
        )
        # swaps the leaf under LiveKit's sink proxy, keeping the wrappers above in place
        output.replace_audio_tail(mixer)
    if stretch:
        assert playback_rate is not None and output.audio is not None
        output.audio = StretchOutput(output.audio, playback_rate=playback_rate)
    return bed or stretch
