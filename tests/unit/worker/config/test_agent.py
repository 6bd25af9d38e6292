"""Agent record validation (``worker.config.agent``): ranges, cross-field rules, spellings.

Each test quotes the reference sentence (``/work/shared/reference/00N_*``) it checks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.errors import ConfigError
from worker.config import AgentConfig, parse_agent, snake

VALID_ID = "agent_01JC0FRNTDESK0000000000000"


def rejected(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_agent(data)
    return str(info.value)


# --- ranges ---------------------------------------------------------------------------

RANGES = [
    # (field, low, high, quote)
    ("temperature", 0.0, 1.0, "temperature double: 0.0..1.0"),
    ("response_delay_seconds", 0.0, 5.0, "response_delay_seconds: Range 0.0..5.0"),
    ("tts_playback_rate", 0.5, 3.0, "tts_playback_rate: Range 0.5..3.0"),
    ("tts_speaking_rate", 0.5, 2.0, "tts_speaking_rate: 0.5 = half speed, 2.0 = double"),
    ("background_noise_volume", 0.0, 1.0, "background_noise_volume: (0..1)"),
    ("interruption_threshold", 0.0, 1.0, "interruption_threshold number: 0–1"),
]


@pytest.mark.parametrize(("field", "lo", "hi", "quote"), RANGES)
def test_range_bounds_are_inclusive(field: str, lo: float, hi: float, quote: str) -> None:
    """Both documented bounds are accepted: {quote}."""
    assert getattr(parse_agent({field: lo}), field) == lo
    assert getattr(parse_agent({field: hi}), field) == hi


@pytest.mark.parametrize(("field", "lo", "hi", "quote"), RANGES)
def test_range_outside_is_rejected_naming_field_and_range(
    field: str, lo: float, hi: float, quote: str
) -> None:
    """Just outside either bound is a ConfigError naming the field and the range."""
    for value in (lo - 0.01, hi + 0.01):
        message = rejected({field: value})
        assert f"{field}: must be between {lo} and {hi}" in message


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_range_rejects_non_finite_numbers(value: float) -> None:
    assert "tts_playback_rate: must be between" in rejected({"tts_playback_rate": value})


def test_inactivity_timeout_zero_or_more() -> None:
    """'inactivity_timeout_seconds integer >=0 ... Negative values are rejected.'"""
    assert parse_agent({"inactivity_timeout_seconds": 0}).inactivity_timeout_seconds == 0
    assert parse_agent({"inactivity_timeout_seconds": 3600}).inactivity_timeout_seconds == 3600
    assert "inactivity_timeout_seconds: must be 0 or more" in rejected(
        {"inactivity_timeout_seconds": -1}
    )


def test_inactivity_timeout_must_be_an_integer() -> None:
    """'inactivity_timeout_seconds integer': a fractional value is refused."""
    assert "inactivity_timeout_seconds" in rejected({"inactivity_timeout_seconds": 1.5})


def test_null_range_fields_mean_default() -> None:
    """'tts_playback_rate double or null ... null means no post-process.'"""
    agent = parse_agent({"tts_playback_rate": None, "response_delay_seconds": None})
    assert agent.tts_playback_rate is None
    assert agent.response_delay_seconds is None


def test_every_bad_field_is_named_once() -> None:
    message = rejected({"temperature": 2, "tts_playback_rate": 9})
    assert "temperature: must be between 0.0 and 1.0" in message
    assert "tts_playback_rate: must be between 0.5 and 3.0" in message


def test_error_names_the_source() -> None:
    with pytest.raises(ConfigError, match=r"^agents/x\.json: temperature"):
        parse_agent({"temperature": 3}, source="agents/x.json")


def test_error_never_echoes_the_rejected_value() -> None:
    """Secrets are write-only: an error about a bad value must not print the value."""
    message = rejected({"llm_provider": "openai", "llm_model": "m", "llm_api_key": "sk-SECRET"})
    assert "sk-SECRET" not in message


def test_not_an_object_is_rejected() -> None:
    with pytest.raises(ConfigError, match="expected a JSON object"):
        parse_agent(["not", "an", "agent"])


# --- llm provider rules ---------------------------------------------------------------


def test_llm_provider_requires_llm_model() -> None:
    """'When set, must be paired with a non-empty llm_model; mixing a populated provider with
    an empty model is rejected as a 400.'"""
    assert "llm_model: required when llm_provider is set" in rejected({"llm_provider": "openai"})
    assert "llm_model: required" in rejected({"llm_provider": "openai", "llm_model": ""})
    agent = parse_agent({"llm_provider": "openai", "llm_model": "gpt-4o-mini"})
    assert (agent.llm_provider, agent.llm_model) == ("openai", "gpt-4o-mini")


