"""Provider factories: one catalog entry in, one LiveKit plugin instance out.

Vendor plugins are LiveKit's own (livekit-plugins-deepgram/-openai/-elevenlabs/-speechify/
-cartesia/-anthropic): they already speak each vendor's streaming protocol, reconnect and
report metrics, and every one takes a ``base_url`` so tests and self-hosted deployments
point them at local servers. The offline stack (Moonshine, pocketsphinx, espeak-ng, llama.cpp) is
built the same way.
One exception: every chat LLM (OpenAI, custom and local OpenAI-compatible endpoints) is
``openai_llm.ChatCompletionsLLM``, a lean streaming client on the job's aiohttp session,
because the OpenAI plugin's SDK path costs several ms per reply (see that module).
"""

from __future__ import annotations

import functools
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from livekit.agents import llm, stt, tts

from pipelines.errors import ConfigError

logger = logging.getLogger(__name__)

_P = TypeVar("_P")


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


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """The process's TLS context, the one LiveKit's shared aiohttp session uses.

    Building a context parses the whole CA bundle (~0.1-0.2 s of CPU); the OpenAI client
    would build one per plugin instance, on the call's event loop as the call starts.
    ``prewarm`` builds this one before the process takes a job; ``SSLContext`` is safe to
    share across clients and loops.
    """
    from livekit.agents.utils.http_context import _create_ssl_context

    return _create_ssl_context()


def _openai_client(spec: ProviderSpec) -> Any:
    """The ``openai.AsyncClient`` LiveKit's OpenAI plugins would make (no retries, same
    timeouts and pool), on ``shared_ssl_context``."""
    import httpx2
    import openai

    return openai.AsyncClient(
        # Keyless custom endpoints still need a value: the OpenAI client refuses none.
        api_key=spec.api_key or ("no-key" if spec.base_url else None),
        base_url=spec.base_url,
        max_retries=0,
        http_client=httpx2.AsyncClient(
            verify=shared_ssl_context(),
            timeout=httpx2.Timeout(connect=15.0, read=5.0, write=5.0, pool=5.0),
            follow_redirects=True,
            limits=httpx2.Limits(
                max_connections=50, max_keepalive_connections=50, keepalive_expiry=120
            ),
        ),
    )


def _owning(plugin: _P) -> _P:
    """Hands the client to the plugin, so ``aclose`` closes it (as ``with_azure`` does)."""
    if hasattr(plugin, "_owns_client"):
        plugin._owns_client = True
    return plugin


def _local_stt(spec: ProviderSpec) -> stt.STT[Any]:
    from pipelines.providers.local_stt import MoonshineSTT, PocketsphinxSTT

    if spec.model == "moonshine":
        return MoonshineSTT(language=spec.language)
    return PocketsphinxSTT(language=spec.language)


def _deepgram_stt(spec: ProviderSpec) -> stt.STT[Any]:
    from livekit.plugins import deepgram

    if spec.model.startswith("flux"):
        return _deepgram_flux_stt(spec)
    return deepgram.STT(
        **_kw(
            model=spec.model, language=spec.language, api_key=spec.api_key, base_url=spec.base_url
        )
    )


FLUX_MODELS = {"flux": "flux-general-en"}
"""Catalog model -> Deepgram's v2 (Flux) model name; ``flux-...`` names pass through."""
DEEPGRAM_FLUX_URL = "wss://api.deepgram.com/v2/listen"
PARTIAL_INTERVAL = 0.5
"""Seconds of speech between Baseten's partial transcripts (its default is 1.0): the
failover clock owes an interim within ``stt_deadline`` of speech, and a partial every
second leaves a healthy provider too little margin under the 1.5 s default."""


def _flux_url(base_url: str | None) -> str:
    """``DEEPGRAM_BASE_URL`` names the v1 live URL; Flux is served at ``/v2/listen`` of the
    same host (as api.deepgram.com does)."""
    if not base_url:
        return DEEPGRAM_FLUX_URL
    root = base_url.rstrip("/").removesuffix("/v1/listen").removesuffix("/v2/listen")
    return f"{root}/v2/listen"


def _deepgram_flux_stt(spec: ProviderSpec) -> stt.STT[Any]:
    from livekit.plugins import deepgram

    # STTv2: Flux's own StartOfTurn/EndOfTurn become START/END_OF_SPEECH events, which
    # drive the turn when the plan says ``turn_detection: stt``.
    return deepgram.STTv2(
        **_kw(api_key=spec.api_key),
        model=FLUX_MODELS.get(spec.model, spec.model),
        base_url=_flux_url(spec.base_url),
    )


def _baseten_stt(spec: ProviderSpec) -> stt.STT[Any]:
    from livekit.plugins import baseten

    if not spec.base_url:
        # the plugin would fall back to the process environment; a deployment is named
        raise ConfigError(
            "baseten needs the Whisper deployment's WebSocket URL", field="baseten_base_url"
        )
    return baseten.STT(
        **_kw(api_key=spec.api_key),
        model_endpoint=spec.base_url,
        language=spec.language.split("-")[0],
        partial_transcript_interval_s=PARTIAL_INTERVAL,
    )


def _assemblyai_stt(spec: ProviderSpec) -> stt.STT[Any]:
    from livekit.plugins import assemblyai

    # The catalog names the family; the plugin names its English and multilingual models.
    model = spec.model
    if model == "universal-streaming":
        english = spec.language.split("-")[0].lower() == "en"
        model = f"universal-streaming-{'english' if english else 'multilingual'}"
    return assemblyai.STT(
        **_kw(api_key=spec.api_key, base_url=spec.base_url),
        model=model,  # type: ignore[arg-type]
    )


