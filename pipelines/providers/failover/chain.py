"""Mid-call failover inside a layer's ranked allowed providers: one mechanism, three layers.

``ProviderChain`` is the mechanism: it walks the session's ranked allowed chain (never
anything else), skips providers whose circuit is open in the shared ``HealthRegistry``,
runs one *attempt* per provider under a ``Watchdog`` that turns silence into a
``StallError`` once the layer's deadline passes, classifies what went wrong, records it,
emits a ``SwitchEvent`` and moves on. When every allowed provider has failed it raises a
non-retryable ``ProviderError`` naming the layer and each provider tried.

What a layer adds is only how to resume its request on the next provider:

- STT: the caller's current turn is kept in a bounded ``TurnBuffer`` and replayed, so the
  turn in flight is transcribed, not lost;
- LLM: before the first token the request is simply retried; after it, the partial reply
  goes back as context with an instruction to continue, and only the continuation is
  emitted (``RepeatFilter`` drops a restatement);
- TTS: text is cut into sentences; a segment resumes at the first sentence not fully
  played, resampled to the chain's rate (the first provider's).

The chain classes subclass LiveKit's ``stt.STT``, ``llm.LLM`` and ``tts.TTS`` so an
``AgentSession`` uses them unchanged; inner providers are called with ``max_retry=0`` so
the chain, not the plugin, decides. Build them with ``build_failover_layers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Never, TypeVar

import numpy as np
from livekit import rtc
from livekit.agents import (
    APIConnectionError,
    APIConnectOptions,
    APIError,
    APIStatusError,
    APITimeoutError,
    llm,
    stt,
    tts,
    utils,
    vad,
)
from livekit.agents.llm import ChatChunk, ChatContext, Tool, ToolChoice
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

from pipelines.audio.pcm import int16_to_float, rms_dbfs
from pipelines.errors import ProviderError
from pipelines.providers.factories import ProviderSpec, build
from pipelines.providers.failover.health import HealthRegistry, default_health


class LayerDown(APIConnectionError):
    """Every allowed provider of a layer failed; ``__cause__`` is the ``ProviderError``."""

    @property
    def provider_error(self) -> ProviderError:
        assert isinstance(self.__cause__, ProviderError)
        return self.__cause__


__all__ = [
    "Deadlines",
    "FailoverLLM",
    "FailoverSTT",
    "FailoverTTS",
    "HealthRegistry",
    "LayerDown",
    "Link",
    "ProviderChain",
    "RepeatFilter",
    "SentenceQueue",
    "StallError",
    "SwitchEvent",
    "TurnBuffer",
    "Watchdog",
    "build_failover_layers",
    "classify",
    "default_health",
]

logger = logging.getLogger(__name__)

AnySTT = stt.STT[Any]
AnyLLM = llm.LLM[Any]
AnyTTS = tts.TTS[Any]

T = TypeVar("T")

INNER_CONN_OPTIONS = APIConnectOptions(max_retry=0, retry_interval=0.0, timeout=10.0)
"""What the chain passes to each provider: no plugin retries (the chain decides); the
plugin's own timeout stays above the chain's deadlines, which fire first."""

CONTINUE_INSTRUCTION = (
    "Your previous reply was cut off. Continue it exactly where it stopped, without "
    "repeating anything already said and without starting over."
)


@dataclass(frozen=True, slots=True)
class Deadlines:
    """Seconds a provider may stay silent while it owes output before it is failed over."""

    stt: float = 1.5
    """No result while the caller speaks (or after the caller stopped)."""
    llm: float = 2.5
    """No first token (and no next token mid-reply)."""
    tts: float = 1.5
    """No first audio byte of a sentence (and no next chunk mid-sentence)."""

    def for_layer(self, layer: str) -> float:
        return float(getattr(self, layer))


@dataclass(frozen=True, slots=True)
class SwitchEvent:
    """One failover inside a layer (or a return to the recovered primary)."""

    layer: str
    from_provider: str
    """``vendor:model`` that failed (or served until now)."""
    to_provider: str
    reason: str
    """``stall``, ``connection``, ``timeout``, ``server_error``, ``rate_limited``,
    ``client_error``, ``protocol``, ``return_to_primary`` or ``circuit_open``."""
    switch_seconds: float
    """From the moment the failing provider went silent while owing output (or raised,
    when nothing was owed) to handing the request to ``to_provider``."""
    error: str = ""
    at: float = field(default_factory=time.time)
    """Wall-clock time of the switch."""


class StallError(APITimeoutError):
    """A provider owed output and stayed silent past its layer's deadline."""

    def __init__(self, layer: str, provider: str, waited: float) -> None:
        super().__init__(f"{layer} {provider}: no output for {waited:.2f} s")
        self.layer = layer
        self.provider = provider
        self.waited = waited


