"""``resolve``: the SessionPlan decided once at session start (``worker.plan.resolve``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipelines.errors import ConfigError, RoutingError
from pipelines.providers import Catalog
from pipelines.types import Layer
from worker.config import parse_agent, parse_dispatch
from worker.plan import SessionPlan, plan_to_json, resolve
from worker.plan.resolve import OFFLINE_NOT_ROUTED
from worker.settings import REPO_ROOT, Settings

MakeSettings = Callable[..., Settings]
FRONT_DESK = "agent_01JC0FRNTDESK0000000000000"
APPT_SETTER = "agent_01JC0APPTSETTER00000000000"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    path = REPO_ROOT / "fixtures/control_plane/providers.json"
    return Catalog.from_json(json.loads(path.read_text()))


@pytest.fixture
def plan(catalog: Catalog, settings: MakeSettings) -> Callable[..., SessionPlan]:
    """``plan(agent_dict, dispatch_dict=None, tools=None, **settings_overrides)``."""

    def make(
        agent: dict[str, Any],
        dispatch: dict[str, Any] | None = None,
        tools: Any = None,
        **overrides: Any,
    ) -> SessionPlan:
        return resolve(
            parse_agent(agent), tools, parse_dispatch(dispatch), catalog, settings(**overrides)
        )

    return make


def chain(p: SessionPlan, layer: Layer) -> list[str]:
    return [c.id for c in p.providers[layer]]


def fixture_agent(control_plane_dir: Path, agent_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (control_plane_dir / "agents" / f"{agent_id}.json").read_text()
    )
    return data


# --- providers ------------------------------------------------------------------------


def test_front_desk_fixture_offline(plan: Any, control_plane_dir: Path) -> None:
    """With no provider keys, the allowlists leave the offline stack; the rest is warned."""
    p = plan(fixture_agent(control_plane_dir, FRONT_DESK))
    assert chain(p, "stt") == ["local:moonshine", "local:pocketsphinx"]
    assert chain(p, "tts") == ["local:espeak"]
    assert chain(p, "llm")[0].startswith("local:")
    assert "stt: left out deepgram:nova-3 (DEEPGRAM_API_KEY is not configured)" in p.warnings
    assert "tts: left out elevenlabs:eleven_flash_v2_5 (ELEVEN_API_KEY is not configured)" in (
        p.warnings
    )


def test_configured_credentials_bring_providers_in(plan: Any, control_plane_dir: Path) -> None:
    """'this agent's STT must be Deepgram or ...' — with a key, Deepgram leads (latency)."""
    p = plan(
        fixture_agent(control_plane_dir, FRONT_DESK),
        deepgram_api_key="dg-key",
        eleven_api_key="el-key",
        deepgram_base_url="http://127.0.0.1:9001",
    )
    assert chain(p, "stt") == [
        "deepgram:nova-3",
        "deepgram:flux",
        "deepgram:nova-2",
        "local:moonshine",
        "local:pocketsphinx",
    ]
    assert chain(p, "tts") == ["elevenlabs:eleven_flash_v2_5", "local:espeak"]
    head = p.providers["stt"][0]
    assert head.base_url == "http://127.0.0.1:9001"
    assert head.api_key is not None and head.api_key.get_secret_value() == "dg-key"


def test_empty_layer_is_an_error_naming_the_layer(plan: Any) -> None:
    """Issue: 'an empty result is an error naming the layer' — allowlist deepgram, no key."""
    with pytest.raises(RoutingError, match=r"^stt: no usable provider.*DEEPGRAM_API_KEY"):
        plan({"stackPreferences": {"allowedProviders": {"stt": ["deepgram"]}}})


def test_offline_providers_can_be_disabled(plan: Any) -> None:
    with pytest.raises(RoutingError, match="offline providers are disabled"):
        plan({}, offline_providers=False)


PRODUCTION = {
    "control_plane_url": "https://api.speko.example",
    "deepgram_api_key": "dg",
    "openai_api_key": "oa",
    "eleven_api_key": "el",
}
"""A worker on a production control plane, with vendor keys."""


