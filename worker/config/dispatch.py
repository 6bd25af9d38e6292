"""Per-call dispatch metadata and the rules that merge it with the agent record.

Precedence, lowest first (reference ``002_*``):
``dispatchMetadataTemplate`` < persisted agent < per-call fields. Per-call fields win per
field; a per-call allowlist for one layer replaces the agent's list for that layer only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, ValidationError, model_validator

from pipelines.errors import ConfigError
from pipelines.types import AMDCategory, OptimizeFor
from worker.config.agent import (
    AMD_NAVIGATION_ATTEMPTS_RANGE,
    AMD_TIMEOUT_RANGE,
    AgentConfig,
    AllowedProviders,
    AMDAction,
    Boundary,
    MaxTokens,
    PlaybackRate,
    Range,
    ResponseDelay,
    SpeakingRate,
    Temperature,
    Volume,
    describe_validation_error,
    flat_amd_actions,
    flatten_synonyms,
    parse_agent,
    snake,
)


class Intent(Boundary):
    language: str | None = None
    optimize_for: OptimizeFor | None = None


class LLMOverride(Boundary):
    provider: str | None = None
    model: str | None = None
    temperature: Temperature = None
    max_tokens: MaxTokens = None


class TTSOptions(Boundary):
    speaking_rate: SpeakingRate = None
    playback_rate: PlaybackRate = None
    model: str | None = None


class STTOptions(Boundary):
    language: str | None = None
    model: str | None = None
    response_delay_seconds: ResponseDelay = None


class Constraints(Boundary):
    allowed_providers: AllowedProviders = Field(default_factory=AllowedProviders)


AMD_OFF = ("off", "disabled", "none")
"""Per-call ``mode`` spellings that switch AMD off for the call."""


class AMDOverride(Boundary):
    """Per-call AMD config: the dispatch's top-level ``amd`` (003: the agent's config
    "flowed onto outbound dispatch metadata under the ``amd`` key") and ``telephony.amd``
    (002). A set field wins; ``actions`` win per category."""

    mode: str | None = None
    timeout_seconds: Annotated[float | None, Range(*AMD_TIMEOUT_RANGE)] = None
    actions: dict[AMDCategory, AMDAction] = Field(default_factory=dict)
    voicemail_message: str | None = None
    greet_immediately: bool | None = None
    llm_tiebreaker: bool | None = None
    max_navigation_attempts: Annotated[int | None, Range(*AMD_NAVIGATION_ATTEMPTS_RANGE)] = None

    @model_validator(mode="before")
    @classmethod
    def _flat_actions(cls, data: Any) -> Any:
        return flat_amd_actions(data)

    def apply(self, base: Mapping[str, Any]) -> dict[str, Any]:
        """``base`` (an AMD config as data) with this override's set fields on top."""
        out = dict(base)
        for name in AMDOverride.model_fields:
            value = getattr(self, name)
            if value is None or name == "actions":
                continue
            out[name] = ("off" if value in AMD_OFF else "agent") if name == "mode" else value
        if self.actions:
            out["actions"] = {**out.get("actions", {}), **self.actions}
        return out


class Telephony(Boundary):
    region: str | None = None
    amd: AMDOverride | None = None
    ringing_timeout: Annotated[float, Field(gt=0)] | None = None
    """Seconds the platform let the phone ring (``CreateSIPParticipant``): an unexplained
    end at it is a missed call, before it a decline."""


class BackgroundAudio(Boundary):
    preset: str | None = None
    volume: Volume = None