def classify(exc: BaseException) -> str:
    """The failure reason recorded for a provider error (see ``SwitchEvent.reason``)."""
    if isinstance(exc, StallError):
        return "stall"
    if isinstance(exc, APIStatusError):
        code = exc.status_code
        if code == 429:
            return "rate_limited"
        if 500 <= code < 600:
            return "server_error"
        if 400 <= code < 500:
            return "client_error"
        # plugins report WebSocket close codes (1006: closed abnormally) as status codes
        return "connection" if 1000 <= code < 5000 else "protocol"
    if isinstance(exc, APITimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, APIConnectionError | ConnectionError | OSError):
        return "connection"
    return "protocol"


# ---------------------------------------------------------------------------- mechanism


class Watchdog:
    """Turns a provider's silence into ``StallError``.

    The attempt says when output is owed (``owe``), when some arrived (``answered``,
    ``progress`` = answered and more owed) and when nothing is owed (``settle``);
    ``trip`` stalls it at once (a layer with its own clock, such as STT counting
    unanswered speech)."""

    def __init__(
        self,
        layer: str,
        provider: str,
        deadline: float,
        *,
        on_first_answer: Callable[[float], None] | None = None,
    ) -> None:
        self.layer = layer
        self.provider = provider
        self.deadline = deadline
        self._on_first_answer = on_first_answer
        self._owed_since: float | None = None
        self._first_owed: float | None = None
        self._answers = 0
        self._tripped: float | None = None
        self._wake = asyncio.Event()

    @property
    def answers(self) -> int:
        return self._answers

    def silent_since(self) -> float:
        """When the provider went silent while owing output; now if nothing is owed."""
        if self._tripped is not None:
            return self._tripped
        return self._owed_since if self._owed_since is not None else time.monotonic()

    def owe(self, deadline: float | None = None) -> None:
        if deadline is not None:
            self.deadline = deadline
        if self._owed_since is None:
            self._owed_since = time.monotonic()
            if self._first_owed is None:
                self._first_owed = self._owed_since
            self._wake.set()

    def answered(self) -> None:
        now = time.monotonic()
        if self._answers == 0 and self._on_first_answer is not None:
            self._on_first_answer(now - (self._first_owed or now))
        self._answers += 1
        self._owed_since = None
        self._wake.set()

    def progress(self) -> None:
        self.answered()
        self.owe()

    def settle(self) -> None:
        self._owed_since = None
        self._wake.set()

    def trip(self, silent_since: float | None = None) -> None:
        self._tripped = silent_since if silent_since is not None else time.monotonic()
        self._wake.set()

    async def _watch(self) -> None:
        while True:
            if self._tripped is not None:
                raise StallError(self.layer, self.provider, time.monotonic() - self._tripped)
            since = self._owed_since
            self._wake.clear()
            if since is None:
                await self._wake.wait()
                continue
            remaining = since + self.deadline - time.monotonic()
            if remaining <= 0:
                self._tripped = since
                continue
            # asyncio.timeout, not wait_for: wait_for (3.11) can swallow a cancellation
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._wake.wait()

    async def guard(self, work: Awaitable[None]) -> None:
        """Runs ``work``; cancels it and raises ``StallError`` if the provider stalls."""
        task = asyncio.ensure_future(work)
        watcher = asyncio.create_task(self._watch())
        try:
            await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()
                return
            await utils.aio.cancel_and_wait(task)
            watcher.result()
        finally:
            await utils.aio.cancel_and_wait(task, watcher)


@dataclass(frozen=True, slots=True)
class Link(Generic[T]):
    """One allowed provider of a layer: its spec and its plugin instance."""

    spec: ProviderSpec
    instance: T

    @property
    def id(self) -> str:
        return self.spec.id


class _Rotate(Exception):
    """Raised by an attempt at a safe point to hand over to the recovered primary."""


Attempt = Callable[[Link[T], Watchdog], Awaitable[None]]


