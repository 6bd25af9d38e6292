"""The real LiveKit vendor plugins against the local wire servers, over real sockets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from livekit import rtc
from livekit.agents import (
    APIConnectionError,
    APIConnectOptions,
    APIError,
    APIStatusError,
    APITimeoutError,
    llm,
    utils,
)
from livekit.agents import stt as lk_stt
from livekit.plugins import deepgram, elevenlabs, openai

from pipelines.audio import Audio, float_to_int16, int16_to_float, resample, rms_dbfs
from pipelines.engines import EspeakEngine
from pipelines.loopback import (
    DeepgramServer,
    ElevenLabsServer,
    EnergySegmenter,
    Knobs,
    OpenAIServer,
    ScriptedReply,
    ToolCall,
)
from worker.settings import REPO_ROOT

pytestmark = pytest.mark.integration

UTTERANCE = "my name is john and i live in london"
NO_RETRY = APIConnectOptions(max_retry=0, timeout=5.0)
ONE_RETRY = APIConnectOptions(max_retry=1, retry_interval=0.0, timeout=5.0)


@pytest.fixture(scope="module")
def utterance_16k() -> np.ndarray:
    """The utterance at 16 kHz, int16, with 0.5 s of silence before and 1 s after."""
    audio = EspeakEngine().synthesize(UTTERANCE)
    speech = resample(audio.samples, audio.sample_rate, 16000)
    silence_before, silence_after = np.zeros(8000, np.float32), np.zeros(16000, np.float32)
    return float_to_int16(np.concatenate([silence_before, speech, silence_after]))


@pytest_asyncio.fixture(loop_scope="function")
async def http() -> AsyncIterator[None]:
    """The plugins' shared aiohttp session, bound to the test's own event loop."""
    async with utils.http_context.open():
        yield


def frames(pcm: np.ndarray, rate: int = 16000, ms: int = 20) -> list[rtc.AudioFrame]:
    step = rate * ms // 1000
    return [
        rtc.AudioFrame(pcm[i : i + step].tobytes(), rate, 1, len(pcm[i : i + step]))
        for i in range(0, len(pcm), step)
    ]


def heard(text: str) -> bool:
    """pocketsphinx hears espeak poorly (and pooled decoders adapt between calls), so a
    transcript counts when it shares at least two words with the utterance."""
    return len(set(text.lower().strip(".").split()) & set(UTTERANCE.split())) >= 2


def frames_audio(collected: list[rtc.AudioFrame]) -> Audio:
    pcm = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in collected])
    return Audio(int16_to_float(pcm), collected[0].sample_rate)


# energy segmenter (the Deepgram server's endpointing)


def test_segmenter_cuts_tone_bursts_at_pauses() -> None:
    rate = 16000
    t = np.arange(rate // 2) / rate
    tone = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    short_gap, long_gap = np.zeros(rate // 10, np.float32), np.zeros(rate, np.float32)
    signal_ = np.concatenate([long_gap, tone, short_gap, tone, long_gap, tone, long_gap])
    seg = EnergySegmenter(rate, silence_ms=400)
    events = []
    for i in range(0, len(signal_), 333):  # odd chunk size: frames straddle pushes
        events += seg.push(signal_[i : i + 333])
    assert [e.kind for e in events] == ["start", "end", "start", "end"]
    assert abs(events[0].sample - rate) < 0.03 * rate
    # the 100 ms gap is bridged: the first utterance ends after the second burst
    assert abs(events[1].sample - (rate + rate + rate // 10)) < 0.03 * rate
    seg.reset()
    assert seg.push(np.zeros(rate, np.float32)) == [] and seg.position == rate


# Deepgram


async def test_deepgram_live_stream_yields_final_transcript(
    http: None, utterance_16k: np.ndarray
) -> None:
    async with DeepgramServer() as server:
        stt = deepgram.STT(api_key="test", base_url=f"{server.url}/v1/listen")
        stream = stt.stream()
        for frame in frames(utterance_16k):
            stream.push_frame(frame)
        stream.end_input()
        seen: list[lk_stt.SpeechEvent] = []
        async with asyncio.timeout(30):
            async for event in stream:
                seen.append(event)
                if event.type == lk_stt.SpeechEventType.END_OF_SPEECH:
                    break
            # The server cut the utterance at the trailing silence, maybe before the
            # plugin's send loop got to its Finalize (sent after the last audio): wait for
            # it before closing the stream, which would cancel that loop.
            (record,) = server.records("/v1/listen")
            while "Finalize" not in record.control:
                await asyncio.sleep(0.02)
        await stream.aclose()
        types = [e.type for e in seen]
        assert lk_stt.SpeechEventType.START_OF_SPEECH in types
        finals = [e for e in seen if e.type == lk_stt.SpeechEventType.FINAL_TRANSCRIPT]
        assert len(finals) == 1
        text = finals[0].alternatives[0].text.lower()
        assert heard(text)
        words = finals[0].alternatives[0].words or []
        assert [w.lower().strip(".") for w in words] == text.strip(".").split()
        # speech starts ~0.5 s into the stream; Deepgram times are stream-relative
        assert 0.2 < finals[0].alternatives[0].start_time < 0.7

        assert record.websocket and record.status == 101
        assert record.headers["Authorization"] == "<redacted>"
        assert record.query["encoding"] == "linear16" and record.query["sample_rate"] == "16000"
        assert record.audio_bytes > 0.8 * utterance_16k.nbytes
        assert "Finalize" in record.control


async def test_deepgram_prerecorded_recognize(http: None, utterance_16k: np.ndarray) -> None:
    async with DeepgramServer() as server:
        stt = deepgram.STT(api_key="test", base_url=f"{server.url}/v1/listen")
        event = await stt.recognize(frames(utterance_16k), conn_options=NO_RETRY)
        assert event.type == lk_stt.SpeechEventType.FINAL_TRANSCRIPT
        assert heard(event.alternatives[0].text)
        (record,) = server.requests
        assert record.method == "POST" and record.audio_bytes > utterance_16k.nbytes


async def test_deepgram_rejected_handshake_is_retried_then_raises(
    http: None, utterance_16k: np.ndarray
) -> None:
    async with DeepgramServer(knobs=Knobs(fail_with_status=503)) as server:
        stt = deepgram.STT(api_key="test", base_url=f"{server.url}/v1/listen")
        stream = stt.stream(conn_options=ONE_RETRY)
        for frame in frames(utterance_16k[:3200]):
            stream.push_frame(frame)
        with pytest.raises(APIError):
            async with asyncio.timeout(10):
                async for _ in stream:
                    pass
        await stream.aclose()
        assert [r.status for r in server.requests] == [503, 503]
        assert all(r.fault == "fail_with_status" for r in server.requests)


async def test_deepgram_dropped_connection_reconnects(
    http: None, utterance_16k: np.ndarray
) -> None:
    # the first session is dropped at its first message (SpeechStarted); the audio it took
    # is lost with it, as with a real provider, so the caller speaks again after the retry
    async with DeepgramServer(knobs=Knobs(close_after=0)) as server:
        stt = deepgram.STT(api_key="test", base_url=f"{server.url}/v1/listen")
        stream = stt.stream(conn_options=ONE_RETRY)
        for frame in frames(utterance_16k[:16000]):
            stream.push_frame(frame)
        async with asyncio.timeout(10):
            while not any(r.fault == "close" for r in server.requests):
                await asyncio.sleep(0.01)
            server.knobs.clear()
            while len(server.requests) < 2:
                await asyncio.sleep(0.01)
        for frame in frames(utterance_16k):
            stream.push_frame(frame)
        stream.end_input()
        finals = []
        async with asyncio.timeout(30):
            async for event in stream:
                if event.type == lk_stt.SpeechEventType.FINAL_TRANSCRIPT:
                    finals.append(event.alternatives[0].text.lower())
                    break
        await stream.aclose()
        assert len(finals) == 1 and heard(finals[0])
        first, second = server.requests
        assert first.fault == "close" and first.messages_sent == 0 and first.audio_bytes > 0
        assert second.fault is None and second.messages_sent > 0


# ElevenLabs


async def test_elevenlabs_stream_over_multi_stream_input(http: None) -> None:
    async with ElevenLabsServer() as server:
        tts = elevenlabs.TTS(
            api_key="test", base_url=f"{server.url}/v1", voice_id="en-us", encoding="pcm_24000"
        )
        stream = tts.stream()
        stream.push_text("Hello there, how are you today? ")
        stream.push_text("I am fine.")
        stream.end_input()
        collected = [ev.frame async for ev in stream]
        await tts.aclose()
        audio = frames_audio(collected)
        assert audio.sample_rate == 24000
        assert audio.duration > 1.5
        assert rms_dbfs(audio.samples) > -30
        (record,) = server.records("multi-stream-input")
        assert record.path == "/v1/text-to-speech/en-us/multi-stream-input"
        assert record.query["output_format"] == "pcm_24000"
        assert record.headers["xi-api-key"] == "<redacted>"
        assert "Hello there, how are you today?" in record.text and "I am fine." in record.text
        assert "close_context" in record.control


async def test_elevenlabs_contexts_on_one_socket_do_not_queue_behind_each_other(
    http: None,
) -> None:
    """A context the client moved on from (a discarded preemptive reply) keeps being
    synthesized, as on ElevenLabs, but the next context's audio does not wait for it."""
    knobs = Knobs(first_response_delay=0.2, response_delay=0.2)
    async with ElevenLabsServer(knobs=knobs) as server:
        tts = elevenlabs.TTS(
            api_key="test", base_url=f"{server.url}/v1", voice_id="en-us", encoding="pcm_24000"
        )
        long_reply, short_reply = tts.stream(), tts.stream()
        for sentence in ("One two three.", "Four five six.", "Seven eight nine.", "Ten."):
            long_reply.push_text(sentence + " ")
        long_reply.end_input()
        short_reply.push_text("Yes.")
        short_reply.end_input()

        started = time.monotonic()

        async def arrivals(stream: object) -> list[float]:
            return [time.monotonic() async for _ in stream]  # type: ignore[attr-defined]

        long_times, short_times = await asyncio.gather(arrivals(long_reply), arrivals(short_reply))
        await tts.aclose()
        assert long_times and short_times
        assert len(server.records("multi-stream-input")) == 1  # one shared socket
        # every chunk is paced 0.2 s: the long reply's audio takes seconds, the short
        # one's first audio comes one delay after its text, not behind the long one's
        assert long_times[-1] - started > 1.0
        assert short_times[0] - started < 0.6


