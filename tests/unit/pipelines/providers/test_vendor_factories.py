"""The factories of the Speechify, Cartesia and Anthropic plugins and the platform LLM,
and how each takes a speaking rate."""

from __future__ import annotations

import pytest
from livekit.plugins.elevenlabs import VoiceSettings

from pipelines.errors import ConfigError
from pipelines.loopback.vendors.speechify import prosody_rate, read_input
from pipelines.providers import (
    ChatCompletionsLLM,
    ProviderSpec,
    build,
    speaking_rate_knob,
    vendor_speaking_rate,
)
from pipelines.providers.speechify_tts import SpeechifyTTS, prosody_ssml


def test_prosody_ssml_is_a_relative_rate_with_escaped_text() -> None:
    assert prosody_ssml("A & B", 1.2) == '<speak><prosody rate="+20%">A &amp; B</prosody></speak>'
    assert prosody_ssml("slow", 0.75) == '<speak><prosody rate="-25%">slow</prosody></speak>'
    assert prosody_ssml("<speak>x</speak>", 1.5) == "<speak>x</speak>"


def test_the_local_server_reads_back_what_the_plugin_sends() -> None:
    assert read_input(prosody_ssml("A & B", 1.2)) == ("A & B", pytest.approx(1.2))
    assert read_input("plain <b> text") == ("plain <b> text", 1.0)
    assert prosody_rate("x-slow") == 0.5 and prosody_rate("150%") == 1.5
    with pytest.raises(ValueError, match="prosody rate 'quick'"):
        prosody_rate("quick")


async def test_speechify_tts_takes_voice_and_rate() -> None:
    plugin = build(
        ProviderSpec(
            "tts", "speechify", "simba-3.2", api_key="k", voice="oliver", speaking_rate=1.3
        )
    )
    assert isinstance(plugin, SpeechifyTTS)
    assert plugin._opts.voice_id == "oliver" and plugin.speaking_rate == 1.3
    tokens = plugin._tokenizer.tokenize("Hello there. How are you?")
    assert tokens and all(t.startswith('<speak><prosody rate="+30%">') for t in tokens)
    await plugin.aclose()
    plain = build(ProviderSpec("tts", "speechify", "simba-3.2", api_key="k", speaking_rate=1.0))
    assert plain.speaking_rate is None
    assert plain._tokenizer.tokenize("Hello there.") == ["Hello there."]
    await plain.aclose()


def test_the_platform_llm_needs_its_base_url() -> None:
    with pytest.raises(ConfigError, match="SPEECHIFY_LLM_BASE_URL"):
        build(ProviderSpec("llm", "speechify", "kimi-k2.6", api_key="k"))
    kimi = build(
        ProviderSpec("llm", "speechify", "kimi-k2.6", api_key="k", base_url="http://127.0.0.1:1/v1")
    )
    assert isinstance(kimi, ChatCompletionsLLM) and kimi.model == "kimi-k2.6"


async def test_anthropic_llm_takes_model_and_sampling() -> None:
    claude = build(
        ProviderSpec(
            "llm",
            "anthropic",
            "claude-haiku-4-5",
            api_key="k",
            base_url="http://127.0.0.1:1",
            temperature=0.3,
            max_tokens=99,
        )
    )
    assert claude.model == "claude-haiku-4-5" and claude.provider == "127.0.0.1:1"
    assert claude._opts.temperature == 0.3 and claude._opts.max_tokens == 99
    await claude.aclose()


async def test_cartesia_speed_only_where_the_plugin_sends_it() -> None:
    three = build(ProviderSpec("tts", "cartesia", "sonic-3", api_key="k", speaking_rate=1.2))
    two = build(ProviderSpec("tts", "cartesia", "sonic-2", api_key="k", speaking_rate=1.2))
    assert three._opts.speed == 1.2 and two._opts.speed is None
    assert three.sample_rate == 24000
    assert speaking_rate_knob("cartesia", "sonic-3")
    assert not speaking_rate_knob("cartesia", "sonic-2")
    assert all(speaking_rate_knob(v, "m") for v in ("elevenlabs", "openai", "speechify", "local"))
    await three.aclose()
    await two.aclose()


async def test_speaking_rate_reaches_elevenlabs_and_openai_within_their_ranges() -> None:
    eleven = build(
        ProviderSpec("tts", "elevenlabs", "eleven_flash_v2_5", api_key="k", speaking_rate=1.5)
    )
    assert eleven._opts.voice_settings.speed == 1.2  # ElevenLabs accepts 0.7-1.2
    plain = build(ProviderSpec("tts", "elevenlabs", "eleven_flash_v2_5", api_key="k"))
    assert not isinstance(plain._opts.voice_settings, VoiceSettings)  # the voice's own
    openai = build(ProviderSpec("tts", "openai", "tts-1", api_key="k", speaking_rate=1.5))
    assert openai._opts.speed == 1.5
    assert vendor_speaking_rate("cartesia", "sonic-3", 3.0) == 2.0
    assert vendor_speaking_rate("cartesia", "sonic-2", 1.5) is None
    for plugin in (eleven, plain, openai):
        await plugin.aclose()
