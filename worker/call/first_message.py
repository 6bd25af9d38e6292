"""The first message, synthesized ahead of the moment it is said (issue 18).

On a phone call the greeting waits for something: the callee's answer, or the AMD verdict
``human`` at the end of their "hello?". The text is final by then (the plan filled its
placeholders), so its audio is made while the call waits, through the agent's own TTS path
(the session's text transforms, the plan's text replacements, the TTS failover chain), and
``say`` plays audio that is ready instead of starting the TTS at the verdict. Frames still
coming when it is said stream on as they arrive (a streaming TTS keeps streaming); a failed
synthesis falls back to a plain ``say``. The playback rate and the noise bed apply at the
session's output, so ready audio plays like any other speech.

Each use records a ``first_message`` report event: whether the audio was ready, how long
the synthesis took, and the wait from the decision to speak to the first frame played.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any

from livekit import rtc
from livekit.agents import Agent, AgentSession, ModelSettings
from livekit.agents.voice.events import AgentStateChangedEvent
from livekit.agents.voice.speech_handle import SpeechHandle
from livekit.agents.voice.transcription.text_transforms import _apply_text_transforms

logger = logging.getLogger(__name__)

LEAD_SECONDS = 0.3
"""Audio handed to the output at once when said; the rest at ``PACE`` times real time."""
PACE = 2.5
"""How fast ready audio is handed on: faster than any playback rate plays it, slow enough
that LiveKit's per-frame work downstream (the transcript synchronizer's speaking-rate
estimate runs every window it is given in one go) does not hold the first frame back."""


def warm_first_speech() -> None:
    """Builds (in a thread, while the call waits) what LiveKit builds on a job's first
    spoken word, on the call's event loop: the transcript synchronizer's English hyphenator
    (a pattern tree, cached per process: measured blocking the loop 0.3-0.8 s between a
    human's AMD verdict and the first message's first frame on a loaded machine) and
    numpy's FFT (its speaking-rate estimate; 0.15 s to import)."""
    import numpy as np
    from livekit.agents.tokenize import basic

    basic.hyphenate_word("hyphenation")
    np.fft.rfft(np.zeros(256, dtype=np.float32))


class PreparedSpeech:
    """One text synthesized in the background; ``say`` plays it (ready or still coming)."""

    def __init__(
        self,
        text: str,
        session: AgentSession[Any],
        agent: Agent,
        record_event: Callable[..., object] | None = None,
    ) -> None:
        self.text = text
        self.session = session
        self.agent = agent
        self.record_event = record_event
        self._frames: list[rtc.AudioFrame] = []
        self._more = asyncio.Event()
        self._done = False
        self._failed: str | None = None
        self._started: float | None = None
        self._ready_after: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._used = False
        self.first_frame_at: float | None = None
        """When its first frame played (``time.time()``), once said."""

    def start(self) -> None:
        """Starts the synthesis (the session must be started: it runs the agent's TTS)."""
        if self._task is None:
            self._started = time.perf_counter()
            self._task = asyncio.create_task(self._synthesize())

    @property
    def ready(self) -> bool:
        """Every frame is made."""
        return self._done and self._failed is None

    async def _synthesize(self) -> None:
        async def text() -> AsyncIterator[str]:
            yield self.text

        source: AsyncIterable[str] = text()
        transforms = self.session.options.tts_text_transforms
        if transforms:
            source = _apply_text_transforms(source, transforms)
        try:
            node = self.agent.tts_node(source, ModelSettings())
            frames = await node if asyncio.iscoroutine(node) else node
            if frames is None:
                raise RuntimeError("the agent's tts_node returned no audio")
            async for frame in frames:
                self._frames.append(frame)
                self._more.set()
            if not self._frames:
                raise RuntimeError("the TTS made no audio")
            self._done = True
            self._ready_after = time.perf_counter() - (self._started or 0.0)
            self._more.set()
        except Exception as exc:
            self._failed = f"{type(exc).__name__}: {exc}"
            logger.warning("first message not synthesized ahead: %s", self._failed)
        finally:
            if not self._done:
                self._done = True
                self._ready_after = time.perf_counter() - (self._started or 0.0)
            self._more.set()
        try:  # while the call still waits, after the audio (which comes first)
            await asyncio.to_thread(warm_first_speech)
        except Exception as exc:
            logger.warning("speech warm-up failed: %s", type(exc).__name__)

    async def _stream(self) -> AsyncIterator[rtc.AudioFrame]:
        i, handed = 0, 0.0
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            while i < len(self._frames):
                ahead = handed - LEAD_SECONDS - PACE * (loop.time() - start)
                if ahead > 0:
                    await asyncio.sleep(ahead / PACE)
                yield self._frames[i]
                handed += self._frames[i].duration
                i += 1
            if self._done:
                return
            self._more.clear()
            if i < len(self._frames) or self._done:
                continue
            await self._more.wait()

    def rewind(self) -> None:
        """Its playing was stopped (a withdrawn provisional AMD decision): the next
        ``say`` plays the audio made ahead from the start again."""
        self._used = False

    def say(self, text: str, *, allow_interruptions: bool) -> SpeechHandle:
        """Says ``text``: with the audio made ahead when it is that text, synthesis has not
        failed and it was not said already (before any frame came), else as usual."""
        use = text == self.text and not self._used and self._task is not None
        use = use and not (self._done and self._failed is not None)
        ready = self.ready
        asked = time.time()
        if use:
            self._used = True
            handle = self.session.say(
                text, audio=self._stream(), allow_interruptions=allow_interruptions
            )
        else:
            handle = self.session.say(text, allow_interruptions=allow_interruptions)
        self._time_first_frame(asked, prepared=use, ready=ready)
        return handle

    def _time_first_frame(self, asked: float, *, prepared: bool, ready: bool) -> None:
        def on_state(ev: AgentStateChangedEvent) -> None:
            if ev.new_state != "speaking":
                return
            self.session.off("agent_state_changed", on_state)
            self.first_frame_at = ev.created_at
            data: dict[str, Any] = {
                "prepared": prepared,
                "ready_when_said": ready,
                "first_frame_after_say": round(ev.created_at - asked, 3),
            }
            if self._ready_after is not None:
                data["synthesis_seconds"] = round(self._ready_after, 3)
            if prepared and self._frames:
                data["audio_seconds"] = round(sum(f.duration for f in self._frames), 3)
            if self._failed is not None:
                data["synthesis_error"] = self._failed
            logger.info("first message playing %.3f s after say (%s)", ev.created_at - asked, data)
            if self.record_event is not None:
                self.record_event("first_message", **data)

        self.session.on("agent_state_changed", on_state)

    async def aclose(self) -> None:
        """Stops a synthesis nobody will play; waits for one being said (it streams on)."""
        if self._task is None or self._task.done():
            return
        if not self._used:
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