class ProviderChain(Generic[T]):
    """The session's ranked allowed providers of one layer, and which one serves now.

    Order of a new request: the serving provider first (``return_to_primary=False``) or
    the ranked order (``True``); providers that failed in this session and have not
    recovered, or whose circuit is open, go to the end as a last resort."""

    def __init__(
        self,
        layer: str,
        links: Sequence[Link[T]],
        *,
        deadline: float,
        health: HealthRegistry,
        on_switch: Callable[[SwitchEvent], None] | None = None,
        return_to_primary: bool = False,
    ) -> None:
        if not links:
            raise ValueError(f"{layer}: a provider chain needs at least one provider")
        self.layer = layer
        self.links = tuple(links)
        self.deadline = deadline
        self.health = health
        self.on_switch = on_switch
        self.return_to_primary = return_to_primary
        self.current = 0
        self._served = False
        self._failed_at: dict[int, float] = {}

    @property
    def active(self) -> Link[T]:
        return self.links[self.current]

    def _recovered(self, i: int) -> bool:
        failed = self._failed_at.get(i)
        if failed is None:
            return True
        success = self.health.last_success_at(self.links[i].id)
        return (success is not None and success > failed) or (
            self.health.now() - failed >= self.health.policy.cooldown
        )

    def _usable(self, i: int) -> bool:
        return self._recovered(i) and self.health.allows(self.links[i].id)

    def order(self) -> list[int]:
        n = len(self.links)
        if self.return_to_primary or not self._served:
            base = list(range(n))
        else:
            base = [self.current, *(i for i in range(n) if i != self.current)]
        good = [i for i in base if self._usable(i)]
        return good + [i for i in base if i not in good]

    def should_return(self) -> bool:
        """Whether a recovered higher-ranked provider should take over now."""
        if not (self.return_to_primary and self._served):
            return False
        best = self.order()[0]
        return best < self.current and self._usable(best)

    def _emit(self, to: int, reason: str, since: float, error: str) -> None:
        event = SwitchEvent(
            layer=self.layer,
            from_provider=self.links[self.current].id,
            to_provider=self.links[to].id,
            reason=reason,
            switch_seconds=max(0.0, time.monotonic() - since),
            error=error,
        )
        logger.warning(
            "%s failover %s -> %s (%s after %.3f s) %s",
            event.layer,
            event.from_provider,
            event.to_provider,
            event.reason,
            event.switch_seconds,
            error,
        )
        if self.on_switch is not None:
            try:
                self.on_switch(event)
            except Exception:
                logger.exception("on_switch callback failed")

    async def run(self, attempt: Attempt[T]) -> None:
        """Runs ``attempt`` on providers in order until one completes."""
        tried: set[int] = set()
        failures: list[str] = []
        pending: tuple[str, float, str] | None = None
        first = True
        while True:
            idx = next((i for i in self.order() if i not in tried), None)
            if idx is None:
                down = ProviderError(
                    f"{self.layer}: every allowed provider failed: {'; '.join(failures)}",
                    layer=self.layer,
                    provider=",".join(self.links[i].id for i in sorted(tried)),
                    retryable=False,
                )
                # Surfaced as a non-retryable APIError so LiveKit reports it as an
                # unrecoverable session error; the cause says which layer is down.
                raise LayerDown(down.message, retryable=False) from down
            if first and self._served and idx != self.current:
                reason = "return_to_primary" if idx < self.current else "circuit_open"
                pending = (reason, time.monotonic(), "")
            if pending is not None and idx != self.current:
                self._emit(idx, *pending)
            first, pending = False, None
            self.current, self._served = idx, True
            link = self.links[idx]
            self.health.begin(link.id)
            wd = Watchdog(
                self.layer,
                link.id,
                self.deadline,
                on_first_answer=functools.partial(self.health.record_success, link.id),
            )
            try:
                await wd.guard(attempt(link, wd))
            except _Rotate:
                tried = set()
                pending = ("return_to_primary", time.monotonic(), "")
                continue
            except Exception as exc:
                reason = classify(exc)
                self.health.record_failure(link.id, reason)
                self._failed_at[idx] = self.health.now()
                failures.append(f"{link.id} ({reason}: {exc})")
                if reason == "protocol" and not isinstance(exc, APIError):
                    logger.warning("%s %s raised %r", self.layer, link.id, exc, exc_info=exc)
                # a provider that served before failing does not spend the others' turns
                tried = {idx} if wd.answers else tried | {idx}
                pending = (reason, wd.silent_since(), str(exc))
                continue
            if wd.answers == 0:
                self.health.record_success(link.id)
            return


# ---------------------------------------------------------------------------- STT


SPEECH_DBFS = -45.0
"""Frames louder than this count as the caller speaking (for stall detection only)."""
END_OF_TURN_SILENCE = 0.5
"""Quiet after unanswered speech that makes a final result owed."""
UNANSWERED_AT_END = 1.0
"""Speech an interim-capable provider left unanswered when its stream ended: a failure."""
MIN_OWED_SPEECH = 0.3
"""Unanswered speech shorter than this (a cough, a click) owes nothing at its end."""


