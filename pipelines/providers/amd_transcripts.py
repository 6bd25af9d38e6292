"""The answering machine detector's own streaming transcripts on a live call.

The call's STT is tuned for a conversation: Moonshine gives a final when its VAD segment
ends (after the agent's endpointing) and an interim every 3 s of a long segment, so over a
SIP leg most IVR menus and carrier announcements had no text at all before the detector's
deadline, and it decided on their length alone. ``AMDTranscripts`` listens to the same
callee audio the detector hears, for the detection window only, the way ``bench amd``'s
file level simulates a streaming STT (``pipelines.amd.offline.amd_file``): its own VAD
with a short pause (0.3 s) cuts utterances; while one is open, the utterance so far is
re-read about every ``interim_every`` seconds (an interim); when it ends, the whole
utterance is read once more (its final).

Two children, started with the job (they load while the room connects and the phone
rings), one per recogniser of the file level's transcript (``moonshine_phrases_transcriber``):
Moonshine base-en (``pipelines.engines.moonshine``, several times slower) and the
phrase-model pocketsphinx (``pipelines.amd.transcriber_child``). A final asks both at once
(on two cores it costs the slower one, not the sum) and says Moonshine's text then the
phrase model's; an interim asks the phrase model only and is skipped while it is busy (the
next re-reads more); so is a final under ``MOONSHINE_MIN_SECONDS``. Finals are never
skipped. Results go to ``on_result(text, is_final)``; an interim for an utterance that has
ended since is dropped. ``failed`` is true when they are off (``enabled=False``) or a child
cannot start or dies; the caller then uses the call STT's transcripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Final, Protocol

import numpy as np
from livekit.agents import APIError
from livekit.agents.vad import VADEventType

from pipelines.audio import Float32Array, Int16Array, VADCore, float_to_int16
from pipelines.providers.local_stt import MOONSHINE_MAX_RSS_MB, DecoderProcess

logger = logging.getLogger(__name__)

RATE: Final = 16000
INTERIM_EVERY = 1.0
"""Seconds of an open utterance between re-reads, as ``amd_file`` simulates."""
PAUSE = 0.3
"""Silence that ends an utterance, as ``amd_file``'s endpointer."""
ONSET_CONTEXT = 0.2
"""Seconds kept before the VAD's onset: the first phoneme starts before it is voiced."""
MIN_SECONDS = 0.1
"""An utterance shorter than this is not sent."""
MOONSHINE_MIN_SECONDS = 1.0
"""A final shorter than this goes to the phrase model only: Moonshine's cost is spent on
utterances that can hold a machine's words, not on a human's "Hello?"."""
TIMEOUT = 8.0
"""The longest one request may take (the detector's own deadline is the real bound)."""


class Recogniser(Protocol):
    """What ``AMDTranscripts`` needs of a recogniser: ``DecoderProcess``'s surface."""

    def start_soon(self) -> None: ...

    async def transcribe(self, pcm: Int16Array, *, timeout: float) -> str: ...

    async def aclose(self) -> None: ...


class AMDTranscripts:
    """Streaming transcripts of the callee's first seconds (see the module)."""

    def __init__(
        self,
        on_result: Callable[[str, bool], None],
        *,
        interim_every: float = INTERIM_EVERY,
        pause: float = PAUSE,
        enabled: bool = True,
        children: tuple[Recogniser, Recogniser] | None = None,
    ) -> None:
        """``children``: (Moonshine, phrase model), by default the two child processes."""
        self.on_result = on_result
        self.interim_every = interim_every
        self.failed = not enabled
        """True when these transcripts are off, or their child failed: use the call STT's."""
        self.requests = 0
        """Transcriptions answered so far (interims and finals)."""
        self.heard: list[tuple[float, bool, str]] = []
        """(seconds of callee audio when it came, final, text) of each result passed on."""
        self.head_start: float | None = None
        """Seconds between ``start`` and the first callee audio (the children's load time)."""
        self._started_at: float | None = None
        self._moonshine, self._phrases = children or (
            DecoderProcess(
                "pipelines.engines.moonshine", name="amd moonshine", max_rss_mb=MOONSHINE_MAX_RSS_MB
            ),
            DecoderProcess("pipelines.amd.transcriber_child", name="amd phrases"),
        )
        self._vad = VADCore(
            frame_ms=20, sample_rate=RATE, min_silence_duration=pause, keep_speech_audio=False
        )
        self._audio: list[Float32Array] = []
        self._samples = 0
        self._start: int | None = None
        """Sample index where the open utterance begins (None between utterances)."""
        self._last_read = 0.0
        self._generation = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._interim: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Starts the child now (it loads two models): call it while the phone rings."""
        if not self.failed:
            self._started_at = time.monotonic()
            self._moonshine.start_soon()
            self._phrases.start_soon()

    def push(self, samples: Float32Array) -> None:
        """Callee audio, 16 kHz mono float32, in order from the answer on."""
        if self.failed or len(samples) == 0:
            return
        if self.head_start is None and self._started_at is not None:
            self.head_start = round(time.monotonic() - self._started_at, 3)
        self._audio.append(samples)
        self._samples += len(samples)
        now = self._samples / RATE
        for ev in self._vad.push(samples, RATE):
            if ev.type is VADEventType.START_OF_SPEECH:
                self._start = max(0, round((ev.speech_start - ONSET_CONTEXT) * RATE))
                self._last_read = now
            elif self._start is not None:
                self._generation += 1
                self._read(self._start, self._samples, final=True)
                self._start = None
        if (
            self._start is not None
            and self._vad.speaking
            and now - self._last_read >= self.interim_every
            and (self._interim is None or self._interim.done())
        ):
            self._last_read = now
            self._read(self._start, self._samples, final=False)

    def _read(self, start: int, end: int, *, final: bool) -> None:
        if end - start < MIN_SECONDS * RATE:
            return
        if len(self._audio) > 1:
            self._audio = [np.concatenate(self._audio)]
        pcm = float_to_int16(self._audio[0][start:end])
        task = asyncio.create_task(self._ask(pcm, final, self._generation))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if not final:
            self._interim = task

    async def _ask(self, pcm: Int16Array, final: bool, generation: int) -> None:
        # Moonshine reads finals only, of utterances long enough to carry words that tell a
        # machine (a short "Hello?" is decided on its length and the silence after it)
        long = len(pcm) >= MOONSHINE_MIN_SECONDS * RATE
        children = (self._moonshine, self._phrases) if final and long else (self._phrases,)
        try:
            texts = await asyncio.gather(*(c.transcribe(pcm, timeout=TIMEOUT) for c in children))
        except APIError as exc:
            logger.warning("amd transcriber failed, using the call STT: %s", exc)
            self.failed = True
            return
        self.requests += 1
        if final or generation == self._generation:
            text = " ".join(t for t in texts if t)
            self.heard.append((round(self._samples / RATE, 2), final, text))
            self.on_result(text, final)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.gather(self._moonshine.aclose(), self._phrases.aclose())
