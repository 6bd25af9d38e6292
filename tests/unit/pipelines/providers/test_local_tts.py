from __future__ import annotations

import numpy as np
import pytest
from livekit.agents import APIConnectOptions, APIError

from pipelines.audio import rms_dbfs
from pipelines.engines import (
    ESPEAK_SAMPLE_RATE,
    FRIENDLY_VOICES,
    EspeakEngine,
    EspeakError,
    parse_wav_header,
    resolve_voice,
    voices,
    words_per_minute,
)
from pipelines.providers import EspeakTTS

TEXT = "please call me back tomorrow morning"


def test_synthesize_returns_speech_at_native_rate() -> None:
    audio = EspeakEngine().synthesize(TEXT)
    assert audio.sample_rate == ESPEAK_SAMPLE_RATE
    assert audio.samples.dtype == np.float32
    assert 1.0 < audio.duration < 5.0
    assert rms_dbfs(audio.samples) > -30.0
    assert np.abs(audio.samples).max() <= 1.0


def test_speaking_rate_scales_duration() -> None:
    engine = EspeakEngine()
    slow = engine.synthesize(TEXT, speaking_rate=0.7).duration
    normal = engine.synthesize(TEXT).duration
    fast = engine.synthesize(TEXT, speaking_rate=1.5).duration
    assert slow > normal * 1.2
    assert fast < normal * 0.8


def test_words_per_minute_is_clamped_and_rejects_non_positive() -> None:
    assert words_per_minute(1.0) == 175
    assert words_per_minute(0.1) == 80
    assert words_per_minute(10.0) == 450
    with pytest.raises(ValueError, match="speaking_rate"):
        words_per_minute(0.0)


def test_voices_change_the_audio() -> None:
    engine = EspeakEngine()
    us = engine.synthesize(TEXT, voice="en-us").samples
    female = engine.synthesize(TEXT, voice="en-us+f3").samples
    assert len(us) != len(female) or not np.allclose(us, female)


def test_voice_mapping() -> None:
    assert resolve_voice("en-gb") == "en-gb"
    assert resolve_voice("en-us+f3") == "en-us+f3"
    assert resolve_voice("ember") == FRIENDLY_VOICES["ember"]
    listed = voices()
    assert "ember" in listed and "en-us" in listed and "en-gb" in listed


@pytest.mark.parametrize("voice_id", ["bogus", "en-us+nosuchvariant", "rachel"])
def test_unknown_voice_names_voice_id_and_valid_ones(voice_id: str) -> None:
    with pytest.raises(ValueError) as info:
        resolve_voice(voice_id)
    message = str(info.value)
    assert "voice_id" in message and repr(voice_id) in message
    assert "en-us" in message and "ember" in message


def test_unknown_voice_rejected_at_construction() -> None:
    with pytest.raises(ValueError, match="voice_id"):
        EspeakEngine(voice="bogus")
    with pytest.raises(ValueError, match="voice_id"):
        EspeakTTS(voice="bogus")


def test_text_starting_with_dash_is_spoken_not_parsed_as_option() -> None:
    audio = EspeakEngine().synthesize("-v hello")
    assert audio.duration > 0.3


def test_stream_yields_the_same_audio_as_synthesize() -> None:
    engine = EspeakEngine()
    chunks = list(engine.stream(TEXT + ". " + TEXT, chunk_bytes=1024))
    whole = engine.synthesize(TEXT + ". " + TEXT)
    assert len(chunks) > 1
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), whole.samples)


def test_parse_wav_header_waits_for_bytes_and_rejects_garbage() -> None:
    header = EspeakEngine().stream(TEXT, chunk_bytes=64)
    first = next(header)
    assert first.sample_rate == ESPEAK_SAMPLE_RATE
    assert parse_wav_header(b"RIFF") is None
    with pytest.raises(EspeakError):
        parse_wav_header(b"NOPE" + bytes(40))


async def test_livekit_tts_collect() -> None:
    tts = EspeakTTS(voice="ember")
    frame = await tts.synthesize(TEXT).collect()
    assert frame.sample_rate == ESPEAK_SAMPLE_RATE
    assert frame.num_channels == 1
    assert 1.0 < frame.duration < 5.0
    await tts.aclose()


async def test_livekit_tts_update_options() -> None:
    tts = EspeakTTS()
    normal = (await tts.synthesize(TEXT).collect()).duration
    tts.update_options(speaking_rate=1.6, voice="en-gb")
    assert tts.voice == "en-gb"
    fast = (await tts.synthesize(TEXT).collect()).duration
    assert fast < normal * 0.8
    with pytest.raises(ValueError, match="voice_id"):
        tts.update_options(voice="bogus")
    assert tts.voice == "en-gb"
    await tts.aclose()


async def test_livekit_tts_failure_is_an_api_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipelines.providers.local_tts as local_tts

    tts = EspeakTTS()
    monkeypatch.setattr(
        local_tts, "espeak_command", lambda voice, rate: ["sh", "-c", "cat >/dev/null; exit 3"]
    )
    with pytest.raises(APIError):
        await tts.synthesize(TEXT, conn_options=APIConnectOptions(max_retry=0)).collect()
    await tts.aclose()