def test_llm_model_alone_is_allowed() -> None:
    """'Leave empty (or omit both llm_provider and llm_model) to use the platform default';
    the calls API lets ``llm_model`` 'Override the default LLM model' on its own."""
    assert parse_agent({"llm_model": "gpt-4.1"}).llm_provider is None


def test_custom_requires_llm_base_url() -> None:
    """'custom additionally requires llm_base_url.'"""
    message = rejected({"llm_provider": "custom", "llm_model": "m"})
    assert "llm_base_url: required when llm_provider is custom" in message
    agent = parse_agent(
        {
            "llm_provider": "custom",
            "llm_model": "m",
            "llm_base_url": "http://127.0.0.1:8088/v1",
            "llm_api_key": "k",
            "llm_extra_body": {"top_k": 4},
        }
    )
    assert agent.llm_extra_body == {"top_k": 4}


def test_custom_without_key_is_allowed() -> None:
    """'llm_api_key ... Optional even for custom (keyless endpoints)'."""
    agent = parse_agent({"llm_provider": "custom", "llm_model": "m", "llm_base_url": "http://h"})
    assert agent.llm_api_key is None


@pytest.mark.parametrize("provider", [None, "openai", "speechify"])
@pytest.mark.parametrize(
    ("field", "value"),
    [("llm_base_url", "http://h/v1"), ("llm_api_key", "k"), ("llm_extra_body", {"a": 1})],
)
def test_custom_only_fields_rejected_for_other_providers(
    provider: str | None, field: str, value: Any
) -> None:
    """'llm_base_url: Required when llm_provider is custom, rejected otherwise.'
    'llm_api_key: rejected for any other provider.' 'llm_extra_body: Valid only when
    llm_provider is custom.'"""
    data: dict[str, Any] = {field: value}
    if provider:
        data |= {"llm_provider": provider, "llm_model": "m"}
    assert f"{field}: only valid when llm_provider is custom" in rejected(data)


def test_unknown_llm_provider_is_rejected() -> None:
    """'llm_provider enum': only the documented values."""
    assert "llm_provider" in rejected({"llm_provider": "acme", "llm_model": "m"})


# --- id -------------------------------------------------------------------------------


def test_id_format_crockford_base32() -> None:
    """'Prefixed wire identifier (agent_<26 char Crockford base32>).'"""
    assert parse_agent({"id": VALID_ID}).id == VALID_ID
    assert parse_agent({}).id is None  # the id is only checked where one is given


@pytest.mark.parametrize(
    "bad",
    [
        "agent_01JC0FRNTDESK000000000000",  # 25 characters
        "agent_01JC0FRNTDESK00000000000000",  # 27
        "agent_01JC0FRNTDESK000000000000I",  # I is not Crockford base32
        "agent_01JC0FRNTDESK000000000000L",
        "agent_01JC0FRNTDESK000000000000O",
        "agent_01JC0FRNTDESK000000000000U",
        "01JC0FRNTDESK0000000000000",  # no prefix
        "agent-01JC0FRNTDESK0000000000000",
        "0b2c9c0e-7a8d-4b1e-9a55-0c3a1f6e2d11",  # 'legacy UUID path parameters are rejected'
        VALID_ID + "\n",  # a trailing newline must not slip past the pattern
        " " + VALID_ID,
    ],
)
def test_bad_id_is_rejected(bad: str) -> None:
    assert "id: must be agent_ followed by 26 Crockford base32" in rejected({"id": bad})


