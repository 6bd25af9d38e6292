"""Live transcription shared by the STT wire servers (Deepgram v1 and v2, Baseten,
AssemblyAI): audio in over a WebSocket, utterances cut by an energy segmenter on audio time
(not wall time, so results do not depend on how fast the caller pushes audio), each cut
transcribed by the offline STT engine in one worker task so results go out in order
without blocking the audio. An engine that decodes incrementally (pocketsphinx) keeps
pace with the speech (``LiveDecode``): each result feeds it only the audio since the last
one. For a batch engine (Moonshine), once the caller has been quiet for
``EARLY_QUIET_MS`` the utterance so far is decoded at once (a speculative interim): when
the segmenter then confirms the end, that text is the final's, which goes out without a
decode of its own. Either way a healthy final comes about ``silence_ms`` after the end of
speech, not that plus a decode of the whole utterance. A vendor module subclasses
``SegmentingSession`` for its messages and control frames, and ``SpeechServer`` for its
routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from aiohttp import WSMsgType, web

from pipelines.audio import Float32Array, int16_to_float
from pipelines.loopback.base import Knobs, RequestRecord, SpeechToText, WireServer, WsOutbox
from pipelines.loopback.segmenter import EnergySegmenter


def even_words(transcript: str, start: float, duration: float) -> list[tuple[str, float, float]]:
    """``(word, start, end)`` per word; the engine gives no word timings, so the words
    share the span evenly."""
    tokens = transcript.split()
    if not tokens:
        return []
    step = duration / len(tokens)
    return [(tok, start + i * step, start + (i + 1) * step) for i, tok in enumerate(tokens)]


def formatted(transcript: str, *, final: bool = True) -> str:
    """Capitalised, with a full stop on final results (what "punctuate" gives)."""
    text = " ".join(transcript.split())
    if not text:
        return text
    return text[0].upper() + text[1:] + ("." if final else "")


class SpeechServer(WireServer):
    """Base of the STT servers: the offline engine and the segmenter's settings."""

    def __init__(
        self,
        engine: SpeechToText | None = None,
        *,
        min_endpointing_ms: int = 300,
        interim_interval: float = 1.0,
        threshold_dbfs: float = -40.0,
        host: str = "127.0.0.1",
        port: int = 0,
        knobs: Knobs | None = None,
    ) -> None:
        """``min_endpointing_ms`` floors the silence a caller asks for before an utterance
        ends (plugins ask for as little as 25 ms, which an energy segmenter would fire
        between words); ``interim_interval`` is the audio time between interim results
        while someone speaks, unless the caller's protocol sets its own."""
        super().__init__(host=host, port=port, knobs=knobs)
        self._engine = engine
        self.min_endpointing_ms = min_endpointing_ms
        self.interim_interval = interim_interval
        self.threshold_dbfs = threshold_dbfs

    @property
    def engine(self) -> SpeechToText:
        if self._engine is None:
            from pipelines.engines import PocketsphinxEngine

            self._engine = PocketsphinxEngine()
        return self._engine

    def preload(self) -> None:
        """Loads the engine now (its first decoder, its model), not on the first session."""
        warm_up = getattr(self.engine, "warm_up", None)
        if callable(warm_up):
            warm_up()
        else:
            self.engine.transcribe(np.zeros(1600, dtype=np.float32), 16000)
        stream = getattr(self.engine, "stream", None)
        if callable(stream):
            stream(16000).close()  # a live decoder, back in the engine's pool

    async def transcribe(self, samples: Float32Array, sample_rate: int) -> str:
        if len(samples) == 0:
            return ""
        return (await asyncio.to_thread(self.engine.transcribe, samples, sample_rate)).strip()