async def test_elevenlabs_synthesize_over_http_stream(http: None) -> None:
    async with ElevenLabsServer(voice_map={"rachel": "en-gb"}) as server:
        tts = elevenlabs.TTS(
            api_key="test", base_url=f"{server.url}/v1", voice_id="rachel", encoding="pcm_16000"
        )
        collected = [ev.frame async for ev in tts.synthesize("Good morning.")]
        audio = frames_audio(collected)
        assert audio.sample_rate == 16000 and 0.4 < audio.duration < 3
        assert rms_dbfs(audio.samples) > -30
        (record,) = server.requests
        assert record.path == "/v1/text-to-speech/rachel/stream" and record.text == "Good morning."


async def test_elevenlabs_stall_times_out_the_plugin(http: None) -> None:
    async with ElevenLabsServer(knobs=Knobs(stall_after=1)) as server:
        tts = elevenlabs.TTS(
            api_key="test", base_url=f"{server.url}/v1", voice_id="en-us", encoding="pcm_24000"
        )
        stream = tts.stream(conn_options=APIConnectOptions(max_retry=0, timeout=1.0))
        stream.push_text("This sentence is long enough to need several audio chunks.")
        stream.end_input()
        started = time.monotonic()
        with pytest.raises(APIError):
            async for _ in stream:
                pass
        assert time.monotonic() - started < 5
        await tts.aclose()
        assert server.requests[0].fault == "stall" and server.requests[0].messages_sent == 1


