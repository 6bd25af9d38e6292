"""Per-call dispatch and merge rules (``worker.config.dispatch``), quoted from reference ``000_*``
("Per-call overrides win per layer"), ``002_*`` (phone agents, dispatchMetadataTemplate)
and ``004_*`` ({{variable}} placeholders)."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.errors import ConfigError
from worker.config import (
    AgentConfig,
    Dispatch,
    fill_placeholders,
    merge,
    parse_agent,
    parse_dispatch,
)

AGENT: dict[str, Any] = {
    "id": "agent_01JC0FRNTDESK0000000000000",
    "systemPrompt": "You are the receptionist.",
    "firstMessage": "Hello!",
    "voice": "en-us",
    "intent": {"language": "en", "optimizeFor": "latency"},
    "llmOptions": {"temperature": 0.4, "maxTokens": 48},
    "stackPreferences": {
        "allowedProviders": {
            "stt": ["deepgram", "local"],
            "llm": ["openai"],
            "tts": ["elevenlabs:eleven_flash_v2_5"],
        }
    },
    "tts_playback_rate": 1.2,
    "response_delay_seconds": 0.4,
    "metadata": {"clinic": "Acme", "shared": "agent"},
}


def merged(dispatch: dict[str, Any], agent: dict[str, Any] | None = None) -> AgentConfig:
    return merge(parse_agent(agent or AGENT), parse_dispatch(dispatch))


# --- parse_dispatch -------------------------------------------------------------------


@pytest.mark.parametrize("empty", [None, "", "   "])
def test_empty_metadata_means_no_overrides(empty: str | None) -> None:
    assert parse_dispatch(empty) == Dispatch()
    assert merged({}).prompt == "You are the receptionist."


def test_dispatch_accepts_text_or_object_in_both_spellings() -> None:
    text = '{"agentId": "agent_x", "systemPrompt": "p", "ttsOptions": {"playbackRate": 1.5}}'
    snake_ = {"agent_id": "agent_x", "system_prompt": "p", "tts_options": {"playback_rate": 1.5}}
    assert parse_dispatch(text) == parse_dispatch(snake_)
    assert parse_dispatch(text).tts_options.playback_rate == 1.5


@pytest.mark.parametrize("bad", ["{not json", "[1, 2]", '"agent"', "42"])
def test_bad_dispatch_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"^dispatch: "):
        parse_dispatch(bad)


@pytest.mark.parametrize(
    ("dispatch", "field"),
    [
        ({"ttsOptions": {"playbackRate": 3.5}}, "tts_options.playback_rate"),
        ({"ttsOptions": {"speakingRate": 0.4}}, "tts_options.speaking_rate"),
        ({"llm": {"temperature": 1.2}}, "llm.temperature"),
        ({"sttOptions": {"responseDelaySeconds": 6}}, "stt_options.response_delay_seconds"),
        ({"backgroundAudio": {"volume": 2}}, "background_audio.volume"),
        ({"intent": {"optimizeFor": "speed"}}, "intent.optimize_for"),
    ],
)
def test_per_call_values_are_range_checked(dispatch: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"dispatch: {field}"):
        parse_dispatch(dispatch)


def test_unknown_dispatch_keys_are_ignored() -> None:
    assert parse_dispatch({"roomName": "r1", "pronunciation": []}) == Dispatch()


# --- per-call fields win per field ----------------------------------------------------


@pytest.mark.parametrize(
    ("dispatch", "attr", "value"),
    [
        ({"systemPrompt": "Per-call prompt."}, "prompt", "Per-call prompt."),
        ({"firstMessage": "Hi, this is Ava."}, "first_message", "Hi, this is Ava."),
        ({"voice": "ember"}, "voice_id", "ember"),
        ({"intent": {"language": "es"}}, "language", "es"),
        ({"intent": {"optimizeFor": "quality"}}, "optimize_for", "quality"),
        ({"llm": {"temperature": 0.0}}, "temperature", 0.0),
        ({"llm": {"maxTokens": 10}}, "max_tokens", 10),
        ({"llm": {"model": "gpt-4.1"}}, "llm_model", "gpt-4.1"),
        ({"ttsOptions": {"playbackRate": 2.0}}, "tts_playback_rate", 2.0),
        ({"ttsOptions": {"speakingRate": 1.5}}, "tts_speaking_rate", 1.5),
        ({"ttsOptions": {"model": "eleven_flash_v2_5"}}, "tts_model", "eleven_flash_v2_5"),
        ({"sttOptions": {"model": "nova-3"}}, "stt_model", "nova-3"),
        ({"sttOptions": {"responseDelaySeconds": 0.0}}, "response_delay_seconds", 0.0),
        ({"backgroundAudio": {"preset": "cafe"}}, "background_noise_preset", "cafe"),
    ],
)
def test_per_call_field_wins(dispatch: dict[str, Any], attr: str, value: Any) -> None:
    """'Per-call fields such as systemPrompt, firstMessage, voice, llm, ttsOptions,
    sttOptions, constraints, and metadata override or extend the agent defaults for that
    call.' (002_*) — including falsy values like 0.0."""
    assert getattr(merged(dispatch), attr) == value