class LiveDecode:
    """A session's decoder for an engine that decodes incrementally (``engine.stream``,
    pocketsphinx): each decode of the utterance in progress feeds it only the audio since
    the last one, an interim is the hypothesis so far and a final ends the utterance, so
    decoding keeps pace with the speech and a final costs its last stretch, not the
    whole utterance again. One lock orders the decodes and the close (a decode's thread
    may outlive the task that awaited it)."""

    def __init__(self, engine: Any, sample_rate: int) -> None:
        self._stream = engine.stream(sample_rate)
        self._segment: int | None = None
        self._fed = 0
        self._lock = threading.Lock()

    def decode(self, segment: int, samples: Float32Array, *, final: bool) -> str:
        """Text of utterance ``segment`` given all its audio so far (``samples`` grows
        from one call to the next)."""
        with self._lock:
            if segment != self._segment:
                self._stream.reset()
                self._segment, self._fed = segment, 0
            if len(samples) > self._fed:
                self._stream.push(samples[self._fed :])
                self._fed = len(samples)
            if not final:
                return str(self._stream.partial()).strip()
            self._segment = None
            return str(self._stream.finish()).strip()

    def close(self) -> None:
        with self._lock:
            self._stream.close()


@dataclass
class Job:
    """Work for the session's recognition task, in arrival order."""

    kind: Literal["interim", "final", "utterance_end", "close"]
    segment: int = 0
    samples: Float32Array | None = None
    start: float = 0.0
    """Seconds since the stream began (for ``utterance_end``: samples)."""
    from_finalize: bool = False
    """The caller's control message (finalize, close) ended the utterance."""
    speech_final: bool = False
    speech_samples: int = 0
    """Of a final: samples of the utterance up to its last loud frame."""
    speculative: bool = False
    """An interim decoded once the caller went quiet (run even if the utterance ended
    since: its text may serve as the final's)."""
    speculations: int = 0
    """Of a plain interim: speculative decodes queued before it (one queued after it
    covers more of the utterance: the plain one is stale)."""