async def test_elevenlabs_rejected_handshake_raises_status_error(http: None) -> None:
    async with ElevenLabsServer(knobs=Knobs(fail_with_status=401)) as server:
        tts = elevenlabs.TTS(
            api_key="bad", base_url=f"{server.url}/v1", voice_id="en-us", encoding="pcm_24000"
        )
        stream = tts.stream(conn_options=NO_RETRY)
        stream.push_text("Hello.")
        stream.end_input()
        with pytest.raises(APIStatusError) as info:
            async for _ in stream:
                pass
        await tts.aclose()
        assert info.value.status_code == 401
        assert [r.status for r in server.requests] == [401]


# OpenAI-compatible


def _chat_ctx() -> llm.ChatContext:
    ctx = llm.ChatContext.empty()
    ctx.add_message(role="user", content="Hi")
    return ctx


async def _chat_text(model: openai.LLM, conn: APIConnectOptions = NO_RETRY) -> str:
    text = ""
    async with model.chat(chat_ctx=_chat_ctx(), conn_options=conn) as stream:
        async for chunk in stream:
            if chunk.delta and chunk.delta.content:
                text += chunk.delta.content
    return text


async def test_openai_scripted_reply_with_fixed_delays() -> None:
    knobs = Knobs(first_response_delay=0.3, response_delay=0.02)
    async with OpenAIServer(reply="One two three four.", knobs=knobs) as server:
        model = openai.LLM(base_url=f"{server.url}/v1", api_key="test", model="local-scripted")
        started = time.monotonic()
        first: float | None = None
        text = ""
        async with model.chat(chat_ctx=_chat_ctx(), conn_options=NO_RETRY) as stream:
            async for chunk in stream:
                if chunk.delta and chunk.delta.content:
                    first = first if first is not None else time.monotonic() - started
                    text += chunk.delta.content
        assert text == "One two three four."
        assert first is not None and 0.3 <= first < 1.0
        # 4 tokens + finish + usage events, each after the per-token delay but the first
        assert time.monotonic() - started >= 0.3 + 5 * 0.02
        (record,) = server.requests
        assert record.body["messages"][-1] == {"role": "user", "content": "Hi"}
        assert record.body["stream"] is True and record.messages_sent == 6
        assert record.headers["Authorization"] == "<redacted>"


