from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import APIError

from pipelines.audio import Audio, float_to_int16, resample
from pipelines.engines import EspeakEngine, PocketsphinxEngine
from pipelines.providers import PocketsphinxSTT

# espeak's "ember" voice (en-us+f2) is the one pocketsphinx's model hears best.
PHRASES = {
    "i would like to book an appointment for next week": {
        "would",
        "like",
        "appointment",
        "next",
        "week",
    },
    "please call me back tomorrow morning": {"please", "call", "back", "tomorrow", "morning"},
}


@pytest.fixture(scope="module")
def engine() -> PocketsphinxEngine:
    return PocketsphinxEngine()


@pytest.fixture(scope="module")
def speech() -> dict[str, Audio]:
    tts = EspeakEngine(voice="ember")
    return {text: tts.synthesize(text) for text in PHRASES}


def _hits(text: str, expected: set[str]) -> int:
    return len(expected & set(text.split()))


@pytest.mark.parametrize("text", list(PHRASES))
def test_transcribes_synthetic_speech(
    engine: PocketsphinxEngine, speech: dict[str, Audio], text: str
) -> None:
    audio = speech[text]
    heard = engine.transcribe(audio.samples, audio.sample_rate)
    assert _hits(heard, PHRASES[text]) >= 4, heard


def test_any_input_rate_is_resampled(engine: PocketsphinxEngine, speech: dict[str, Audio]) -> None:
    text = "please call me back tomorrow morning"
    audio = speech[text]
    at_48k = resample(audio.samples, audio.sample_rate, 48000)
    assert _hits(engine.transcribe(at_48k, 48000), PHRASES[text]) >= 4


def test_silence_and_empty_input_give_empty_text(engine: PocketsphinxEngine) -> None:
    assert engine.transcribe(np.zeros(16000, dtype=np.float32), 16000) == ""
    assert engine.transcribe(np.zeros(0, dtype=np.float32), 16000) == ""


def test_concurrent_calls_use_separate_decoders(
    engine: PocketsphinxEngine, speech: dict[str, Audio]
) -> None:
    texts = list(PHRASES) * 2
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(
            pool.map(lambda t: engine.transcribe(speech[t].samples, speech[t].sample_rate), texts)
        )
    for text, heard in zip(texts, results, strict=True):
        assert _hits(heard, PHRASES[text]) >= 4, heard


def test_stream_partial_grows_and_final_resets(
    engine: PocketsphinxEngine, speech: dict[str, Audio]
) -> None:
    text = "please call me back tomorrow morning"
    audio = speech[text]
    stream = engine.stream(audio.sample_rate)
    half = len(audio.samples) // 2
    step = audio.sample_rate // 10
    for start in range(0, half, step):
        stream.push(audio.samples[start : min(start + step, half)])
    early = stream.partial()
    for start in range(half, len(audio.samples), step):
        stream.push(audio.samples[start : start + step])
    final = stream.final()
    assert len(early.split()) < len(final.split())
    assert _hits(final, PHRASES[text]) >= 4, final
    assert stream.partial() == ""
    assert stream.final() == ""
    stream.close()
    with pytest.raises(RuntimeError):
        stream.push(audio.samples[:10])


def test_unsupported_language() -> None:
    with pytest.raises(ValueError, match="fr"):
        PocketsphinxEngine(language="fr")


def _frames(audio: Audio, rate: int = 48000, frame_ms: int = 20) -> list[rtc.AudioFrame]:
    pcm = float_to_int16(resample(audio.samples, audio.sample_rate, rate))
    n = rate * frame_ms // 1000
    return [
        rtc.AudioFrame(pcm[i : i + n].tobytes(), rate, 1, len(pcm[i : i + n]))
        for i in range(0, len(pcm), n)
    ]


@pytest.mark.parametrize("in_process", [False, True])
async def test_livekit_recognize(speech: dict[str, Audio], in_process: bool) -> None:
    text = "i would like to book an appointment for next week"
    stt = PocketsphinxSTT(in_process=in_process)
    assert stt.capabilities.streaming is False
    event = await stt.recognize(_frames(speech[text]))
    assert event.alternatives[0].language == "en"
    assert _hits(event.alternatives[0].text, PHRASES[text]) >= 4, event.alternatives[0].text
    await stt.aclose()


async def test_livekit_recognize_does_not_block_the_loop(speech: dict[str, Audio]) -> None:
    stt = PocketsphinxSTT()
    await stt.recognize(_frames(Audio(np.zeros(1600, dtype=np.float32), 16000)))  # spawn
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    frames = _frames(speech["i would like to book an appointment for next week"])
    await stt.recognize(frames)
    task.cancel()
    # a blocking decode lets the ticker run at most once; a non-blocking one, many times
    assert ticks >= 3
    await stt.aclose()


async def test_livekit_recovers_when_the_decoder_process_dies(speech: dict[str, Audio]) -> None:
    text = "please call me back tomorrow morning"
    stt = PocketsphinxSTT()
    first = await stt.recognize(_frames(speech[text]))
    child = stt._child
    assert child is not None and child._proc is not None
    child._proc.kill()
    await child._proc.wait()
    again = await stt.recognize(_frames(speech[text]))
    assert again.alternatives[0].text == first.alternatives[0].text
    await stt.aclose()
    assert child._proc is None


async def test_livekit_bad_language_is_non_retryable_api_error() -> None:
    stt = PocketsphinxSTT()
    frame = rtc.AudioFrame(bytes(3200), 16000, 1, 1600)
    with pytest.raises(APIError) as info:
        await stt.recognize([frame], language="de")
    assert info.value.retryable is False
    await stt.aclose()