def test_production_chain_never_fails_over_to_the_offline_stack(plan: Any) -> None:
    """Issue 14: 'the offline engines are routed only when the allowlist names local or the
    embedded default is in use (file:// control plane), and the plan says which'."""
    p = plan({}, **PRODUCTION)
    assert "local:pocketsphinx" not in chain(p, "stt")
    assert ("local:pocketsphinx", OFFLINE_NOT_ROUTED) in p.excluded_providers["stt"]
    assert p.offline_engines == {}
    with pytest.raises(RoutingError, match=r"^stt: no usable provider.*routed only for"):
        plan({}, control_plane_url="https://api.speko.example")


def test_allowlist_naming_local_routes_the_offline_stack_on_that_layer(plan: Any) -> None:
    agent = {"stackPreferences": {"allowedProviders": {"stt": ["deepgram", "local"]}}}
    p = plan(agent, **PRODUCTION)
    assert chain(p, "stt")[-1] == "local:pocketsphinx"
    assert p.offline_engines == {"stt": "the allowlist names local"}
    assert not any(c.vendor == "local" for c in p.providers["tts"])


def test_embedded_default_routes_the_offline_stack_and_says_so(plan: Any) -> None:
    p = plan({})  # the settings' default: the file:// control plane in fixtures/
    assert p.offline_engines == {
        "stt": "embedded default (file:// control plane)",
        "llm": "embedded default (file:// control plane)",
        "tts": "embedded default (file:// control plane)",
    }
    assert plan_to_json(p)["offline_engines"]["stt"].startswith("embedded default")


def test_unrankable_allowlist_entry_fails_the_plan(plan: Any) -> None:
    """'the session will error rather than silently picking an alternative.'"""
    with pytest.raises(RoutingError, match="cannot rank"):
        plan({"stackPreferences": {"allowedProviders": {"tts": ["local", "acme-tts"]}}})


def test_per_call_allowlist_routes_only_that_layer(plan: Any) -> None:
    agent = {"stackPreferences": {"allowedProviders": {"stt": ["deepgram"], "tts": ["local"]}}}
    p = plan(agent, {"constraints": {"allowedProviders": {"stt": ["local"]}}})
    assert chain(p, "stt") == ["local:moonshine", "local:pocketsphinx"]
    assert chain(p, "tts") == ["local:espeak"]


def test_mixed_model_and_vendor_allowlist_yields_only_those(plan: Any) -> None:
    """'["deepgram:nova-3", "assemblyai"] will fail over from Nova-3 to AssemblyAI' — the
    chain is the allowed set this worker can use (AssemblyAI without a key: left out)."""
    agent = {"stackPreferences": {"allowedProviders": {"stt": ["deepgram:nova-3", "assemblyai"]}}}
    p = plan(agent, deepgram_api_key="k")
    assert chain(p, "stt") == ["deepgram:nova-3"]
    assert p.excluded_providers["stt"] == (
        ("assemblyai:universal-streaming", "ASSEMBLYAI_API_KEY is not configured"),
    )
    both = plan(agent, deepgram_api_key="k", assemblyai_api_key="k")
    assert chain(both, "stt") == ["deepgram:nova-3", "assemblyai:universal-streaming"]


STT_KEYS = {
    "deepgram_api_key": "dg",
    "assemblyai_api_key": "aai",
    "baseten_api_key": "bt",
    "baseten_base_url": "wss://model-x.api.baseten.co/environments/production/websocket",
}


def test_stt_left_to_the_worker_default_is_baseten_whisper(plan: Any) -> None:
    """001: 'Omit to use the worker's default stack (today: whisper-v3)' — 'Baseten Whisper
    Large V3' leads, though Deepgram ranks higher for latency; the rest of the allowed set
    stays behind it; Whisper sends no end of speech, so the VAD ends its turns."""
    p = plan({"response_delay_seconds": 0.8}, **STT_KEYS)
    stt = chain(p, "stt")
    assert stt[0] == "baseten:whisper-v3"
    assert set(stt[1:]) >= {"deepgram:nova-3", "deepgram:flux", "assemblyai:universal-streaming"}
    head = p.providers["stt"][0]
    assert head.base_url == STT_KEYS["baseten_base_url"]
    assert head.api_key is not None and head.api_key.get_secret_value() == "bt"
    assert not [w for w in p.warnings if w.startswith("stt:") and "baseten" in w]
    assert p.endpointing.turn_detection == "vad" and p.endpointing.min_delay == 0.8
    assert p.endpointing.end_of_turn_by is None
    assert "bt" not in json.dumps(plan_to_json(p))