async def test_openai_injected_500_is_retried_and_logged() -> None:
    async with OpenAIServer(reply="ok", knobs=Knobs(fail_with_status=500, fail_count=1)) as server:
        model = openai.LLM(base_url=f"{server.url}/v1", api_key="test", model="m")
        assert await _chat_text(model, ONE_RETRY) == "ok"
        assert [(r.status, r.fault) for r in server.requests] == [
            (500, "fail_with_status"),
            (200, None),
        ]
        server.knobs.fail_with_status, server.knobs.fail_count = 500, None
        with pytest.raises(APIStatusError) as info:
            await _chat_text(model)
        assert info.value.status_code == 500


async def test_openai_connection_dropped_mid_stream() -> None:
    async with OpenAIServer(reply="one two three four five", knobs=Knobs(close_after=2)) as srv:
        model = openai.LLM(base_url=f"{srv.url}/v1", api_key="test", model="m")
        received: list[str] = []
        with pytest.raises(APIConnectionError):
            async with model.chat(chat_ctx=_chat_ctx(), conn_options=NO_RETRY) as stream:
                async for chunk in stream:
                    if chunk.delta and chunk.delta.content:
                        received.append(chunk.delta.content)
        assert "".join(received) == "one two"
        assert srv.requests[0].fault == "close"


