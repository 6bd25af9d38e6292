"""``SessionPlan``: every decision about a call, frozen. ``resolve`` makes one;
``plan_to_json`` is what ``voice-worker plan`` prints (secrets appear only as
``*_set: true``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from pipelines.types import AMDCategory, Layer
from worker.config import AMDAction, ToolPlan


@dataclass(frozen=True, slots=True)
class ProviderChoice:
    """One link of a layer's provider chain."""

    id: str
    """``vendor:model`` as in the catalog."""
    vendor: str
    model: str
    score: float
    """Catalog score for the agent's ``optimize_for``."""
    base_url: str | None = None
    api_key: SecretStr | None = field(default=None, repr=False)
    """Credential for this provider; serialised only as ``api_key_set``."""
    voice: str | None = None
    """TTS: the vendor's own id of the voice it speaks (``worker.plan.voices``)."""


@dataclass(frozen=True, slots=True)
class Endpointing:
    vad_aggressiveness: int
    """webrtcvad mode 0..3 (3 filters noise hardest)."""
    min_speech_duration: float
    min_silence_duration: float
    min_delay: float
    """``response_delay_seconds``: wait after the caller stops before replying."""
    max_delay: float
    allow_interruptions: bool
    min_interruption_duration: float
    """Caller speech (s) needed to interrupt, from ``interruption_threshold``."""
    turn_detection: str
    """``vad`` (webrtcvad endpointing) or ``stt`` (the STT's semantic end of turn)."""
    end_of_turn_by: str | None = None
    """With ``turn_detection: stt``, the STT whose end-of-turn events end the caller's turn;
    ``response_delay_seconds`` does not apply to it (``min_delay`` is 0)."""


@dataclass(frozen=True, slots=True)
class LLMSettings:
    temperature: float
    max_tokens: int | None
    context_window: int
    """Prior turns kept in the prompt."""
    extra_body: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Speech:
    voice: str | None
    speaking_rate: float | None
    """Sent to the TTS provider when it supports it."""
    playback_rate: float | None
    """Pitch-preserving time-stretch in the worker; ``None`` = pass-through."""


@dataclass(frozen=True, slots=True)
class NoiseBed:
    preset: str
    volume: float


@dataclass(frozen=True, slots=True)
class AMDPlan:
    timeout_seconds: float
    actions: Mapping[AMDCategory, AMDAction]
    voicemail_message: str | None
    greet_immediately: bool
    llm_tiebreaker: bool
    max_navigation_attempts: int


@dataclass(frozen=True, slots=True)
class Webhook:
    url: str
    secret: SecretStr | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Timeouts:
    inactivity: float
    stt_deadline: float
    llm_first_token_deadline: float
    tts_first_byte_deadline: float
    return_to_primary: bool


@dataclass(frozen=True, slots=True)
class SessionPlan:
    """A frozen, fully resolved description of one call."""

    agent_id: str | None
    agent_name: str | None
    call_id: str | None
    direction: str | None
    language: str
    optimize_for: str
    prompt: str
    first_message: str | None
    providers: Mapping[Layer, tuple[ProviderChoice, ...]]
    """Ranked allowed chain per layer: index 0 is used first, the rest is failover."""
    excluded_providers: Mapping[Layer, tuple[tuple[str, str], ...]]
    llm: LLMSettings
    speech: Speech
    endpointing: Endpointing
    noise_bed: NoiseBed | None
    amd: AMDPlan | None
    navigator_mode: bool
    tools: tuple[ToolPlan, ...]
    timeouts: Timeouts
    webhooks: Mapping[str, Webhook]
    """``pre_call``, ``status``, ``post_call`` targets that are configured."""
    webhook_secret: SecretStr | None = field(repr=False)
    save_audio_recording: bool
    memory_enabled: bool
    ivr_memory: bool
    """001 ``ivr_memory_enabled``: replay the key path that reached a person last time."""
    metadata: Mapping[str, Any]
    text_replacements: tuple[tuple[str, str], ...]
    """``(find, replace)`` rules applied to text before TTS (pronunciation)."""
    idle_reprompts: tuple[str, ...]
    """Said after each ``timeouts.inactivity`` of caller silence; then a goodbye."""
    unresolved_placeholders: tuple[str, ...]
    warnings: tuple[str, ...]
    offline_engines: Mapping[Layer, str] = field(default_factory=dict)
    """Why the offline engines serve a layer's chain (the embedded default, or an allowlist
    naming ``local``), per layer where they do."""

    @property
    def secrets(self) -> tuple[str, ...]:
        """Secret values in this plan, for scrubbing logs and reports."""
        values = [self.webhook_secret] + [w.secret for w in self.webhooks.values()]
        values += [p.api_key for chain in self.providers.values() for p in chain]
        return tuple(v.get_secret_value() for v in values if v and v.get_secret_value())


def _jsonable(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if isinstance(item, SecretStr) or f.name in ("api_key", "secret", "webhook_secret"):
                out[f"{f.name}_set"] = item is not None
            else:
                out[f.name] = _jsonable(item)
        return out
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_jsonable(v) for v in value]
    return value


def plan_to_json(plan: SessionPlan) -> dict[str, Any]:
    """The plan as JSON-ready data; every secret appears only as ``*_set``."""
    data: dict[str, Any] = _jsonable(plan)
    return data