# --- spellings ------------------------------------------------------------------------

SPELLINGS = [
    # camelCase / other document's spelling, snake_case canonical, value, attribute
    ({"systemPrompt": "Be brief."}, {"prompt": "Be brief."}, "prompt"),
    ({"system_prompt": "Be brief."}, {"prompt": "Be brief."}, "prompt"),
    ({"firstMessage": "Hi"}, {"first_message": "Hi"}, "first_message"),
    ({"voice": "ember"}, {"voice_id": "ember"}, "voice_id"),
    ({"voiceId": "ember"}, {"voice_id": "ember"}, "voice_id"),
    ({"intent": {"language": "es"}}, {"language": "es"}, "language"),
    ({"intent": {"optimizeFor": "cost"}}, {"optimize_for": "cost"}, "optimize_for"),
    ({"llmOptions": {"temperature": 0.2}}, {"temperature": 0.2}, "temperature"),
    ({"llmOptions": {"maxTokens": 64}}, {"max_tokens": 64}, "max_tokens"),
    ({"llmOptions": {"model": "gpt-4.1"}}, {"llm_model": "gpt-4.1"}, "llm_model"),
    ({"ttsPlaybackRate": 1.2}, {"tts_playback_rate": 1.2}, "tts_playback_rate"),
    ({"ttsSpeakingRate": 1.1}, {"tts_speaking_rate": 1.1}, "tts_speaking_rate"),
    ({"responseDelaySeconds": 0.3}, {"response_delay_seconds": 0.3}, "response_delay_seconds"),
    (
        {"inactivityTimeoutSeconds": 9},
        {"inactivity_timeout_seconds": 9},
        "inactivity_timeout_seconds",
    ),
    ({"backgroundNoiseVolume": 0.2}, {"background_noise_volume": 0.2}, "background_noise_volume"),
    ({"interruptionThreshold": 0.7}, {"interruption_threshold": 0.7}, "interruption_threshold"),
    ({"navigatorMode": True}, {"navigator_mode": True}, "navigator_mode"),
    ({"sttOverride": "flux"}, {"stt_override": "flux"}, "stt_override"),
    ({"memoryEnabled": True}, {"memory_enabled": True}, "memory_enabled"),
]


@pytest.mark.parametrize(("other", "canonical", "attr"), SPELLINGS)
def test_both_spellings_give_the_same_agent(
    other: dict[str, Any], canonical: dict[str, Any], attr: str
) -> None:
    """DESIGN: 'The agent model accepts both spellings found in the reference documents
    (camelCase systemPrompt/stackPreferences, snake_case prompt/response_delay_seconds)'."""
    assert getattr(parse_agent(other), attr) == getattr(parse_agent(canonical), attr)
    assert getattr(parse_agent(other), attr) == next(iter(canonical.values()))


def test_camel_case_ranges_are_validated_too() -> None:
    assert "tts_playback_rate: must be between 0.5 and 3.0" in rejected({"ttsPlaybackRate": 4})
    assert "temperature: must be between" in rejected({"llmOptions": {"temperature": 1.5}})


def test_stack_preferences_spelling() -> None:
    """'stackPreferences — optional per-layer allowlists' (000_*) in either spelling."""
    camel = parse_agent({"stackPreferences": {"allowedProviders": {"stt": ["deepgram"]}}})
    snake_ = parse_agent({"stack_preferences": {"allowed_providers": {"stt": ["deepgram"]}}})
    assert camel.allowed_providers == snake_.allowed_providers
    assert camel.allowed_providers.for_layer("stt") == ("deepgram",)
    assert camel.allowed_providers.for_layer("llm") is None


