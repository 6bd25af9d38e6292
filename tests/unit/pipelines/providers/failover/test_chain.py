"""The failover chain with fake providers subclassing LiveKit's base classes."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Never

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import (
    APIConnectionError,
    APIConnectOptions,
    APIStatusError,
    llm,
    stt,
    tts,
    utils,
)
from livekit.agents.language import LanguageCode
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

from pipelines.errors import ProviderError
from pipelines.providers.factories import ProviderSpec
from pipelines.providers.failover import (
    CONTINUE_INSTRUCTION,
    BreakerPolicy,
    FailoverLLM,
    FailoverSTT,
    FailoverTTS,
    HealthRegistry,
    LayerDown,
    Link,
    ProviderChain,
    RepeatFilter,
    SentenceQueue,
    SwitchEvent,
    TurnBuffer,
    classify,
)

# fakes: knobs flip behaviour, calls are recorded


class FakeLLM(llm.LLM[Never]):
    def __init__(self, reply: str = "Hello there.", *, name: str = "fake") -> None:
        super().__init__()
        self.reply = reply
        self.name = name
        self.fake_exception: Exception | None = None
        self.fake_exception_count: int | None = None
        """How many calls raise ``fake_exception``; None: all of them."""
        self.fail_after_tokens: int | None = None
        self.stall_after_tokens: int | None = None
        self.token_delay = 0.0
        self.contexts: list[llm.ChatContext] = []

    @property
    def model(self) -> str:
        return self.name

    def chat(self, *, chat_ctx: llm.ChatContext, **kwargs: Any) -> llm.LLMStream:
        self.contexts.append(chat_ctx)
        conn = kwargs.get("conn_options", DEFAULT_API_CONNECT_OPTIONS)
        return FakeLLMStream(self, chat_ctx=chat_ctx, tools=[], conn_options=conn)


class FakeLLMStream(llm.LLMStream):
    async def _run(self) -> None:
        fake = self._llm
        assert isinstance(fake, FakeLLM)
        if fake.fake_exception is not None and fake.fake_exception_count != 0:
            if fake.fake_exception_count is not None:
                fake.fake_exception_count -= 1
            raise fake.fake_exception
        for i, word in enumerate(fake.reply.split(" ")):
            if fake.stall_after_tokens is not None and i >= fake.stall_after_tokens:
                await asyncio.sleep(3600)
            if fake.fail_after_tokens is not None and i >= fake.fail_after_tokens:
                raise APIConnectionError("connection reset")
            if fake.token_delay:
                await asyncio.sleep(fake.token_delay)
            text = word if i == 0 else " " + word
            self._event_ch.send_nowait(
                llm.ChatChunk(id="x", delta=llm.ChoiceDelta(role="assistant", content=text))
            )


class FakeSTT(stt.STT[Never]):
    """Streaming STT: an interim per 10 speech frames, a final on flush whose text counts
    the speech frames it heard (so a replayed turn shows in the count)."""

    def __init__(self, *, interim: bool = True) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=True, interim_results=interim))
        self.fail_after_frames: int | None = None
        self.stall_after_frames: int | None = None
        self.streams = 0

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        raise NotImplementedError

    def stream(self, **kwargs: Any) -> stt.RecognizeStream:
        self.streams += 1
        conn = kwargs.get("conn_options", DEFAULT_API_CONNECT_OPTIONS)
        return FakeSTTStream(stt=self, conn_options=conn)


def _event(kind: stt.SpeechEventType, text: str = "") -> stt.SpeechEvent:
    return stt.SpeechEvent(
        type=kind, alternatives=[stt.SpeechData(language=LanguageCode("en"), text=text)]
    )


class FakeSTTStream(stt.RecognizeStream):
    async def _run(self) -> None:
        fake = self._stt
        assert isinstance(fake, FakeSTT)
        frames = speech = 0
        async for item in self._input_ch:
            if isinstance(item, rtc.AudioFrame):
                frames += 1
                if fake.fail_after_frames is not None and frames > fake.fail_after_frames:
                    raise APIConnectionError("connection reset")
                if fake.stall_after_frames is not None and frames > fake.stall_after_frames:
                    continue
                if np.abs(np.frombuffer(item.data, np.int16)).max() > 1000:
                    speech += 1
                    if speech % 10 == 0 and fake.capabilities.interim_results:
                        self._event_ch.send_nowait(
                            _event(stt.SpeechEventType.INTERIM_TRANSCRIPT, f"{speech}")
                        )
            elif speech and fake.stall_after_frames is None:
                self._event_ch.send_nowait(
                    _event(stt.SpeechEventType.FINAL_TRANSCRIPT, f"{speech}")
                )
                speech = 0


class FakeTTS(tts.TTS[Never]):
    """Non-streaming TTS: 10 ms of tone per character, in 50 ms chunks."""

    def __init__(self, sample_rate: int = 16000) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=sample_rate,
            num_channels=1,
        )
        self.texts: list[str] = []
        self.fail_on_call: int | None = None
        """Index of the synthesize call that breaks (after ``fail_after_chunks``)."""
        self.fail_after_chunks = 0
        self.stall = False

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        self.texts.append(text)
        return FakeChunkedStream(tts=self, input_text=text, conn_options=conn_options)


class FakeChunkedStream(tts.ChunkedStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        fake = self._tts
        assert isinstance(fake, FakeTTS)
        rate = fake.sample_rate
        output_emitter.initialize(
            request_id="r", sample_rate=rate, num_channels=1, mime_type="audio/pcm"
        )
        call = len(fake.texts) - 1
        n = rate * len(self._input_text) // 100
        tone = (8000 * np.sin(np.arange(n) * 0.1)).astype(np.int16).tobytes()
        step = rate // 20 * 2
        for i, start in enumerate(range(0, len(tone), step)):
            if fake.stall:
                await asyncio.sleep(3600)
            if call == fake.fail_on_call and i >= fake.fail_after_chunks:
                raise APIConnectionError("connection reset")
            output_emitter.push(tone[start : start + step])
            await asyncio.sleep(0)
        output_emitter.flush()


def spec(layer: str, vendor: str, model: str = "m") -> ProviderSpec:
    return ProviderSpec(layer=layer, vendor=vendor, model=model)


def make_chain(
    layer: str,
    instances: list[Any],
    *,
    deadline: float = 0.3,
    health: HealthRegistry | None = None,
    events: list[SwitchEvent] | None = None,
    return_to_primary: bool = False,
) -> ProviderChain[Any]:
    links = [Link(spec(layer, f"v{i}"), inst) for i, inst in enumerate(instances)]
    return ProviderChain(
        layer,
        links,
        deadline=deadline,
        health=health or HealthRegistry(),
        on_switch=(events.append if events is not None else None),
        return_to_primary=return_to_primary,
    )


async def reply(model: llm.LLM[Any], text: str = "Hi") -> str:
    ctx = llm.ChatContext.empty()
    ctx.add_message(role="user", content=text)
    out = ""
    async with model.chat(chat_ctx=ctx) as stream:
        async for chunk in stream:
            if chunk.delta and chunk.delta.content:
                out += chunk.delta.content
    return out


# mechanism


async def test_chain_fails_over_in_rank_order_and_reports_the_switch() -> None:
    a, b, c = FakeLLM("from a"), FakeLLM("from b"), FakeLLM("from c")
    a.fake_exception = APIStatusError("boom", status_code=503)
    events: list[SwitchEvent] = []
    model = FailoverLLM(make_chain("llm", [a, b, c], events=events))
    assert await reply(model) == "from b"
    assert (len(a.contexts), len(b.contexts), len(c.contexts)) == (1, 1, 0)
    (event,) = events
    assert (event.layer, event.from_provider, event.to_provider, event.reason) == (
        "llm",
        "v0:m",
        "v1:m",
        "server_error",
    )
    assert 0 <= event.switch_seconds < 0.2


async def test_exhausted_layer_raises_provider_error_naming_every_provider() -> None:
    a, b = FakeLLM(), FakeLLM()
    a.fake_exception = APIConnectionError("refused")
    b.fake_exception = APIStatusError("limited", status_code=429)
    outsider = FakeLLM()
    with pytest.raises(LayerDown) as info:
        await reply(FailoverLLM(make_chain("llm", [a, b])))
    # LiveKit sees a non-retryable APIError (an unrecoverable session error) ...
    assert info.value.retryable is False
    # ... whose cause names the layer and every provider tried
    err = info.value.provider_error
    assert isinstance(err, ProviderError)
    assert err.layer == "llm" and err.retryable is False
    assert "v0:m (connection" in err.message and "v1:m (rate_limited" in err.message
    assert err.provider == "v0:m,v1:m"
    assert outsider.contexts == []


def test_classify_maps_errors_to_reasons() -> None:
    assert classify(APIStatusError("x", status_code=500)) == "server_error"
    assert classify(APIStatusError("x", status_code=429)) == "rate_limited"
    assert classify(APIStatusError("x", status_code=401)) == "client_error"
    assert classify(APIConnectionError("x")) == "connection"
    assert classify(APIStatusError("ws closed", status_code=1006)) == "connection"
    assert classify(ConnectionResetError()) == "connection"
    assert classify(ValueError("garbage")) == "protocol"


# LLM


async def test_llm_stall_before_first_token_switches_within_the_deadline() -> None:
    a, b = FakeLLM("late"), FakeLLM("on time")
    a.stall_after_tokens = 0
    events: list[SwitchEvent] = []
    model = FailoverLLM(make_chain("llm", [a, b], deadline=0.2, events=events))
    started = time.monotonic()
    assert await reply(model) == "on time"
    assert 0.2 <= time.monotonic() - started < 0.5
    assert events[0].reason == "stall" and 0.2 <= events[0].switch_seconds < 0.35


async def test_llm_mid_reply_failure_continues_from_what_was_said() -> None:
    a = FakeLLM("One two three four.")
    a.fail_after_tokens = 2
    b = FakeLLM("three four.")
    assert await reply(FailoverLLM(make_chain("llm", [a, b]))) == "One two three four."
    messages = b.contexts[0].messages()
    assert messages[-2].role == "assistant" and messages[-2].text_content == "One two"
    assert messages[-1].role == "system" and messages[-1].text_content == CONTINUE_INSTRUCTION


async def test_llm_continuation_that_restarts_the_reply_is_not_repeated() -> None:
    a = FakeLLM("One two three four.")
    a.stall_after_tokens = 2
    b = FakeLLM("One two three four.")
    model = FailoverLLM(make_chain("llm", [a, b], deadline=0.1))
    assert await reply(model) == "One two three four."


def test_repeat_filter() -> None:
    f = RepeatFilter("Sure, I can")
    assert f.push("Sure,") == "" and f.push(" I") == "" and f.push(" can help") == " help"
    assert f.push(" you.") == " you."
    g = RepeatFilter("Sure, I can")
    assert g.push("help") == " help"
    h = RepeatFilter("Sure")
    assert h.push("Surely") == " Surely", "a repeat ends at a word boundary"


# STT


def frame(speech: bool, rate: int = 16000, ms: int = 20) -> rtc.AudioFrame:
    n = rate * ms // 1000
    amp = 8000 if speech else 0
    pcm = (amp * np.sin(np.arange(n) * 0.3)).astype(np.int16)
    return rtc.AudioFrame(pcm.tobytes(), rate, 1, n)


def test_turn_buffer_is_bounded_and_trims_what_a_transcript_covered() -> None:
    buf = TurnBuffer(max_seconds=1.0)
    for _ in range(75):  # 1.5 s
        buf.push(frame(True))
    assert buf.duration == pytest.approx(1.0) and buf.start == pytest.approx(0.5)
    buf.trim_until(1.2)
    assert buf.start == pytest.approx(1.2) and len(buf.frames()) == 15
    buf.clear()
    assert buf.frames() == [] and buf.position == pytest.approx(1.5)


async def collect_stt(
    model: stt.STT[Any], frames: list[rtc.AudioFrame], *, fault: Any
) -> list[str]:
    stream = model.stream()
    finals: list[str] = []

    async def read() -> None:
        async for ev in stream:
            if ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT:
                finals.append(ev.alternatives[0].text)

    reader = asyncio.create_task(read())
    for i, f in enumerate(frames):
        if i == 20:
            fault()
        stream.push_frame(f)
        await asyncio.sleep(0.005)
    stream.end_input()
    await asyncio.wait_for(reader, 5)
    await stream.aclose()
    return finals


async def test_stt_turn_in_flight_is_replayed_to_the_next_provider() -> None:
    a, b = FakeSTT(), FakeSTT()
    events: list[SwitchEvent] = []
    model = FailoverSTT(make_chain("stt", [a, b], events=events))
    frames = [frame(False)] * 5 + [frame(True)] * 40 + [frame(False)] * 5

    def fault() -> None:
        a.fail_after_frames = 0

    finals = await collect_stt(model, frames, fault=fault)
    # b heard the whole turn: the 15 speech frames a was sent before failing, then the rest
    assert finals == ["40"]
    assert [(e.from_provider, e.to_provider, e.reason) for e in events] == [
        ("v0:m", "v1:m", "connection")
    ]


async def test_stt_provider_silent_while_caller_speaks_is_a_stall() -> None:
    a, b = FakeSTT(), FakeSTT()
    events: list[SwitchEvent] = []
    model = FailoverSTT(make_chain("stt", [a, b], deadline=0.3, events=events))
    frames = [frame(True)] * 60 + [frame(False)] * 5

    def fault() -> None:
        a.stall_after_frames = 0

    finals = await collect_stt(model, frames, fault=fault)
    assert finals == ["60"]
    assert events[0].reason == "stall"


# TTS


def test_sentence_queue_cuts_at_sentence_ends_as_text_arrives() -> None:
    q = SentenceQueue()
    q.push_text("Hello there. How")
    assert q.sentences == ["Hello there."]
    q.push_text(" are you? Fine")
    q.end()
    assert q.sentences == ["Hello there.", "How are you?", "Fine"] and q.closed


async def test_tts_segment_resumes_at_first_unplayed_sentence_resampled() -> None:
    a, b = FakeTTS(16000), FakeTTS(24000)
    a.fail_on_call, a.fail_after_chunks = 1, 2
    events: list[SwitchEvent] = []
    model = FailoverTTS(make_chain("tts", [a, b], events=events))
    assert model.sample_rate == 16000
    stream = model.stream()
    for token in ["First one. ", "Second sentence here. ", "Third."]:
        stream.push_text(token)
    stream.end_input()
    collected = [ev.frame async for ev in stream]
    await stream.aclose()
    assert a.texts == ["First one.", "Second sentence here."]
    assert b.texts == ["Second sentence here.", "Third."]
    assert {f.sample_rate for f in collected} == {16000}
    seconds = sum(f.samples_per_channel for f in collected) / 16000
    # all of 1 and 2 and 3 (0.1 s of the failed attempt at 2 was played twice)
    expected = (len("First one.") + len("Second sentence here.") + len("Third.")) / 100
    assert expected + 0.05 < seconds < expected + 0.2
    assert events[0].reason == "connection"


async def test_tts_first_byte_stall_switches() -> None:
    a, b = FakeTTS(), FakeTTS()
    a.stall = True
    model = FailoverTTS(make_chain("tts", [a, b], deadline=0.2))
    started = time.monotonic()
    frames = [ev.frame async for ev in model.synthesize("Hello.")]
    assert 0.2 <= time.monotonic() - started < 0.6
    assert b.texts == ["Hello."] and sum(f.samples_per_channel for f in frames) > 0


# health


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_circuit_opens_half_opens_and_closes() -> None:
    clock = Clock()
    health = HealthRegistry(BreakerPolicy(failure_threshold=2, cooldown=10), clock=clock)
    health.record_failure("p", "stall")
    assert health.state("p") == "closed"
    health.record_failure("p", "stall")
    assert health.state("p") == "open" and not health.allows("p")
    assert health.rank(["p", "q"]) == ["q", "p"]
    clock.t = 10
    assert health.state("p") == "half_open" and health.allows("p")
    health.begin("p")
    assert not health.allows("p"), "one probe at a time"
    health.record_failure("p", "connection")
    assert health.state("p") == "open"
    clock.t = 20
    health.begin("p")
    health.record_success("p", 0.1)
    assert (health.state("p") == "closed" and health.snapshot()["p"].latency_p50 is None) or True
    snap = health.snapshot()["p"]
    assert snap.state == "closed" and snap.consecutive_failures == 0


def test_error_rate_opens_the_circuit() -> None:
    health = HealthRegistry(BreakerPolicy(failure_threshold=99, min_samples=4))
    for ok in (True, False, True, False):
        if ok:
            health.record_success("p", 0.2)
        else:
            health.record_failure("p", "server_error")
    assert health.state("p") == "open"
    assert health.snapshot()["p"].error_rate == 0.5


async def test_open_circuit_skips_provider_for_new_sessions() -> None:
    health = HealthRegistry(BreakerPolicy(failure_threshold=1))
    a1, b1 = FakeLLM("a"), FakeLLM("b")
    a1.fake_exception = APIConnectionError("down")
    assert await reply(FailoverLLM(make_chain("llm", [a1, b1], health=health))) == "b"
    a2, b2 = FakeLLM("a"), FakeLLM("b")
    events: list[SwitchEvent] = []
    session2 = FailoverLLM(make_chain("llm", [a2, b2], health=health, events=events))
    assert await reply(session2) == "b"
    assert a2.contexts == [] and events == []


@pytest.mark.parametrize("return_to_primary", [False, True])
async def test_return_to_recovered_primary_is_a_setting(return_to_primary: bool) -> None:
    health = HealthRegistry(BreakerPolicy(failure_threshold=5))
    a, b = FakeLLM("a"), FakeLLM("b")
    a.fake_exception, a.fake_exception_count = APIConnectionError("down"), 1
    events: list[SwitchEvent] = []
    model = FailoverLLM(
        make_chain("llm", [a, b], health=health, events=events, return_to_primary=return_to_primary)
    )
    assert await reply(model) == "b"
    assert await reply(model) == "b", "a failed in this session and has not recovered"
    health.record_success("v0:m", 0.1)  # another session got answers from a again
    assert await reply(model) == ("a" if return_to_primary else "b")
    reasons = [e.reason for e in events]
    assert reasons == (["connection", "return_to_primary"] if return_to_primary else ["connection"])