def _frame_seconds(frame: rtc.AudioFrame) -> float:
    return frame.samples_per_channel / frame.sample_rate


def _is_speech(frame: rtc.AudioFrame) -> bool:
    return rms_dbfs(int16_to_float(np.frombuffer(frame.data, dtype=np.int16))) > SPEECH_DBFS


class TurnBuffer:
    """The caller's current turn as frames, bounded to ``max_seconds`` (oldest dropped).

    Positions are seconds of audio since the stream began (``position`` is the end of
    the newest frame, ``start`` the beginning of the oldest kept)."""

    def __init__(self, max_seconds: float = 30.0) -> None:
        self.max_seconds = max_seconds
        self.reset()

    def reset(self) -> None:
        self._frames: deque[rtc.AudioFrame] = deque()
        self.start = 0.0
        self.position = 0.0

    @property
    def duration(self) -> float:
        return self.position - self.start

    def push(self, frame: rtc.AudioFrame) -> None:
        self._frames.append(frame)
        self.position += _frame_seconds(frame)
        while self._frames and self.duration > self.max_seconds + 1e-9:
            self.start += _frame_seconds(self._frames.popleft())

    def frames(self) -> list[rtc.AudioFrame]:
        return list(self._frames)

    def trim_until(self, t: float) -> None:
        """Drops frames that end at or before ``t`` (a transcript covered them)."""
        while self._frames and self.start + _frame_seconds(self._frames[0]) <= t + 1e-9:
            self.start += _frame_seconds(self._frames.popleft())

    def clear(self) -> None:
        self.trim_until(self.position)


class _DeadlineSTT(stt.STT[Never]):
    """A batch STT whose ``recognize`` must answer within the deadline plus a share of
    the audio's length (batch decoding time grows with it); wrapped by the VAD's
    ``StreamAdapter`` inside the chain. The first call may also spend ``cold_start``
    (pocketsphinx starts its decoder process then)."""

    def __init__(
        self,
        inner: AnySTT,
        deadline: float,
        *,
        per_audio_second: float = 0.25,
        cold_start: float = 10.0,
    ):
        super().__init__(capabilities=inner.capabilities)
        self._inner = inner
        self._deadline = deadline
        self._per_audio_second = per_audio_second
        self._cold_start = cold_start
        self._inner.on("metrics_collected", self._forward_metrics)

    @property
    def model(self) -> str:
        return self._inner.model

    @property
    def provider(self) -> str:
        return self._inner.provider

    def _forward_metrics(self, *args: Any, **kwargs: Any) -> None:
        self.emit("metrics_collected", *args, **kwargs)

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        frames = buffer if isinstance(buffer, list) else [buffer]
        seconds = sum(_frame_seconds(f) for f in frames)
        limit = self._deadline + self._per_audio_second * seconds + self._cold_start
        self._cold_start = 0.0
        started = time.monotonic()
        try:
            async with asyncio.timeout(limit):
                return await self._inner.recognize(
                    buffer, language=language, conn_options=INNER_CONN_OPTIONS
                )
        except TimeoutError as exc:
            raise StallError("stt", self._inner.provider, time.monotonic() - started) from exc

    async def aclose(self) -> None:
        self._inner.off("metrics_collected", self._forward_metrics)
        await self._inner.aclose()


class _ChainFront:
    """What a chain-backed plugin shows LiveKit: the active link's model and provider, and
    every link's metrics as its own. Shared by ``FailoverSTT``, ``FailoverLLM`` and
    ``FailoverTTS``."""

    chain: ProviderChain[Any]

    @property
    def model(self) -> str:
        return str(self.chain.active.instance.model)

    @property
    def provider(self) -> str:
        return str(self.chain.active.instance.provider)

    def _follow_links(self) -> None:
        for link in self.chain.links:
            link.instance.on("metrics_collected", self._forward_metrics)

    def _forward_metrics(self, *args: Any, **kwargs: Any) -> None:
        self.emit("metrics_collected", *args, **kwargs)  # type: ignore[attr-defined]