def test_same_value_in_two_spellings_is_fine_different_values_are_an_error() -> None:
    assert parse_agent({"systemPrompt": "a", "prompt": "a"}).prompt == "a"
    assert "prompt: given as prompt and system_prompt" in rejected(
        {"prompt": "a", "system_prompt": "b"}
    )


def test_null_in_one_spelling_does_not_hide_the_other() -> None:
    assert parse_agent({"prompt": None, "systemPrompt": "x"}).prompt == "x"


def test_null_for_a_field_with_a_default_means_the_default() -> None:
    """GET returns every field, some as null: null is 'not set', not a type error."""
    agent = parse_agent({"prompt": None, "language": None, "navigator_mode": None})
    assert (agent.prompt, agent.language, agent.navigator_mode) == ("", "en", False)
    assert "prompt" not in agent.model_fields_set


def test_unknown_fields_are_ignored() -> None:
    """DESIGN: 'keeps unknown fields out of decisions'."""
    agent = parse_agent(
        {
            "prompt": "p",
            "object": "agent",
            "widget_config": {"buttonText": "Talk"},
            "created": 1712345678,
            "phone_numbers": ["+14155559999"],
            "llm_api_key_set": True,
            "totallyUnknown": [1, 2, 3],
        }
    )
    assert agent.prompt == "p"
    assert not hasattr(agent, "widget_config")
    assert not hasattr(agent, "totally_unknown")


def test_snake_converts_camel_case() -> None:
    assert snake("systemPrompt") == "system_prompt"
    assert snake("responseDelaySeconds") == "response_delay_seconds"
    assert snake("tts_playback_rate") == "tts_playback_rate"


# --- nested objects -------------------------------------------------------------------


def test_amd_actions_in_every_spelling() -> None:
    """'(human, uncertain, machine-vm, machine-ivr, machine-unavailable) and dispatches per
    category to the configured action' — nested or flat, dashed, snake or camel keys."""
    for amd in (
        {"actions": {"machine-vm": "hangup"}},
        {"actions": {"machine_vm": "hangup"}},
        {"machine_vm": "hangup"},
        {"machineVm": "hangup"},
    ):
        config = parse_agent({"amd": amd}).amd
        assert config is not None
        assert dict(config.actions) == {"machine-vm": "hangup"}, amd


def test_amd_bad_values_are_config_errors() -> None:
    assert "amd" in rejected({"amd": {"actions": {"machine-vm": "explode"}}})
    assert "amd" in rejected({"amd": {"actions": [1]}})
    assert "amd" in rejected({"amd": {"actions": "hangup"}})
    assert "amd.timeout_seconds" in rejected({"amd": {"timeoutSeconds": 0}})


def test_webhooks_camel_case_and_secrets() -> None:
    """'webhooks: preCall, status, postCall' (002_*); secrets are write-only."""
    agent = parse_agent(
        {
            "webhook_secret": "whsec_1",
            "webhooks": {"postCall": {"url": "https://x/post", "secret": "legacy_2"}},
        }
    )
    assert agent.webhooks.post_call is not None
    assert agent.webhooks.post_call.url == "https://x/post"
    assert set(agent.secrets) == {"whsec_1", "legacy_2"}
    text = repr(agent) + str(agent) + agent.model_dump_json()
    assert "whsec_1" not in text and "legacy_2" not in text


def test_fixture_agents_parse(control_plane_dir: Path) -> None:
    paths = [
        p
        for p in sorted((control_plane_dir / "agents").glob("agent_*.json"))
        if not p.name.endswith(".tools.json")
    ]
    assert len(paths) >= 2
    for path in paths:
        agent = parse_agent(json.loads(path.read_text()), source=str(path))
        assert isinstance(agent, AgentConfig)
        assert agent.id == path.stem