def test_per_call_field_wins_only_for_that_field() -> None:
    """'Per-call body fields still override the agent's stored defaults — agents are
    sensible defaults, not a wall.' (000_*): the other fields keep the agent's values."""
    agent = merged({"systemPrompt": "Per-call prompt."})
    assert agent.first_message == "Hello!"
    assert agent.voice_id == "en-us"
    assert agent.temperature == 0.4
    assert agent.tts_playback_rate == 1.2
    assert agent.response_delay_seconds == 0.4


def test_merge_result_is_validated_again() -> None:
    """A per-call ``llm.provider`` must still pair with a model (the agent has none)."""
    with pytest.raises(ConfigError, match="llm_model: required when llm_provider is set"):
        merged({"llm": {"provider": "openai"}})


def test_per_call_provider_change_drops_the_agents_custom_endpoint() -> None:
    custom = {
        "llm_provider": "custom",
        "llm_model": "gemma3-270m",
        "llm_base_url": "http://127.0.0.1:8088/v1",
        "llm_api_key": "sk-custom",
        "llm_extra_body": {"top_k": 3},
    }
    agent = merged({"llm": {"provider": "openai", "model": "gpt-4o-mini"}}, custom)
    assert (agent.llm_provider, agent.llm_model) == ("openai", "gpt-4o-mini")
    assert agent.llm_base_url is None and agent.llm_api_key is None
    assert agent.llm_extra_body is None


def test_merge_keeps_write_only_secrets() -> None:
    agent = merged(
        {"systemPrompt": "x"},
        {
            "llm_provider": "custom",
            "llm_model": "m",
            "llm_base_url": "http://h",
            "llm_api_key": "sk-custom",
            "webhook_secret": "whsec",
            "webhooks": {"status": {"url": "http://s", "secret": "legacy"}},
        },
    )
    assert agent.llm_api_key is not None
    assert agent.llm_api_key.get_secret_value() == "sk-custom"
    assert set(agent.secrets) == {"sk-custom", "whsec", "legacy"}


# --- allowlists -----------------------------------------------------------------------


def test_per_call_allowlist_replaces_only_that_layer() -> None:
    """'the per-call stt list replaces the agent's stt list — but the agent's llm and tts
    lists still apply unless those are also overridden.' (000_*)"""
    agent = merged({"constraints": {"allowedProviders": {"stt": ["assemblyai"]}}})
    assert agent.allowed_providers.stt == ("assemblyai",)
    assert agent.allowed_providers.llm == ("openai",)
    assert agent.allowed_providers.tts == ("elevenlabs:eleven_flash_v2_5",)


def test_per_call_allowlist_for_two_layers() -> None:
    agent = merged({"constraints": {"allowedProviders": {"llm": ["anthropic"], "tts": ["local"]}}})
    assert agent.allowed_providers.stt == ("deepgram", "local")
    assert (agent.allowed_providers.llm, agent.allowed_providers.tts) == (
        ("anthropic",),
        ("local",),
    )


def test_per_call_empty_allowlist_lifts_the_layer_constraint() -> None:
    """'Empty / missing layer = no constraint' applied to the per-call list that replaces
    the agent's list for that layer."""
    assert merged({"constraints": {"allowedProviders": {"stt": []}}}).allowed_providers.stt == ()


# --- dispatchMetadataTemplate ---------------------------------------------------------


def test_agent_wins_over_template_for_the_same_key() -> None:
    """'If agentId and dispatchMetadataTemplate set the same pipeline key, the persisted
    agent wins and the template fills the gaps.' (002_*)"""
    agent = merged(
        {"dispatchMetadataTemplate": {"systemPrompt": "template prompt", "voice": "tmpl"}}
    )
    assert agent.prompt == "You are the receptionist."
    assert agent.voice_id == "en-us"


def test_template_fills_the_gaps() -> None:
    agent = merged(
        {
            "dispatchMetadataTemplate": {
                "tts_speaking_rate": 1.3,
                "background_noise_preset": "office",
                "intent": {"optimizeFor": "cost"},
            }
        },
        {"prompt": "p"},
    )
    assert agent.tts_speaking_rate == 1.3
    assert agent.background_noise_preset == "office"
    assert agent.optimize_for == "cost"


def test_template_constraints_are_a_pipeline_key_not_metadata() -> None:
    """'Supported ... override keys include intent, constraints, voice, systemPrompt'
    (002_*): a template's allowlist fills the agent's gap per layer."""
    agent = merged(
        {"template": {"constraints": {"allowedProviders": {"stt": ["local"]}}}}, {"prompt": "p"}
    )
    assert agent.allowed_providers.stt == ("local",)
    assert "constraints" not in agent.metadata


def test_template_fills_a_field_the_agent_returns_as_null() -> None:
    """GET returns every field; 'null means use the stack default' is a gap to fill."""
    agent = merged(
        {"template": {"response_delay_seconds": 1.0}},
        {"prompt": "p", "response_delay_seconds": None},
    )
    assert agent.response_delay_seconds == 1.0