@pytest.mark.parametrize(
    ("keys", "reason"),
    [
        ({}, "BASETEN_API_KEY is not configured"),
        ({"baseten_api_key": "bt"}, "BASETEN_BASE_URL is not configured"),
    ],
)
def test_unusable_default_stt_leaves_the_ranking_and_says_why(
    plan: Any, keys: dict[str, str], reason: str
) -> None:
    p = plan({}, deepgram_api_key="dg", **keys)
    assert chain(p, "stt")[0] == "deepgram:nova-3"
    assert f"stt: left out baseten:whisper-v3 ({reason})" in p.warnings


def test_default_stt_outside_the_allowlist_is_not_used(plan: Any) -> None:
    """'Failover stays active within the allowed set' — the default is no exception."""
    p = plan({"stackPreferences": {"allowedProviders": {"stt": ["assemblyai"]}}}, **STT_KEYS)
    assert chain(p, "stt") == ["assemblyai:universal-streaming"]


def test_default_stt_is_a_setting(plan: Any) -> None:
    assert chain(plan({}, default_stt="assemblyai:universal-streaming", **STT_KEYS), "stt")[0] == (
        "assemblyai:universal-streaming"
    )
    p = plan({}, default_stt="", **STT_KEYS)
    assert chain(p, "stt")[0] == "deepgram:nova-3"  # latency ranking only


def test_whisper_v3_override_pins_baseten_with_vad_turns(plan: Any) -> None:
    """'Pick whisper-v3 to pin Whisper Large V3 explicitly': no longer 'no integration'."""
    p = plan({"stt_override": "whisper-v3"}, **STT_KEYS)
    assert chain(p, "stt")[0] == "baseten:whisper-v3"
    assert p.endpointing.turn_detection == "vad"


def test_optimize_for_quality_reorders(plan: Any) -> None:
    keys = {"deepgram_api_key": "k", "openai_api_key": "k", "eleven_api_key": "k"}
    latency = plan({}, **keys)
    quality = plan({"intent": {"optimizeFor": "quality"}}, **keys)
    assert latency.optimize_for == "latency"  # 'default latency'
    assert chain(latency, "tts")[0] == "elevenlabs:eleven_flash_v2_5"
    assert chain(quality, "tts")[0] == "elevenlabs:eleven_multilingual_v2"


def test_stt_override_pins_and_switches_to_semantic_turns(plan: Any) -> None:
    """'Pick ... flux to opt into Deepgram Flux's semantic end-of-turn detection'; response
    delay is 'Ignored on Flux ... which use[s] semantic turn detection instead.'"""
    p = plan({"stt_override": "flux", "response_delay_seconds": 1.0}, **STT_KEYS)
    assert chain(p, "stt")[0] == "deepgram:flux"
    assert p.endpointing.turn_detection == "stt"
    assert p.endpointing.end_of_turn_by == "deepgram:flux"
    assert p.endpointing.min_delay == 0.0
    assert "response_delay_seconds ignored: deepgram:flux decides end of turn" in p.warnings
    # the allowed set keeps Baseten behind Flux; the plan says what that failover costs
    assert any(w.startswith("stt: turns end on deepgram:flux") for w in p.warnings)


def test_model_fields_pin(plan: Any) -> None:
    """Calls API: 'stt_model / llm_model / tts_model: Override the default ... model'."""
    p = plan(
        {"stt_model": "nova-2", "llm_model": "gpt-4.1", "tts_model": "eleven_multilingual_v2"},
        deepgram_api_key="k",
        openai_api_key="k",
        eleven_api_key="k",
    )
    assert chain(p, "stt")[0] == "deepgram:nova-2"
    assert chain(p, "llm")[0] == "openai:gpt-4.1"
    assert chain(p, "tts")[0] == "elevenlabs:eleven_multilingual_v2"


def test_custom_llm_endpoint_is_pinned_with_its_key(plan: Any) -> None:
    p = plan(
        {
            "llm_provider": "custom",
            "llm_model": "my-vllm",
            "llm_base_url": "http://10.0.0.5:8000/v1",
            "llm_api_key": "sk-custom",
            "stackPreferences": {"allowedProviders": {"llm": ["custom"]}},
        }
    )
    assert chain(p, "llm") == ["custom:my-vllm"]
    head = p.providers["llm"][0]
    assert head.base_url == "http://10.0.0.5:8000/v1"
    assert head.api_key is not None and head.api_key.get_secret_value() == "sk-custom"