class FailoverSTT(_ChainFront, stt.STT[Never]):
    """Streaming STT over a chain of allowed providers (non-streaming ones come wrapped in
    ``stt.StreamAdapter``); the turn in flight is replayed to the next provider."""

    def __init__(self, chain: ProviderChain[AnySTT], *, turn_buffer_seconds: float = 30.0):
        instances = [link.instance for link in chain.links]
        super().__init__(
            capabilities=stt.STTCapabilities(
                streaming=True,
                interim_results=all(s.capabilities.interim_results for s in instances),
            )
        )
        self.chain = chain
        self.turn_buffer_seconds = turn_buffer_seconds
        self._follow_links()

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        result: list[stt.SpeechEvent] = []
        frames = buffer if isinstance(buffer, list) else [buffer]
        owed = self.chain.deadline + 0.25 * sum(_frame_seconds(f) for f in frames)

        async def attempt(link: Link[AnySTT], wd: Watchdog) -> None:
            wd.owe(owed)
            result.append(
                await link.instance.recognize(
                    buffer, language=language, conn_options=INNER_CONN_OPTIONS
                )
            )
            wd.answered()

        await self.chain.run(attempt)
        return result[-1]

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> FailoverRecognizeStream:
        return FailoverRecognizeStream(failover=self, language=language, conn_options=conn_options)

    def prewarm(self) -> None:
        self.chain.links[0].instance.prewarm()

    async def aclose(self) -> None:
        for link in self.chain.links:
            link.instance.off("metrics_collected", self._forward_metrics)
            await link.instance.aclose()


class FailoverRecognizeStream(stt.RecognizeStream):
    def __init__(
        self,
        *,
        failover: FailoverSTT,
        language: NotGivenOr[str],
        conn_options: APIConnectOptions,
    ) -> None:
        # the chain decides about retries: the base class never re-runs _run
        super().__init__(
            stt=failover,
            conn_options=APIConnectOptions(max_retry=0, timeout=conn_options.timeout),
        )
        self._failover = failover
        self._language = language
        self.turn = TurnBuffer(failover.turn_buffer_seconds)
        self._inner: stt.RecognizeStream | None = None
        self._wd: Watchdog | None = None
        self._interim = False
        self._input_done = False
        self._unanswered_speech = 0.0
        self._quiet = 0.0
        self._eos_position: float | None = None

    async def _run(self) -> None:
        forward = asyncio.create_task(self._forward_input())
        try:
            await self._failover.chain.run(self._attempt)
        finally:
            await utils.aio.cancel_and_wait(forward)

    # input side: every frame goes to the turn buffer and to the provider serving now

    async def _forward_input(self) -> None:
        async for item in self._input_ch:
            if isinstance(item, rtc.AudioFrame):
                self.turn.push(item)
                self._track_speech(item)
                if self._inner is not None:
                    with contextlib.suppress(RuntimeError):
                        self._inner.push_frame(item)
            elif self._inner is not None:
                with contextlib.suppress(RuntimeError):
                    self._inner.flush()
        self._input_done = True
        if self._inner is not None:
            with contextlib.suppress(RuntimeError):
                self._inner.end_input()

    def _track_speech(self, frame: rtc.AudioFrame) -> None:
        """The STT clock runs on audio: a provider owes a result for speech it was sent
        (interim-capable ones within ``deadline`` seconds of speech, all of them within
        ``deadline`` after the caller stops)."""
        wd = self._wd
        if wd is None:
            return
        seconds = _frame_seconds(frame)
        if _is_speech(frame):
            self._quiet = 0.0
            self._unanswered_speech += seconds
            if self._interim and self._unanswered_speech >= wd.deadline:
                wd.trip(time.monotonic() - self._unanswered_speech)
            return
        self._quiet += seconds
        if (
            self._unanswered_speech >= MIN_OWED_SPEECH
            and self._quiet >= END_OF_TURN_SILENCE
            and not isinstance(self._inner, stt.StreamAdapterWrapper)
        ):
            wd.owe()

    def _answered(self, wd: Watchdog) -> None:
        self._unanswered_speech = 0.0
        wd.answered()

    # provider side

    async def _attempt(self, link: Link[AnySTT], wd: Watchdog) -> None:
        inner = link.instance.stream(language=self._language, conn_options=INNER_CONN_OPTIONS)
        inner.start_time_offset = self.start_time_offset + self.turn.start
        self._interim = link.instance.capabilities.interim_results
        self._unanswered_speech = 0.0
        # replay and hand-over happen without an await: no frame is lost or sent twice
        replayed = self.turn.frames()
        for frame in replayed:
            inner.push_frame(frame)
        if self._input_done:
            inner.end_input()
        self._inner, self._wd = inner, wd
        if self._interim and any(_is_speech(f) for f in replayed):
            wd.owe()
        try:
            async with inner:
                async for ev in inner:
                    if self._interim or ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT:
                        self._answered(wd)
                    if ev.type == stt.SpeechEventType.END_OF_SPEECH:
                        self._eos_position = self.turn.position
                    self._event_ch.send_nowait(ev)
                    if ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT:
                        self._trim_after_final(ev)
                        if self._failover.chain.should_return() and self.turn.duration < 0.05:
                            raise _Rotate
            if self._interim and self._unanswered_speech >= UNANSWERED_AT_END:
                # the provider closed without a word for the caller's last speech
                raise StallError("stt", link.id, time.monotonic() - wd.silent_since())
        finally:
            self._inner = self._wd = None

    def _trim_after_final(self, ev: stt.SpeechEvent) -> None:
        end = ev.alternatives[0].end_time - self.start_time_offset if ev.alternatives else 0.0
        if 0.0 < end <= self.turn.position + 0.5:
            self.turn.trim_until(end)
        elif self._eos_position is not None:
            self.turn.trim_until(self._eos_position)
        else:
            self.turn.clear()
        self._eos_position = None