class TextReplacement(Boundary):
    """Replace ``find`` (a whole word or phrase, case-insensitive) with ``replace``: a
    pronunciation rule (``{"word": "Nguyen", "pronunciation": "win"}``) or a text replacement
    rule (``{"find": "Dr.", "replace": "Doctor"}``)."""

    find: str = Field(min_length=1)
    replace: str

    @model_validator(mode="before")
    @classmethod
    def _spellings(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        return flatten_synonyms(data, _RULE_SYNONYMS)


_RULE_SYNONYMS = {
    "find": ("word", "text", "term", "phrase", "from", "pattern", "match"),
    "replace": ("pronunciation", "say", "say_as", "sounds_like", "alias", "to", "replacement"),
}
RULE_KEYS = ("text_replacements", "pronunciation", "pronunciations", "replacements")
"""Dispatch keys holding pronunciation and text replacement rules (002); all of them apply,
in this order. Each is a list of rules or an object ``{"find": "replace", ...}``."""


def _rules(value: Any) -> Any:
    if isinstance(value, Mapping):
        inner = value.get("rules") if len(value) == 1 else None
        if isinstance(inner, list | Mapping):  # {"rules": [...]}
            return _rules(inner)
        return [{"find": k, "replace": v} for k, v in value.items()]  # {"Acme": "Ack-mee"}
    return value


class Dispatch(Boundary):
    """Job metadata of one call: ``agentId`` plus per-call overrides."""

    agent_id: str | None = None
    agent: dict[str, Any] | None = None
    """An inline agent record (ad hoc calls and tests); ``agentId`` wins when both are set."""
    system_prompt: str | None = None
    first_message: str | None = None
    voice: str | None = None
    intent: Intent = Field(default_factory=Intent)
    llm: LLMOverride = Field(default_factory=LLMOverride)
    tts_options: TTSOptions = Field(default_factory=TTSOptions)
    stt_options: STTOptions = Field(default_factory=STTOptions)
    constraints: Constraints = Field(default_factory=Constraints)
    telephony: Telephony = Field(default_factory=Telephony)
    amd: AMDOverride | None = None
    """The agent's AMD config as the platform flows it onto outbound dispatch (003);
    ``telephony.amd`` wins over it per field."""
    background_audio: BackgroundAudio | None = None
    save_audio_recording: bool | None = None
    """Records this call (or not) whatever the agent says; unset: the agent's flag."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    variables: dict[str, Any] = Field(default_factory=dict)
    """``{{variable}}`` values for the prompt and first message."""
    dispatch_metadata_template: dict[str, Any] = Field(default_factory=dict)
    memory: str | None = None
    """Retrieved caller memories for ``{{memory}}`` (when the agent enables memory)."""
    tools: list[dict[str, Any]] | None = None
    """Replaces the agent's tool list for this call (pre-call webhook)."""
    text_replacements: list[TextReplacement] = Field(default_factory=list)
    """Pronunciation and text replacement rules applied to the text sent to TTS."""
    idle_reprompts: list[str] = Field(default_factory=list)
    """What to say when the caller goes quiet, in order; the last one is a goodbye."""
    call_id: str | None = None
    direction: str | None = None
    caller_number: str | None = None
    dialed_number: str | None = None
    forwarded_from_number: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _spellings(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = {snake(str(k)): v for k, v in data.items()}
        given = [_rules(data.pop(k)) for k in RULE_KEYS if data.get(k) is not None]
        if given:
            bad = next((g for g in given if not isinstance(g, list)), None)
            data["text_replacements"] = bad if bad is not None else [r for g in given for r in g]
        return flatten_synonyms(
            data,
            {
                "dispatch_metadata_template": ("template",),
                "call_id": ("session_id",),
                "caller_number": ("from",),
                "dialed_number": ("to",),
            },
        )


def parse_dispatch(raw: str | Mapping[str, Any] | None, *, source: str = "dispatch") -> Dispatch:
    """Parses job metadata (JSON text or an object); empty means no overrides."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return Dispatch()
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source}: not valid JSON ({exc.msg} at {exc.pos})") from None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: expected a JSON object")
    try:
        return Dispatch.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, source)) from None


_PIPELINE_KEYS = set(AgentConfig.model_fields) | {
    "system_prompt",
    "voice",
    "intent",
    "llm_options",
    "stack_preferences",
    "constraints",
}


def apply_template(agent: AgentConfig, template: Mapping[str, Any]) -> AgentConfig:
    """The persisted agent wins; the template fills the fields the agent leaves unset."""
    if not template:
        return agent
    from worker.config.agent import snake

    pipeline = {k: v for k, v in template.items() if snake(str(k)) in _PIPELINE_KEYS}
    if not pipeline:
        return agent
    base = parse_agent(pipeline, source="dispatchMetadataTemplate")
    unset = {
        name: getattr(base, name)
        for name in base.model_fields_set
        if name not in agent.model_fields_set
    }
    return agent.model_copy(update=unset)


def merge(agent: AgentConfig, dispatch: Dispatch) -> AgentConfig:
    """Applies per-call overrides field by field; the result is validated again."""
    agent = apply_template(agent, dispatch.dispatch_metadata_template)
    update: dict[str, Any] = {}

    def put(field: str, value: Any) -> None:
        if value is not None:
            update[field] = value

    put("prompt", dispatch.system_prompt)
    put("first_message", dispatch.first_message)
    put("voice_id", dispatch.voice)
    put("language", dispatch.intent.language or dispatch.stt_options.language)
    put("optimize_for", dispatch.intent.optimize_for)
    llm = dispatch.llm
    if llm.provider is not None and llm.provider != agent.llm_provider:
        # A different backend for this call: the agent's custom endpoint does not carry over.
        update.update(llm_base_url=None, llm_api_key=None, llm_extra_body=None)
        put("llm_provider", llm.provider)
    put("llm_model", llm.model)
    put("temperature", llm.temperature)
    put("max_tokens", llm.max_tokens)
    put("tts_speaking_rate", dispatch.tts_options.speaking_rate)
    put("tts_playback_rate", dispatch.tts_options.playback_rate)
    put("tts_model", dispatch.tts_options.model)
    put("stt_model", dispatch.stt_options.model)
    put("response_delay_seconds", dispatch.stt_options.response_delay_seconds)
    if dispatch.background_audio is not None:
        put("background_noise_preset", dispatch.background_audio.preset)
        put("background_noise_volume", dispatch.background_audio.volume)
    put("save_audio_recording", dispatch.save_audio_recording)

    call_lists = dispatch.constraints.allowed_providers
    update["allowed_providers"] = AllowedProviders(
        stt=call_lists.stt if call_lists.stt is not None else agent.allowed_providers.stt,
        llm=call_lists.llm if call_lists.llm is not None else agent.allowed_providers.llm,
        tts=call_lists.tts if call_lists.tts is not None else agent.allowed_providers.tts,
    )
    overrides = [o for o in (dispatch.amd, dispatch.telephony.amd) if o is not None]
    if overrides:
        base = agent.amd.model_dump() if agent.amd else {}
        for override in overrides:
            base = override.apply(base)
        update["amd"] = base
    update["metadata"] = {**template_metadata(dispatch), **agent.metadata, **dispatch.metadata}

    data = agent.model_dump(exclude_none=True)
    data.update({k: v for k, v in update.items() if v is not None or k.startswith("llm_")})
    data = {k: v for k, v in data.items() if v is not None}
    for name in ("llm_api_key", "webhook_secret"):
        secret = getattr(agent, name)
        if secret is not None and name not in update:
            data[name] = secret.get_secret_value()
    data["webhooks"] = agent.webhooks
    return parse_agent(data, source="merged config")


def template_metadata(dispatch: Dispatch) -> dict[str, Any]:
    """Template keys that are not pipeline fields are static call metadata."""
    from worker.config.agent import snake

    return {
        k: v
        for k, v in dispatch.dispatch_metadata_template.items()
        if snake(str(k)) not in _PIPELINE_KEYS
    }


_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}")


def fill_placeholders(text: str, values: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    """Fills ``{{name}}`` from ``values``; unknown names stay intact and are returned."""
    unknown: list[str] = []

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in values and values[name] is not None:
            return str(values[name])
        if name not in unknown:
            unknown.append(name)
        return match.group(0)

    return _PLACEHOLDER.sub(sub, text), tuple(unknown)