def _openai_stt(spec: ProviderSpec) -> stt.STT[Any]:
    from livekit.plugins import openai

    return openai.STT(
        **_kw(model=spec.model, language=spec.language.split("-")[0]),
        client=_openai_client(spec),
    )


def _openai_llm(spec: ProviderSpec) -> llm.LLM[Any]:
    from pipelines.providers.openai_llm import DEFAULT_BASE_URL, ChatCompletionsLLM, ChatOptions

    return ChatCompletionsLLM(
        ChatOptions(
            model=spec.model,
            base_url=spec.base_url or DEFAULT_BASE_URL,
            api_key=spec.api_key,
            temperature=spec.temperature,
            max_completion_tokens=spec.max_tokens,
            extra_body=spec.extra_body,
        )
    )


def _speechify_llm(spec: ProviderSpec) -> llm.LLM[Any]:
    """The platform LLM (Speechify's Kimi K2.6): an OpenAI-compatible endpoint with no
    public default URL, so it must be given one."""
    if not spec.base_url:
        raise ConfigError(
            "the speechify LLM needs its OpenAI-compatible base URL (SPEECHIFY_LLM_BASE_URL)",
            field="providers.llm",
        )
    return _openai_llm(spec)


def _anthropic_llm(spec: ProviderSpec) -> llm.LLM[Any]:
    from livekit.plugins import anthropic

    return anthropic.LLM(
        **_kw(
            model=spec.model,
            api_key=spec.api_key,
            base_url=spec.base_url,
            temperature=spec.temperature,
            max_tokens=spec.max_tokens,
        )
    )


def _local_tts(spec: ProviderSpec) -> tts.TTS[Any]:
    from pipelines.engines import DEFAULT_VOICE, resolve_voice
    from pipelines.providers.local_tts import EspeakTTS

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

    speed = vendor_speaking_rate("elevenlabs", spec.model, spec.speaking_rate)
    # a request's voice_settings replace the voice's stored ones: ElevenLabs' defaults
    # for the rest (stability 0.5, similarity 0.75)
    settings = elevenlabs.VoiceSettings(0.5, 0.75, speed=speed) if speed is not None else None
    return elevenlabs.TTS(
        **_kw(
            model=spec.model,
            voice_id=spec.voice,
            api_key=spec.api_key,
            base_url=spec.base_url,
            encoding="pcm_22050",
            voice_settings=settings,
        )
    )


def _openai_tts(spec: ProviderSpec) -> tts.TTS[Any]:
    from livekit.plugins import openai

    # Raw PCM: no decoder on the hot path, and what the local wire server speaks.
    return _owning(
        openai.TTS(
            **_kw(
                model=spec.model,
                voice=spec.voice,
                speed=vendor_speaking_rate("openai", spec.model, spec.speaking_rate),
                response_format="pcm",
            ),
            client=_openai_client(spec),
        )
    )


def _speechify_tts(spec: ProviderSpec) -> tts.TTS[Any]:
    from pipelines.providers.speechify_tts import SpeechifyTTS

    return SpeechifyTTS(
        speaking_rate=spec.speaking_rate,
        **_kw(model=spec.model, voice_id=spec.voice, api_key=spec.api_key, base_url=spec.base_url),
    )


CARTESIA_SAMPLE_RATE = 24000


def _cartesia_tts(spec: ProviderSpec) -> tts.TTS[Any]:
    from livekit.plugins import cartesia

    return cartesia.TTS(
        **_kw(
            model=spec.model,
            voice=spec.voice,
            api_key=spec.api_key,
            base_url=spec.base_url,
            language=spec.language.split("-")[0],
            speed=vendor_speaking_rate("cartesia", spec.model, spec.speaking_rate),
            sample_rate=CARTESIA_SAMPLE_RATE,
        )
    )


def speaking_rate_knob(vendor: str, model: str) -> bool:
    """Whether this worker hands a speaking rate to the vendor's TTS: ElevenLabs
    (``voice_settings.speed``), OpenAI (``speed``), Speechify (SSML prosody), espeak, and
    Cartesia's sonic-3 models (``generation_config.speed``; at the plugin's API version
    older models take none)."""
    if vendor == "cartesia":
        return model.startswith("sonic-3")
    return vendor in ("elevenlabs", "openai", "speechify", "local")


SPEAKING_RATE_RANGES = {"elevenlabs": (0.7, 1.2), "cartesia": (0.6, 2.0), "openai": (0.25, 4.0)}
"""The speeds each vendor's API accepts (outside them it answers 400)."""


def vendor_speaking_rate(vendor: str, model: str, rate: float | None) -> float | None:
    """The rate the vendor's TTS is given for ``rate``: within its range, ``None`` when
    it has no knob (or no rate was asked)."""
    if rate is None or not speaking_rate_knob(vendor, model):
        return None
    low, high = SPEAKING_RATE_RANGES.get(vendor, (0.0, float("inf")))
    return min(max(rate, low), high)


FACTORIES: dict[tuple[str, str], Callable[[ProviderSpec], Any]] = {
    ("stt", "local"): _local_stt,
    ("stt", "deepgram"): _deepgram_stt,
    ("stt", "openai"): _openai_stt,
    ("stt", "baseten"): _baseten_stt,
    ("stt", "assemblyai"): _assemblyai_stt,
    ("llm", "local"): _openai_llm,
    ("llm", "custom"): _openai_llm,
    ("llm", "openai"): _openai_llm,
    ("llm", "speechify"): _speechify_llm,
    ("llm", "anthropic"): _anthropic_llm,
    ("tts", "local"): _local_tts,
    ("tts", "elevenlabs"): _elevenlabs_tts,
    ("tts", "openai"): _openai_tts,
    ("tts", "speechify"): _speechify_tts,
    ("tts", "cartesia"): _cartesia_tts,
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