# ---------------------------------------------------------------------------- LLM


def continuation_context(chat_ctx: ChatContext, said: str) -> ChatContext:
    """``chat_ctx`` plus the partial reply and an instruction to continue it."""
    ctx = chat_ctx.copy()
    ctx.add_message(role="assistant", content=said)
    ctx.add_message(role="system", content=CONTINUE_INSTRUCTION)
    return ctx


def _collapsed(text: str) -> str:
    return " ".join(text.split())


def _after_collapsed_prefix(raw: str, n: int) -> str:
    """What follows the first ``n`` characters of ``raw`` in whitespace-collapsed form."""
    count, in_space = 0, True
    for i, ch in enumerate(raw):
        if count >= n:
            return raw[i:]
        if ch.isspace():
            if not in_space:
                count += 1
            in_space = True
        else:
            count += 1
            in_space = False
    return ""


class RepeatFilter:
    """Passes a continuation through, minus a restatement of what was already said.

    Text is held only while it still matches the start of the already-said reply; once
    it diverges it is released whole, once it covers the whole reply the repeat is
    dropped. A space is put between the two parts when neither side has one."""

    def __init__(self, said: str) -> None:
        self._said = _collapsed(said)
        self._joins_word = bool(said) and not said[-1].isspace()
        self._held = ""
        self._deciding = bool(self._said)
        self._started = False

    def push(self, text: str) -> str:
        if not self._deciding:
            return self._out(text)
        self._held += text
        probe = _collapsed(self._held)
        if len(probe) < len(self._said) and self._said.startswith(probe):
            return ""
        self._deciding = False
        held, self._held = self._held, ""
        n = len(self._said)
        if probe.startswith(self._said) and not probe[n : n + 1].isalnum():
            held = _after_collapsed_prefix(held, n)
        return self._out(held)

    def finish(self) -> str:
        """Text still held when the continuation ended: a partial repeat, dropped."""
        self._held = ""
        return ""

    def _out(self, text: str) -> str:
        if not text:
            return ""
        if not self._started:
            self._started = True
            if self._joins_word and not text[0].isspace() and text[0] not in ".,;:!?":
                return " " + text
        return text