# --- prompt, placeholders -------------------------------------------------------------


def test_placeholders_filled_unknown_reported(plan: Any, control_plane_dir: Path) -> None:
    """'Supports {{variable}} placeholders populated from call context' (004_*); unknown
    ones are left as written and reported."""
    p = plan(fixture_agent(control_plane_dir, APPT_SETTER), {"variables": {"patientName": "Maya"}})
    assert p.first_message == "Hi Maya, this is Ava from Acme Dental. Is now a good time?"
    assert "calling Maya" in p.prompt
    assert "{{appointmentDate}}" in p.prompt
    assert p.unresolved_placeholders == ("appointmentDate",)
    assert "unknown placeholders left as written: {{appointmentDate}}" in p.warnings


def test_call_context_fills_numbers_and_template_metadata(plan: Any) -> None:
    """dispatchMetadataTemplate 'caller: "{{callerNumber}}"' (002_*)."""
    p = plan(
        {
            "prompt": "Caller {{callerNumber}} dialed {{dialedNumber}} at {{clinic}}.",
            "metadata": {"clinic": "Acme"},
        },
        {"from": "+12015551234", "to": "+12015550199", "template": {"caller": "{{callerNumber}}"}},
    )
    assert p.prompt == "Caller +12015551234 dialed +12015550199 at Acme."
    assert p.metadata["caller"] == "+12015551234"
    assert p.unresolved_placeholders == ()


PROMPT_WITH_NUMBERS = (
    "Forwarded from {{forwardedFromNumber}} by {{callerNumber}} to {{dialedNumber}}."
)


@pytest.mark.parametrize(
    "metadata",
    [
        {"forwardedFromNumber": "+12015550111", "callerNumber": "+12015551234"},
        {"forwarded_from_number": "+12015550111", "from": "+12015551234"},
    ],
)
def test_numbers_only_in_session_metadata_fill_placeholders(
    plan: Any, metadata: dict[str, str]
) -> None:
    """002: the forwarding source 'is exposed as: forwardedFromNumber in session metadata';
    a placeholder whose number arrives only there is filled (it used to stay unfilled: the
    unset dispatch field clobbered it), in the prompt and in template metadata alike."""
    p = plan(
        {"prompt": PROMPT_WITH_NUMBERS},
        {
            "to": "+12015550199",
            "metadata": metadata,
            "template": {
                "forwardedFromNumber": "{{forwardedFromNumber}}",
                "line": "{{dialedNumber}}",
            },
        },
    )
    assert p.prompt == "Forwarded from +12015550111 by +12015551234 to +12015550199."
    assert p.metadata["line"] == "+12015550199"
    assert p.unresolved_placeholders == ()


def test_dispatch_numbers_win_and_missing_ones_are_reported(plan: Any) -> None:
    p = plan(
        {"prompt": "From {{callerNumber}}, forwarded by {{forwardedFromNumber}}."},
        {"from": "+12015551234", "metadata": {"callerNumber": "+19999999999"}},
    )
    assert p.prompt == "From +12015551234, forwarded by {{forwardedFromNumber}}."
    assert p.unresolved_placeholders == ("forwardedFromNumber",)


@pytest.mark.parametrize(
    ("agent", "dispatch", "expected"),
    [
        ({"memory_enabled": True}, {"memory": "Prefers mornings."}, "Known: Prefers mornings."),
        ({"memory_enabled": True}, {}, "Known: "),
        ({"memory_enabled": False}, {"memory": "Prefers mornings."}, "Known: "),
    ],
)
def test_memory_placeholder_is_never_left_literal(
    plan: Any, agent: dict[str, Any], dispatch: dict[str, Any], expected: str
) -> None:
    """'the retriever injects the top matches into the system prompt via the {{memory}}
    template variable' — and only when memory_enabled."""
    p = plan({"prompt": "Known: {{memory}}", **agent}, dispatch)
    assert p.prompt == expected
    assert "memory" not in p.unresolved_placeholders


# --- speech, endpointing, lifecycle ---------------------------------------------------


