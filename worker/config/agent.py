"""The agent record as the control plane serves it, validated at the boundary.

Accepts every spelling found in the reference documents: the Speko agent (camelCase
``systemPrompt``, ``voice``, ``intent.{language,optimizeFor}``, ``llmOptions``,
``stackPreferences.allowedProviders``, ``webhooks``), the create/get agent API (snake_case
``prompt``, ``voice_id``, ``llm_provider``, ``response_delay_seconds``, ...) and the calls
API agent (``system_prompt``, ``stt_model``, ``interruption_threshold``, ``tools``, ...).
Unknown fields are ignored so they never reach a decision; write-only secrets are
``SecretStr`` and never echoed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from pipelines.audio import PLAYBACK_RATE_RANGE
from pipelines.errors import ConfigError
from pipelines.types import AMD_CATEGORIES, AMDCategory, Layer, OptimizeFor

AMDAction = Literal["continue", "voicemail", "hangup", "navigate"]
AGENT_ID_PATTERN = re.compile(r"^agent_[0-9A-HJKMNP-TVW-Za-hjkmnp-tvw-z]{26}$")
"""``agent_`` + 26 Crockford base32 characters (no I, L, O, U)."""

_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def snake(key: str) -> str:
    return _CAMEL.sub(r"_\1", key).lower()


def _between(lo: float, hi: float) -> Callable[[float | None], float | None]:
    def check(value: float | None) -> float | None:
        if value is not None and not (lo <= value <= hi):
            raise ValueError(f"must be between {lo} and {hi}")
        return value

    return check


def Range(lo: float, hi: float) -> AfterValidator:
    return AfterValidator(_between(lo, hi))


Temperature = Annotated[float | None, Range(0.0, 1.0)]
MaxTokens = Annotated[int | None, Range(1, 32768)]
SpeakingRate = Annotated[float | None, Range(0.5, 2.0)]
PlaybackRate = Annotated[float | None, Range(*PLAYBACK_RATE_RANGE)]
ResponseDelay = Annotated[float | None, Range(0.0, 5.0)]
Volume = Annotated[float | None, Range(0.0, 1.0)]
AMD_TIMEOUT_RANGE = (1.0, 30.0)
"""Field types whose range the agent record and the dispatch's overrides share."""


def _non_negative(value: int | None) -> int | None:
    if value is not None and value < 0:
        raise ValueError("must be 0 or more")
    return value


class Boundary(BaseModel):
    """Base of boundary models: camelCase or snake_case keys, unknown keys ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _snake_keys(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        out: dict[str, Any] = {}
        for key, value in data.items():
            # null is "not set": the default applies and a template may fill the gap.
            if value is None:
                continue
            name = snake(str(key))
            if name in out and out[name] != value:
                raise ValueError(f"{name}: given twice with different values ({key!r})")
            out[name] = value
        return out


class AllowedProviders(Boundary):
    """Per-layer allowlists: ``vendor`` or ``vendor:model``; empty/missing = no constraint."""

    stt: tuple[str, ...] | None = None
    llm: tuple[str, ...] | None = None
    tts: tuple[str, ...] | None = None

    def for_layer(self, layer: Layer) -> tuple[str, ...] | None:
        value: tuple[str, ...] | None = getattr(self, layer)
        return value


class WebhookTarget(Boundary):
    url: str | None = None
    secret: SecretStr | None = None
    """Legacy per-webhook secret; the agent's ``webhook_secret`` is preferred."""


class Webhooks(Boundary):
    pre_call: WebhookTarget | None = None
    status: WebhookTarget | None = None
    post_call: WebhookTarget | None = None


AMD_NAVIGATION_ATTEMPTS_RANGE = (1, 20)


def flat_amd_actions(data: Any) -> Any:
    """Accepts ``{"machine_vm": "voicemail"}`` beside ``{"actions": {...}}`` (any spelling
    of the categories)."""
    if not isinstance(data, Mapping):
        return data
    data = dict(data)
    actions = data.pop("actions", None) or {}
    if not isinstance(actions, Mapping):
        data["actions"] = actions  # not an object: the field validator rejects it
        return data
    actions = dict(actions)
    for key in list(data):
        category = snake(str(key)).replace("_", "-")
        if category in AMD_CATEGORIES:
            actions[category] = data.pop(key)
    data["actions"] = {snake(str(k)).replace("_", "-"): v for k, v in actions.items()}
    return data


class AMDConfig(Boundary):
    """Answering machine detection routing: a verdict category maps to an action."""

    mode: Literal["agent", "off"] = "agent"
    """``agent``: the worker classifies the callee's first seconds and routes; ``off``."""
    timeout_seconds: Annotated[float, Range(*AMD_TIMEOUT_RANGE)] = 8.0
    """The classifier answers with what it has at this deadline."""
    actions: dict[AMDCategory, AMDAction] = Field(default_factory=dict)
    voicemail_message: str | None = None
    """Spoken after the beep; ``None`` lets the LLM write one from the prompt."""
    greet_immediately: bool = False
    """Speak the first message without waiting for a ``continue`` verdict."""
    llm_tiebreaker: bool = False
    max_navigation_attempts: Annotated[int, Range(*AMD_NAVIGATION_ATTEMPTS_RANGE)] = 3

    @model_validator(mode="before")
    @classmethod
    def _flat_actions(cls, data: Any) -> Any:
        return flat_amd_actions(data)