class SegmentingSession:
    """One live-transcription WebSocket. Subclasses say what goes on the wire:
    ``results`` (per recognised interim or final), and optionally ``speech_started``,
    ``utterance_end``, ``closing`` and ``on_control``."""

    PREROLL_S = 0.2
    EARLY_QUIET_MS = 100

    def __init__(
        self,
        server: SpeechServer,
        outbox: WsOutbox,
        record: RequestRecord,
        *,
        sample_rate: int,
        channels: int = 1,
        silence_ms: int,
        interim_results: bool,
        interim_interval: float | None = None,
        utterance_end_ms: int | None = None,
        speech_final: bool = True,
    ) -> None:
        self.server = server
        self.outbox = outbox
        self.record = record
        self.sample_rate = sample_rate
        self.channels = max(1, channels)
        self.interim_results = interim_results
        self.interim_interval = (
            server.interim_interval if interim_interval is None else interim_interval
        )
        self.utterance_end_ms = utterance_end_ms
        self.speech_final = speech_final
        self.segmenter = EnergySegmenter(
            sample_rate,
            threshold_dbfs=server.threshold_dbfs,
            silence_ms=max(silence_ms, server.min_endpointing_ms),
        )
        self.request_id = str(uuid.uuid4())
        self.jobs: asyncio.Queue[Job] = asyncio.Queue()
        self.segment_id = 0
        self.segment_start = 0
        self.segment: list[Float32Array] = []
        self.preroll: deque[Float32Array] = deque()
        self.preroll_len = 0
        self.finalized: set[int] = set()
        self.ended: set[int] = set()
        """Utterances whose final is queued: their plain interims are stale."""
        self.decoded: dict[int, tuple[int, str]] = {}
        """Latest decode of an utterance in progress: samples it covered, its text."""
        self.speech_len = 0
        """Samples of the utterance in progress up to its last loud frame."""
        self.speculated: tuple[int, int] | None = None
        self.speculations = 0
        self.interim_pending = False
        """A plain interim is queued or being decoded (one at a time: a slow engine must
        not build a queue of them ahead of the final)."""
        self.last_interim_len = 0
        self.utterance_end_at: int | None = None
        self.pending_bytes = b""
        engine = server.engine
        self.live = LiveDecode(engine, sample_rate) if hasattr(engine, "stream") else None
        """The engine's incremental decoder, if it has one (else each decode is a batch
        decode of the utterance so far)."""

    # what the vendor sends

    def results(self, job: Job, transcript: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def speech_started(self, seconds: float) -> None:
        """Speech began at ``seconds`` of stream audio."""

    def utterance_end(self, last_word_end: float) -> None:
        """``utterance_end_ms`` of quiet followed the last utterance."""

    def closing(self) -> list[dict[str, Any]]:
        """Messages sent after the last results, before the server closes the socket."""
        return []

    def on_control(self, data: dict[str, Any]) -> str:
        """Handles a JSON control message; returns its kind for the request log. Call
        ``finalize()`` or ``close()`` from here."""
        return str(data.get("type", ""))

    # the receive loop

    async def run(self, ws: web.WebSocketResponse) -> None:
        worker = asyncio.create_task(self._recognize_loop(ws))
        dropped = asyncio.create_task(self.outbox.dropped.wait())
        try:
            while True:
                receive = asyncio.create_task(ws.receive())
                done, _ = await asyncio.wait(
                    {receive, dropped, worker}, return_when=asyncio.FIRST_COMPLETED
                )
                if receive not in done:
                    receive.cancel()
                    break
                msg = receive.result()
                if msg.type == WSMsgType.BINARY:
                    self.on_audio(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    self._on_text(msg.data)
                else:
                    break
        finally:
            dropped.cancel()
            if not worker.done():
                worker.cancel()
            with contextlib.suppress(BaseException):
                await worker
            if self.live is not None:
                await asyncio.to_thread(self.live.close)

    def _on_text(self, text: str) -> None:
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        kind = self.on_control(data) if isinstance(data, dict) else "invalid"
        self.record.control.append(kind)

    def finalize(self) -> None:
        """Ends the utterance in progress now (its final result says so)."""
        self._end_segment(self.segmenter.position, speech_final=False, from_finalize=True)
        self.segmenter.interrupt()

    def close(self) -> None:
        """Finalizes, then sends ``closing()`` and closes the socket once the results are
        out (the receive loop keeps reading until then)."""
        self._end_segment(self.segmenter.position, speech_final=False, from_finalize=True)
        self.jobs.put_nowait(Job("close"))

    def on_audio(self, data: bytes) -> None:
        self.record.audio_bytes += len(data)
        data = self.pending_bytes + data
        usable = len(data) // (2 * self.channels) * (2 * self.channels)
        self.pending_bytes = data[usable:]
        pcm = np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)
        samples = int16_to_float(pcm)
        if self.channels > 1:
            samples = samples.reshape(-1, self.channels).mean(axis=1).astype(np.float32)
        chunk_start = self.segmenter.position
        events = self.segmenter.push(samples)
        cursor = 0
        for event in events:
            offset = max(0, min(len(samples), event.sample - chunk_start))
            self._take(samples[cursor:offset])
            cursor = offset
            if event.kind == "start":
                self._begin_segment(event.sample, chunk_start + cursor)
            else:
                self._end_segment(event.sample, speech_final=self.speech_final)
        self._take(samples[cursor:])
        self._maybe_speculate()
        if (
            self.utterance_end_at is not None
            and not self.segmenter.in_speech
            and self.segmenter.position >= self.utterance_end_at
        ):
            self.utterance_end_at = None
            self.jobs.put_nowait(Job("utterance_end", start=self.segmenter.position))
        self._maybe_interim()

    def _take(self, samples: Float32Array) -> None:
        if len(samples) == 0:
            return
        if self.segmenter.in_speech or self.segment:
            self.segment.append(samples)
            return
        self.preroll.append(samples)
        self.preroll_len += len(samples)
        limit = int(self.PREROLL_S * self.sample_rate)
        while self.preroll and self.preroll_len - len(self.preroll[0]) >= limit:
            self.preroll_len -= len(self.preroll.popleft())

    def _begin_segment(self, sample: int, position: int) -> None:
        self.segment_id += 1
        self.segment = list(self.preroll)
        self.segment_start = position - self.preroll_len
        self.preroll.clear()
        self.preroll_len = 0
        self.last_interim_len = 0
        self.speech_len = 0
        self.utterance_end_at = None
        self.speech_started(round(sample / self.sample_rate, 3))

    def _end_segment(self, sample: int, *, speech_final: bool, from_finalize: bool = False) -> None:
        if not self.segment:
            return
        samples = np.concatenate(self.segment)
        self.segment = []
        self.ended.add(self.segment_id)
        self.jobs.put_nowait(
            Job(
                "final",
                segment=self.segment_id,
                samples=samples,
                start=self.segment_start / self.sample_rate,
                speech_final=speech_final,
                from_finalize=from_finalize,
                speech_samples=self.speech_len,
            )
        )
        if self.utterance_end_ms is not None:
            self.utterance_end_at = sample + self.utterance_end_ms * self.sample_rate // 1000

    def _maybe_speculate(self) -> None:
        """Notes where the utterance's speech ends so far; once the caller has been quiet
        for ``EARLY_QUIET_MS`` after it, decodes the utterance so far (once per extent)."""
        if not (self.segment and self.segmenter.in_speech):
            return
        quiet = self.segmenter.quiet_samples
        self.speech_len = max(0, self.segmenter.loud_end - self.segment_start)
        key = (self.segment_id, self.speech_len)
        if quiet < self.EARLY_QUIET_MS * self.sample_rate // 1000 or self.speculated == key:
            return
        self.speculated = key
        self.speculations += 1
        self._queue_interim(speculative=True)

    def _maybe_interim(self) -> None:
        if not (self.interim_results and self.segment and self.segmenter.in_speech):
            return
        if self.segmenter.quiet_samples >= self.EARLY_QUIET_MS * self.sample_rate // 1000:
            return  # the caller may have stopped: the speculative decode goes first
        length = sum(len(s) for s in self.segment)
        if self.interim_pending or length - self.last_interim_len < (
            self.interim_interval * self.sample_rate
        ):
            return
        self.last_interim_len = length
        self.interim_pending = True
        self._queue_interim(speculations=self.speculations)

    def _queue_interim(self, *, speculative: bool = False, speculations: int = 0) -> None:
        """Queues a decode of the utterance so far."""
        self.jobs.put_nowait(
            Job(
                "interim",
                segment=self.segment_id,
                samples=np.concatenate(self.segment),
                start=self.segment_start / self.sample_rate,
                speculative=speculative,
                speculations=speculations,
            )
        )

    # the send side

    def seconds(self, job: Job) -> float:
        """Audio seconds of a job's utterance."""
        return 0.0 if job.samples is None else len(job.samples) / self.sample_rate

    async def _recognize_loop(self, ws: web.WebSocketResponse) -> None:
        while True:
            job = await self.jobs.get()
            if job.kind == "close":
                for message in self.closing():
                    self.outbox.send(message)
                await self.outbox.drain()
                await ws.close()
                return
            if job.kind == "utterance_end":
                self.utterance_end(round(job.start / self.sample_rate, 3))
                continue
            plain = job.kind == "interim" and not job.speculative
            if job.kind == "interim" and (
                job.segment in self.finalized
                or (plain and (job.segment in self.ended or self.speculations > job.speculations))
            ):
                self.interim_pending = self.interim_pending and not plain
                continue
            assert job.samples is not None
            cached = self.decoded.pop(job.segment, None) if job.kind == "final" else None
            if self.live is not None:
                final = job.kind == "final"
                transcript = await asyncio.to_thread(
                    self.live.decode, job.segment, job.samples, final=final
                )
            elif cached is not None and 0 < job.speech_samples <= cached[0]:
                transcript = cached[1]  # decoded after the speech ended: the same words
            else:
                transcript = await self.server.transcribe(job.samples, self.sample_rate)
            self.interim_pending = self.interim_pending and not plain
            if job.kind == "interim":
                if job.segment in self.finalized:
                    continue
                self.decoded[job.segment] = (len(job.samples), transcript)
                if job.speculative and not self.interim_results:
                    continue
            if job.kind == "final":
                self.finalized.add(job.segment)
            for message in self.results(job, transcript):
                self.outbox.send(message)