class FailoverLLM(_ChainFront, llm.LLM[Never]):
    """LLM over a chain of allowed providers; a reply cut mid-way is continued."""

    def __init__(self, chain: ProviderChain[AnyLLM]) -> None:
        super().__init__()
        self.chain = chain
        self._follow_links()

    def chat(
        self,
        *,
        chat_ctx: ChatContext,
        tools: list[Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> FailoverLLMStream:
        return FailoverLLMStream(
            self,
            chat_ctx=chat_ctx,
            tools=tools or [],
            conn_options=APIConnectOptions(max_retry=0, timeout=conn_options.timeout),
            parallel_tool_calls=parallel_tool_calls,
            tool_choice=tool_choice,
            extra_kwargs=extra_kwargs,
        )

    def prewarm(self, *, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.chain.links[0].instance.prewarm(loop=loop)

    async def aclose(self) -> None:
        for link in self.chain.links:
            link.instance.off("metrics_collected", self._forward_metrics)
            await link.instance.aclose()


class FailoverLLMStream(llm.LLMStream):
    _llm_request_span_name = "llm_failover"
    _llm_attempt_span_name = None
    _genai_operation_name = None

    def __init__(
        self,
        failover: FailoverLLM,
        *,
        chat_ctx: ChatContext,
        tools: list[Tool],
        conn_options: APIConnectOptions,
        parallel_tool_calls: NotGivenOr[bool],
        tool_choice: NotGivenOr[ToolChoice],
        extra_kwargs: NotGivenOr[dict[str, Any]],
    ) -> None:
        super().__init__(failover, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._failover = failover
        self._parallel_tool_calls = parallel_tool_calls
        self._tool_choice = tool_choice
        self._extra_kwargs = extra_kwargs
        self.said = ""
        """Reply text emitted so far, across providers."""
        self._tool_calls_sent = False

    async def _run(self) -> None:
        await self._failover.chain.run(self._attempt)

    async def _attempt(self, link: Link[AnyLLM], wd: Watchdog) -> None:
        if self._tool_calls_sent:
            return  # the reply was complete: tool calls come last
        continuing = bool(self.said)
        ctx = continuation_context(self._chat_ctx, self.said) if continuing else self._chat_ctx
        repeat = RepeatFilter(self.said) if continuing else None
        wd.owe()
        try:
            async with link.instance.chat(
                chat_ctx=ctx,
                tools=self._tools,
                conn_options=INNER_CONN_OPTIONS,
                parallel_tool_calls=self._parallel_tool_calls,
                tool_choice=self._tool_choice,
                extra_kwargs=self._extra_kwargs,
            ) as stream:
                async for chunk in stream:
                    wd.progress()
                    self._forward(chunk, repeat)
        except Exception:
            if self._tool_calls_sent:
                logger.warning("llm %s failed after its tool calls; reply kept", link.id)
                return
            raise
        wd.settle()

    def _forward(self, chunk: ChatChunk, repeat: RepeatFilter | None) -> None:
        delta = chunk.delta
        if delta is not None and delta.content and repeat is not None:
            content = repeat.push(delta.content)
            if not content and not delta.tool_calls:
                return
            delta = delta.model_copy(update={"content": content or None})
            chunk = chunk.model_copy(update={"delta": delta})
        if delta is not None:
            self.said += delta.content or ""
            self._tool_calls_sent = self._tool_calls_sent or bool(delta.tool_calls)
        self._event_ch.send_nowait(chunk)


# ---------------------------------------------------------------------------- TTS

_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


class SentenceQueue:
    """Text cut into sentences as it arrives, and where playback got to.

    ``played`` is the index of the first sentence not fully played: where a segment
    resumes on the next provider."""

    def __init__(self) -> None:
        self.sentences: list[str] = []
        self.played = 0
        self.closed = False
        self._pending = ""
        self._changed = asyncio.Event()

    def push_text(self, text: str) -> None:
        self._pending += text
        *done, self._pending = _SENTENCE_END.split(self._pending)
        self._add(done)

    def flush(self) -> None:
        self._add([self._pending])
        self._pending = ""

    def end(self) -> None:
        self.flush()
        self.closed = True
        self._changed.set()

    def _add(self, sentences: list[str]) -> None:
        new = [s.strip() for s in sentences if s.strip()]
        if new:
            self.sentences += new
            self._changed.set()

    async def next_unplayed(self) -> int | None:
        """Index of the first unplayed sentence, once it exists; None when all played."""
        while True:
            if self.played < len(self.sentences):
                return self.played
            if self.closed:
                return None
            self._changed.clear()
            await self._changed.wait()


class FailoverTTS(_ChainFront, tts.TTS[Never]):
    """TTS over a chain of allowed providers at the first provider's sample rate; a
    segment resumes at the first sentence not yet played."""

    def __init__(self, chain: ProviderChain[AnyTTS]) -> None:
        instances = [link.instance for link in chain.links]
        if len({t.num_channels for t in instances}) != 1:
            raise ValueError("every TTS of a chain must have the same number of channels")
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=True),
            sample_rate=instances[0].sample_rate,
            num_channels=instances[0].num_channels,
        )
        self.chain = chain
        self._follow_links()

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> FailoverChunkedStream:
        return FailoverChunkedStream(
            tts=self,
            input_text=text,
            conn_options=APIConnectOptions(max_retry=0, timeout=conn_options.timeout),
        )

    def stream(
        self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> FailoverSynthesizeStream:
        return FailoverSynthesizeStream(
            tts=self, conn_options=APIConnectOptions(max_retry=0, timeout=conn_options.timeout)
        )

    def prewarm(self) -> None:
        self.chain.links[0].instance.prewarm()

    async def speak(self, sentences: SentenceQueue, emitter: tts.AudioEmitter) -> None:
        """Plays ``sentences`` through the chain into ``emitter``."""

        async def attempt(link: Link[AnyTTS], wd: Watchdog) -> None:
            while (index := await sentences.next_unplayed()) is not None:
                await self._sentence(link, wd, sentences.sentences[index], emitter)
                sentences.played = index + 1

        await self.chain.run(attempt)

    async def _sentence(
        self, link: Link[AnyTTS], wd: Watchdog, text: str, emitter: tts.AudioEmitter
    ) -> None:
        inner = link.instance
        resampler = (
            rtc.AudioResampler(inner.sample_rate, self.sample_rate, num_channels=self.num_channels)
            if inner.sample_rate != self.sample_rate
            else None
        )
        stream: tts.SynthesizeStream | tts.ChunkedStream
        if inner.capabilities.streaming:
            stream = inner.stream(conn_options=INNER_CONN_OPTIONS)
            stream.push_text(text)
            stream.end_input()
        else:
            stream = inner.synthesize(text, conn_options=INNER_CONN_OPTIONS)
        wd.owe()
        async with stream:
            async for audio in stream:
                wd.progress()
                for frame in resampler.push(audio.frame) if resampler else [audio.frame]:
                    emitter.push_frame(frame)
        wd.settle()
        if resampler is not None:
            for frame in resampler.flush():
                emitter.push_frame(frame)

    async def aclose(self) -> None:
        for link in self.chain.links:
            link.instance.off("metrics_collected", self._forward_metrics)
            await link.instance.aclose()


class FailoverChunkedStream(tts.ChunkedStream):
    _tts_request_span_name = "tts_failover"
    _tts_attempt_span_name = None

    def __init__(self, *, tts: FailoverTTS, input_text: str, conn_options: APIConnectOptions):
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._failover = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(
            request_id=utils.shortuuid(),
            sample_rate=self._failover.sample_rate,
            num_channels=self._failover.num_channels,
            mime_type="audio/pcm",
        )
        sentences = SentenceQueue()
        sentences.push_text(self._input_text)
        sentences.end()
        await self._failover.speak(sentences, output_emitter)


class FailoverSynthesizeStream(tts.SynthesizeStream):
    _tts_request_span_name = "tts_failover"
    _tts_attempt_span_name = None

    def __init__(self, *, tts: FailoverTTS, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, conn_options=conn_options)
        self._failover = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(
            request_id=utils.shortuuid(),
            sample_rate=self._failover.sample_rate,
            num_channels=self._failover.num_channels,
            mime_type="audio/pcm",
            stream=True,
        )
        output_emitter.start_segment(segment_id=utils.shortuuid())
        sentences = SentenceQueue()

        async def forward_input() -> None:
            async for data in self._input_ch:
                if isinstance(data, str):
                    self._mark_started()
                    sentences.push_text(data)
                else:
                    sentences.flush()
            sentences.end()

        forward = asyncio.create_task(forward_input())
        try:
            await self._failover.speak(sentences, output_emitter)
        finally:
            await utils.aio.cancel_and_wait(forward)


# ---------------------------------------------------------------------------- assembly


def _stt_link(spec: ProviderSpec, deadline: float, vad_: vad.VAD | None) -> Link[AnySTT]:
    instance: AnySTT = build(spec)
    if not instance.capabilities.streaming:
        if vad_ is None:
            from pipelines.audio.vad import WebRTCVAD

            vad_ = WebRTCVAD.load()
        instance = stt.StreamAdapter(stt=_DeadlineSTT(instance, deadline), vad=vad_)
    return Link(spec, instance)


def build_failover_layers(
    specs: Mapping[str, Sequence[ProviderSpec]],
    *,
    deadlines: Deadlines,
    health: HealthRegistry,
    on_switch: Callable[[SwitchEvent], None],
    return_to_primary: bool = False,
    vad: vad.VAD | None = None,
) -> dict[str, Any]:
    """``{"stt": FailoverSTT, "llm": FailoverLLM, "tts": FailoverTTS}`` for the layers in
    ``specs``, each over exactly the given ranked allowed providers (the plan's chain).
    Non-streaming STT providers are wrapped in ``stt.StreamAdapter`` with ``vad`` (a
    ``WebRTCVAD`` when none is given)."""
    layers: dict[str, Any] = {}

    def chain(layer: str, links: Sequence[Link[T]]) -> ProviderChain[T]:
        return ProviderChain(
            layer,
            links,
            deadline=deadlines.for_layer(layer),
            health=health,
            on_switch=on_switch,
            return_to_primary=return_to_primary,
        )

    if specs.get("stt"):
        layers["stt"] = FailoverSTT(
            chain("stt", [_stt_link(s, deadlines.stt, vad) for s in specs["stt"]])
        )
    if specs.get("llm"):
        layers["llm"] = FailoverLLM(chain("llm", [Link(s, build(s)) for s in specs["llm"]]))
    if specs.get("tts"):
        layers["tts"] = FailoverTTS(chain("tts", [Link(s, build(s)) for s in specs["tts"]]))
    return layers