# Agent record: canonical field -> other accepted spellings (dotted = nested object).
_SYNONYMS: dict[str, tuple[str, ...]] = {
    "prompt": ("system_prompt",),
    "voice_id": ("voice",),
    "language": ("intent.language",),
    "optimize_for": ("intent.optimize_for",),
    "llm_model": ("llm_options.model",),
    "temperature": ("llm_options.temperature",),
    "max_tokens": ("llm_options.max_tokens",),
    "allowed_providers": (
        "stack_preferences.allowed_providers",
        "constraints.allowed_providers",
    ),
}


def _snake_tree(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {snake(str(k)): v for k, v in value.items()}
    return value


def _lookup(data: Mapping[str, Any], dotted: str) -> Any:
    head, _, rest = dotted.partition(".")
    value = _snake_tree(data).get(head) if rest else data.get(head)
    if rest:
        return _lookup(_snake_tree(value), rest) if isinstance(value, Mapping) else None
    return value


def flatten_synonyms(data: Mapping[str, Any], synonyms: Mapping[str, tuple[str, ...]]) -> Any:
    """Moves every accepted spelling onto its canonical key; differing duplicates are an
    error naming both spellings."""
    out = {snake(str(k)): v for k, v in data.items()}
    for canonical, others in synonyms.items():
        found = [(canonical, out.get(canonical))] + [(o, _lookup(out, o)) for o in others]
        given = [(name, v) for name, v in found if v is not None]
        for name, value in given[1:]:
            if value != given[0][1]:
                raise ValueError(
                    f"{canonical}: given as {given[0][0]} and {name} with different values"
                )
        if given:
            out[canonical] = given[0][1]
    return out


class AgentConfig(Boundary):
    """A persisted agent, as read from ``GET /v1/agents/{id}`` (any documented spelling)."""

    id: str | None = None
    name: str | None = None
    slug: str | None = None

    prompt: str = ""
    first_message: str | None = None
    voice_id: str | None = None
    language: str = "en"
    optimize_for: OptimizeFor = "latency"

    llm_provider: Literal["openai", "speechify", "custom"] | None = None
    llm_model: str | None = None
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_extra_body: dict[str, Any] | None = None
    temperature: Temperature = None
    max_tokens: MaxTokens = None
    context_window: Annotated[int | None, Range(1, 1000)] = None

    stt_model: str | None = None
    tts_model: str | None = None
    stt_override: Literal["whisper-v3", "flux", "gpt-realtime-whisper"] | None = None
    allowed_providers: AllowedProviders = Field(default_factory=AllowedProviders)

    tts_speaking_rate: SpeakingRate = None
    tts_playback_rate: PlaybackRate = None
    response_delay_seconds: ResponseDelay = None
    interruption_threshold: Annotated[float | None, Range(0.0, 1.0)] = None
    inactivity_timeout_seconds: Annotated[int | None, AfterValidator(_non_negative)] = None
    background_noise_preset: str | None = None
    background_noise_volume: Volume = None
    navigator_mode: bool = False
    ivr_memory_enabled: bool = True

    amd: AMDConfig | None = None
    memory_enabled: bool = False
    memory_retention_days: Annotated[int | None, AfterValidator(_non_negative)] = None
    save_audio_recording: bool = False

    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhooks: Webhooks = Field(default_factory=Webhooks)

    tools: list[dict[str, Any]] | None = None
    tool_url: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _spellings(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        return flatten_synonyms(data, _SYNONYMS)

    @model_validator(mode="after")
    def _rules(self) -> AgentConfig:
        if self.id is not None and not AGENT_ID_PATTERN.fullmatch(self.id):
            raise ValueError("id: must be agent_ followed by 26 Crockford base32 characters")
        if self.llm_provider is not None and not self.llm_model:
            raise ValueError("llm_model: required when llm_provider is set")
        if self.llm_provider == "custom" and not self.llm_base_url:
            raise ValueError("llm_base_url: required when llm_provider is custom")
        if self.llm_provider != "custom":
            for name in ("llm_base_url", "llm_api_key", "llm_extra_body"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: only valid when llm_provider is custom")
        return self

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every write-only secret value this record carries, for log/report scrubbing."""
        values = [self.llm_api_key, self.webhook_secret]
        values += [
            t.secret
            for t in (self.webhooks.pre_call, self.webhooks.status, self.webhooks.post_call)
            if t is not None
        ]
        return tuple(v.get_secret_value() for v in values if v is not None and v.get_secret_value())


def describe_validation_error(exc: ValidationError, source: str | None = None) -> str:
    """One line per problem, ``field: message``; input values are never echoed (they may
    be secrets)."""
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"] if p != "__root__")
        msg = str(err["msg"]).removeprefix("Value error, ")
        if not loc and ": " in msg:
            loc, msg = msg.split(": ", 1)
        lines.append(f"{loc}: {msg}" if loc else msg)
    prefix = f"{source}: " if source else ""
    return prefix + "; ".join(lines)


def parse_agent(data: Any, *, source: str | None = None) -> AgentConfig:
    """Validates an agent record; raises ``ConfigError`` naming every bad field."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source or 'agent'}: expected a JSON object")
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, source)) from None
