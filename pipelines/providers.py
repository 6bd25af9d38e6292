"""Provider factories: one catalog entry in, one LiveKit plugin instance out.

Vendor plugins are LiveKit's own (livekit-plugins-deepgram/-openai/-elevenlabs): they
already speak each vendor's streaming protocol, reconnect and report metrics, and every
one takes a ``base_url`` so tests and self-hosted deployments point them at local
servers. The offline stack (pocketsphinx, espeak-ng, llama.cpp) is built the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from livekit.agents import llm, stt, tts

from .errors import ConfigError

logger = logging.getLogger("pipelines.providers")


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """Everything a factory needs, resolved; ``api_key`` is the plain secret."""

    layer: str
    vendor: str
    model: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    language: str = "en"
    voice: str | None = None
    speaking_rate: float | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    extra_body: Mapping[str, Any] | None = None

    @property
    def id(self) -> str:
        return f"{self.vendor}:{self.model}"


def _kw(**values: Any) -> dict[str, Any]:
    """Drops unset options so each plugin keeps its own default."""
    return {k: v for k, v in values.items() if v is not None}


def _local_stt(spec: ProviderSpec) -> stt.STT[Any]:
    from .local_stt import PocketsphinxSTT

    return PocketsphinxSTT(language=spec.language)


def _deepgram_stt(spec: ProviderSpec) -> stt.STT[Any]:
    from livekit.plugins import deepgram

    return deepgram.STT(
        **_kw(
            model=spec.model, language=spec.language, api_key=spec.api_key, base_url=spec.base_url
        )
    )


def _openai_stt(spec: ProviderSpec) -> stt.STT[Any]:
    from livekit.plugins import openai

    return openai.STT(
        **_kw(
            model=spec.model,
            language=spec.language.split("-")[0],
            api_key=spec.api_key,
            base_url=spec.base_url,
        )
    )


def _openai_llm(spec: ProviderSpec) -> llm.LLM[Any]:
    from livekit.plugins import openai

    return openai.LLM(
        **_kw(
            model=spec.model,
            # Keyless custom endpoints still need a value: the OpenAI client refuses none.
            api_key=spec.api_key or ("no-key" if spec.base_url else None),
            base_url=spec.base_url,
            temperature=spec.temperature,
            max_completion_tokens=spec.max_tokens,
            extra_body=dict(spec.extra_body) if spec.extra_body else None,
        )
    )


def _local_tts(spec: ProviderSpec) -> tts.TTS[Any]:
    from .local_tts import DEFAULT_VOICE, EspeakTTS, resolve_voice

    voice = DEFAULT_VOICE
    if spec.voice:
        try:
            voice = resolve_voice(spec.voice)
        except ValueError:
            # A vendor voice id (after failover) has no espeak twin: speak, don't fail.
            logger.warning("voice %r is not an espeak voice; using %s", spec.voice, voice)
    return EspeakTTS(voice=voice, speaking_rate=spec.speaking_rate or 1.0)


def _elevenlabs_tts(spec: ProviderSpec) -> tts.TTS[Any]:
    from livekit.plugins import elevenlabs

    return elevenlabs.TTS(
        **_kw(
            model=spec.model,
            voice_id=spec.voice,
            api_key=spec.api_key,
            base_url=spec.base_url,
            encoding="pcm_22050",
        )
    )


def _openai_tts(spec: ProviderSpec) -> tts.TTS[Any]:
    from livekit.plugins import openai

    # Raw PCM: no decoder on the hot path, and what the local wire server speaks.
    return openai.TTS(
        **_kw(
            model=spec.model,
            voice=spec.voice,
            api_key=spec.api_key,
            base_url=spec.base_url,
            speed=spec.speaking_rate,
            response_format="pcm",
        )
    )


FACTORIES: dict[tuple[str, str], Callable[[ProviderSpec], Any]] = {
    ("stt", "local"): _local_stt,
    ("stt", "deepgram"): _deepgram_stt,
    ("stt", "openai"): _openai_stt,
    ("llm", "local"): _openai_llm,
    ("llm", "custom"): _openai_llm,
    ("llm", "openai"): _openai_llm,
    ("tts", "local"): _local_tts,
    ("tts", "elevenlabs"): _elevenlabs_tts,
    ("tts", "openai"): _openai_tts,
}
"""(layer, vendor) pairs this worker can build."""


def supports(layer: str, vendor: str) -> bool:
    return (layer, vendor) in FACTORIES


def build(spec: ProviderSpec) -> Any:
    """The plugin instance for ``spec`` (an ``stt.STT``, ``llm.LLM`` or ``tts.TTS``)."""
    factory = FACTORIES.get((spec.layer, spec.vendor))
    if factory is None:
        raise ConfigError(
            f"no {spec.layer} integration for vendor {spec.vendor!r}",
            field=f"providers.{spec.layer}",
        )
    return factory(spec)