def test_per_call_field_wins_over_template_and_agent() -> None:
    """Precedence: template < persisted agent < per-call fields."""
    agent = merged(
        {"systemPrompt": "call", "dispatchMetadataTemplate": {"systemPrompt": "template"}}
    )
    assert agent.prompt == "call"


def test_template_non_pipeline_keys_are_call_metadata() -> None:
    """'Use dispatchMetadataTemplate when you need static metadata ... tenant: "acme",
    caller: "{{callerNumber}}"'; per-call metadata wins over the agent's, which wins over
    the template's."""
    agent = merged(
        {
            "dispatchMetadataTemplate": {
                "tenant": "acme",
                "caller": "{{callerNumber}}",
                "shared": "t",
            },
            "metadata": {"campaignId": "renewal-q2", "clinic": "per-call"},
        }
    )
    assert agent.metadata == {
        "tenant": "acme",
        "caller": "{{callerNumber}}",
        "shared": "agent",
        "clinic": "per-call",
        "campaignId": "renewal-q2",
    }


def test_bad_template_value_is_a_config_error_naming_the_template() -> None:
    with pytest.raises(ConfigError, match="dispatchMetadataTemplate: tts_playback_rate"):
        merged({"dispatchMetadataTemplate": {"tts_playback_rate": 9}}, {"prompt": "p"})


# --- AMD ------------------------------------------------------------------------------


def test_per_call_amd_overrides_mode_and_timeout() -> None:
    """'telephony: { amd: { mode: "agent", timeoutSeconds: 8 } }' (002_*)."""
    agent = merged(
        {"telephony": {"amd": {"mode": "agent", "timeoutSeconds": 12}}},
        {"prompt": "p", "amd": {"mode": "off", "actions": {"machine-vm": "hangup"}}},
    )
    assert agent.amd is not None
    assert (agent.amd.mode, agent.amd.timeout_seconds) == ("agent", 12.0)
    assert dict(agent.amd.actions) == {"machine-vm": "hangup"}
    off = merged({"telephony": {"amd": {"mode": "disabled"}}}, {"prompt": "p"})
    assert off.amd is not None and off.amd.mode == "off"


def test_top_level_dispatch_amd_is_honoured() -> None:
    """003: AMD config is 'Stored on the agent row; flowed onto outbound dispatch metadata
    under the amd key'."""
    agent = merged(
        {
            "amd": {
                "mode": "agent",
                "timeoutSeconds": 6,
                "machineVm": "hangup",
                "llmTiebreaker": True,
            }
        },
        {"prompt": "p"},
    )
    assert agent.amd is not None
    assert (agent.amd.mode, agent.amd.timeout_seconds, agent.amd.llm_tiebreaker) == (
        "agent",
        6.0,
        True,
    )
    assert dict(agent.amd.actions) == {"machine-vm": "hangup"}


def test_per_call_amd_actions_are_kept_per_category() -> None:
    """'telephony.amd' per-call 'actions' win per category over the flowed 'amd' key and the
    agent row; the categories they do not name keep the agent's action."""
    agent = merged(
        {
            "amd": {"actions": {"machine-ivr": "navigate"}, "voicemailMessage": "Call us back."},
            "telephony": {
                "amd": {"actions": {"machine-vm": "voicemail"}, "greetImmediately": True}
            },
        },
        {"prompt": "p", "amd": {"actions": {"machine-vm": "hangup", "uncertain": "hangup"}}},
    )
    assert agent.amd is not None
    assert dict(agent.amd.actions) == {
        "machine-vm": "voicemail",
        "uncertain": "hangup",
        "machine-ivr": "navigate",
    }
    assert (agent.amd.voicemail_message, agent.amd.greet_immediately) == ("Call us back.", True)


def test_bad_per_call_amd_action_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"telephony\.amd\.actions"):
        parse_dispatch({"telephony": {"amd": {"actions": {"machine-vm": "explode"}}}})


# --- placeholders ---------------------------------------------------------------------


def test_placeholders_filled_from_call_context() -> None:
    """'Supports {{variable}} placeholders populated from call context.' (004_*)"""
    text, unknown = fill_placeholders(
        "Hi {{name}}, call {{ callerNumber }} about {{name}}.", {"name": "Maya", "callerNumber": 5}
    )
    assert text == "Hi Maya, call 5 about Maya."
    assert unknown == ()


def test_unknown_placeholders_stay_intact_and_are_reported_once() -> None:
    text, unknown = fill_placeholders("{{a}} {{missing}} {{missing}} {{b}}", {"a": 1, "b": None})
    assert text == "1 {{missing}} {{missing}} {{b}}"
    assert unknown == ("missing", "b")


def test_text_without_placeholders_is_untouched() -> None:
    assert fill_placeholders("{single} {{ }} {{1x}}", {"x": 1}) == ("{single} {{ }} {{1x}}", ())