def test_stack_defaults(plan: Any, settings: MakeSettings) -> None:
    """'Null means "use the stack default" — Deepgram VAD: 0.5s'; 'temperature: Defaults to
    0.7'; 'interruption_threshold: Default 0.5'; 'context_window: Default 10'."""
    p = plan({})
    assert p.endpointing.min_delay == 0.5
    assert p.endpointing.allow_interruptions
    assert p.llm.temperature == 0.7
    assert p.llm.context_window == 10
    assert p.speech.playback_rate is None
    assert p.noise_bed is None
    assert p.timeouts.inactivity == settings().default_inactivity_timeout


def test_navigator_mode(plan: Any) -> None:
    """'or 0.75s when navigator_mode=true'; 'longer endpointing and no barge-in'."""
    p = plan({"navigator_mode": True})
    assert p.endpointing.min_delay == 0.75
    assert not p.endpointing.allow_interruptions
    assert "send_dtmf" in {t.name for t in p.tools}


def test_response_delay_and_playback_rate_carry_through(plan: Any) -> None:
    p = plan({"response_delay_seconds": 0.0, "tts_playback_rate": 1.15, "tts_speaking_rate": 1.0})
    assert p.endpointing.min_delay == 0.0
    assert p.speech.playback_rate == 1.15
    assert p.speech.speaking_rate is None  # 1.0 = neutral: nothing to send


def test_interruption_threshold_maps_monotonically(plan: Any) -> None:
    durations = [
        plan({"interruption_threshold": t}).endpointing.min_interruption_duration
        for t in (0.0, 0.5, 1.0)
    ]
    assert durations == sorted(durations) and durations[0] < durations[-1]


@pytest.mark.parametrize(("value", "expected"), [(0, 30.0), (None, 30.0), (12, 12.0)])
def test_inactivity_zero_clears_the_override(plan: Any, value: int | None, expected: float) -> None:
    """'Send 0 to clear the override and fall back to the platform default.'"""
    p = plan({"inactivity_timeout_seconds": value}, default_inactivity_timeout=30.0)
    assert p.timeouts.inactivity == expected


def test_noise_bed(plan: Any) -> None:
    """'Send empty string ("") to disable the bed'; unknown presets name the field."""
    assert plan({"background_noise_preset": "office", "background_noise_volume": 0.2}).noise_bed
    assert plan({"background_noise_preset": "", "background_noise_volume": 0.2}).noise_bed is None
    with pytest.raises(ConfigError, match="background_noise_preset"):
        plan({"background_noise_preset": "spaceship"})


OUTBOUND = {"direction": "outbound"}


def test_amd_plan_defaults_and_navigator(plan: Any) -> None:
    """'dispatches per category to the configured action'."""
    p = plan({"amd": {"machine_vm": "hangup"}}, OUTBOUND)
    assert p.amd is not None
    assert p.amd.actions["machine-vm"] == "hangup"
    assert p.amd.actions["human"] == "continue"
    nav = plan({"amd": {}, "navigator_mode": True}, OUTBOUND)
    assert nav.amd is not None and nav.amd.actions["machine-ivr"] == "navigate"
    assert plan({"amd": {"mode": "off"}}, OUTBOUND).amd is None


@pytest.mark.parametrize("direction", ["inbound", "web", None])
def test_amd_is_for_outbound_calls_only(plan: Any, direction: str | None) -> None:
    """001: 'Answering Machine Detection routing config for outbound voice agents': an
    inbound caller must not hear silence up to timeoutSeconds, then be hung up on."""
    agent = {"amd": {"mode": "agent", "machine_vm": "hangup"}, "first_message": "Hi"}
    p = plan(agent, {"direction": direction} if direction else None)
    assert p.amd is None
    assert f"amd: off ({direction or 'no direction'}: outbound calls only)" in p.warnings
    assert plan(agent, OUTBOUND).amd is not None
    # A per-call telephony.amd on an inbound dispatch does not switch it back on.
    inbound = {"direction": "inbound", "telephony": {"amd": {"mode": "agent"}}}
    assert plan(agent, inbound).amd is None


def test_amd_flowed_onto_outbound_dispatch_routes_the_call(plan: Any) -> None:
    """003: 'flowed onto outbound dispatch metadata under the amd key': an agent fetched by id
    without AMD still runs the dispatch's."""
    dispatch = {"direction": "outbound", "amd": {"mode": "agent", "machine_vm": "hangup"}}
    p = plan({"prompt": "p"}, dispatch)
    assert p.amd is not None and p.amd.actions["machine-vm"] == "hangup"