async def test_openai_stalled_stream_times_out() -> None:
    async with OpenAIServer(reply="one two three four", knobs=Knobs(stall_after=2)) as srv:
        model = openai.LLM(base_url=f"{srv.url}/v1", api_key="test", model="m")
        started = time.monotonic()
        with pytest.raises(APITimeoutError):
            await _chat_text(model, APIConnectOptions(max_retry=0, timeout=1.0))
        assert 1.0 <= time.monotonic() - started < 4
        assert srv.requests[0].fault == "stall" and srv.requests[0].messages_sent == 2


async def test_openai_streams_scripted_tool_call() -> None:
    reply = ScriptedReply(tool_calls=(ToolCall("end_call", {"reason": "done"}),))
    async with OpenAIServer(reply=reply) as server:
        model = openai.LLM(base_url=f"{server.url}/v1", api_key="test", model="m")
        calls = []
        async with model.chat(chat_ctx=_chat_ctx(), conn_options=NO_RETRY) as stream:
            async for chunk in stream:
                if chunk.delta and chunk.delta.tool_calls:
                    calls.extend(chunk.delta.tool_calls)
        assert [(c.name, json.loads(c.arguments)) for c in calls] == [
            ("end_call", {"reason": "done"})
        ]


async def test_openai_relays_to_upstream_with_knobs() -> None:
    async with OpenAIServer(reply="from upstream", models=("gemma",)) as upstream:
        relay = OpenAIServer(
            upstream=f"{upstream.url}/v1", upstream_model="gemma", knobs=Knobs(response_delay=0.05)
        )
        async with relay:
            model = openai.LLM(base_url=f"{relay.url}/v1", api_key="test", model="anything")
            started = time.monotonic()
            assert await _chat_text(model) == "from upstream"
            assert time.monotonic() - started >= 3 * 0.05
        assert upstream.requests[0].body["model"] == "gemma"
        assert relay.requests[0].messages_sent == upstream.requests[0].messages_sent


async def test_openai_speech_and_transcription_round_trip(http: None) -> None:
    async with OpenAIServer() as server:
        tts = openai.TTS(
            base_url=f"{server.url}/v1", api_key="test", voice="en-us", response_format="pcm"
        )
        collected = [ev.frame async for ev in tts.synthesize(UTTERANCE)]
        await tts.aclose()
        audio = frames_audio(collected)
        assert audio.sample_rate == 24000 and audio.duration > 1.5
        stt = openai.STT(base_url=f"{server.url}/v1", api_key="test", model="whisper-1")
        pcm = float_to_int16(audio.samples)
        event = await stt.recognize(frames(pcm, 24000), conn_options=NO_RETRY)
        assert heard(event.alternatives[0].text)
        speech, transcription = server.requests
        assert speech.path == "/v1/audio/speech" and speech.text == UTTERANCE
        assert transcription.path == "/v1/audio/transcriptions" and transcription.audio_bytes > 0


# CLI


def test_cli_serves_until_sigterm_and_writes_the_log(tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.loopback",
            "openai",
            "--port=0",
            "--reply=pong",
            f"--log={log}",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        assert proc.stdout is not None
        banner = json.loads(proc.stdout.readline())
        assert banner["vendor"] == "openai"
        request = urllib.request.Request(
            f"{banner['url']}/v1/chat/completions",
            data=json.dumps({"messages": [{"role": "user", "content": "ping"}]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            reply = json.load(response)
        assert reply["choices"][0]["message"]["content"] == "pong"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    (record,) = json.loads(log.read_text())
    assert record["path"] == "/v1/chat/completions" and record["status"] == 200


def test_cli_rejects_bad_voice_map() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.loopback", "elevenlabs", "--voice-map", "nope"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "ID=VOICE" in result.stderr