# --- tools ----------------------------------------------------------------------------


def test_tools_and_builtins(plan: Any, control_plane_dir: Path) -> None:
    tools = json.loads((control_plane_dir / "agents" / f"{FRONT_DESK}.tools.json").read_text())
    p = plan({}, tools=tools)
    by_name = {t.name: t for t in p.tools}
    assert by_name["lookup_appointment"].timeout_seconds == 5.0
    end_call = by_name["end_call"]
    assert end_call.builtin == "end_call"
    # The schema the LLM sees must name the argument the handler reads (worker.call.tools).
    assert "goodbye" in end_call.parameters["properties"]


def test_bad_tool_is_a_config_error(plan: Any) -> None:
    with pytest.raises(ConfigError, match=r"tools\[0\]"):
        plan({}, tools=[{"name": "x y", "url": "http://h"}])


# --- webhooks, secrets ----------------------------------------------------------------


def test_webhooks_prefer_per_target_then_agent_secret(plan: Any) -> None:
    p = plan(
        {
            "webhook_url": "https://x/legacy-post",
            "webhook_secret": "whsec",
            "webhooks": {"status": {"url": "https://x/status"}},
        }
    )
    assert set(p.webhooks) == {"status", "post_call"}
    assert p.webhooks["post_call"].url == "https://x/legacy-post"
    status_secret = p.webhooks["status"].secret
    assert status_secret is not None and status_secret.get_secret_value() == "whsec"


def test_plan_json_shows_secrets_only_as_set_flags(plan: Any) -> None:
    p = plan(
        {
            "llm_provider": "custom",
            "llm_model": "m",
            "llm_base_url": "http://h/v1",
            "llm_api_key": "sk-custom-123",
            "webhook_secret": "whsec-456",
            "webhook_url": "https://x/post",
        },
        deepgram_api_key="dg-789",
    )
    data = plan_to_json(p)
    text = json.dumps(data)
    for secret in ("sk-custom-123", "whsec-456", "dg-789"):
        assert secret not in text
        assert secret in p.secrets
    assert data["providers"]["llm"][0]["api_key_set"] is True
    assert data["webhooks"]["post_call"]["secret_set"] is True
    assert data["webhook_secret_set"] is True


def test_platform_default_llm_leads_when_configured(plan: Any) -> None:
    """001: 'Leave empty ... to use the platform default (today: Speechify Kimi K2.6)'."""
    keys = {"speechify_llm_base_url": "http://127.0.0.1:9/v1", "speechify_api_key": "sf-key"}
    p = plan({}, openai_api_key="k", **keys)
    assert chain(p, "llm")[0] == "speechify:kimi-k2.6"
    head = p.providers["llm"][0]
    assert head.base_url == "http://127.0.0.1:9/v1"
    assert head.api_key is not None and head.api_key.get_secret_value() == "sf-key"
    # its own key wins over the TTS one
    p = plan({}, speechify_llm_api_key="llm-key", **keys)
    key = p.providers["llm"][0].api_key
    assert key is not None and key.get_secret_value() == "llm-key"
    # an agent naming its LLM is not overridden; DEFAULT_LLM unset: the usual ranking
    assert chain(plan({"llm_model": "gpt-4.1"}, openai_api_key="k", **keys), "llm")[0] == (
        "openai:gpt-4.1"
    )
    p = plan({}, openai_api_key="k", default_llm=None, **keys)
    assert chain(p, "llm")[0] == "openai:gpt-4o-mini"


def test_platform_default_llm_without_its_url_is_left_out_and_said(plan: Any) -> None:
    p = plan({}, speechify_api_key="sf-key")
    assert "speechify:kimi-k2.6" not in chain(p, "llm")
    assert (
        "llm: left out speechify:kimi-k2.6 (SPEECHIFY_LLM_BASE_URL is not configured)" in p.warnings
    )
    # outside the allowed set: the ranking never names it, so the plan says why
    p = plan({"stackPreferences": {"allowedProviders": {"llm": ["local"]}}})
    (note,) = [w for w in p.warnings if w.startswith("llm: default")]
    assert "outside the allowed providers" in note
