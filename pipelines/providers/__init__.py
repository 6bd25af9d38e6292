"""Providers: one factory per vendor (LiveKit's own plugins), the lean OpenAI-compatible LLM
client, the local engines' LiveKit adapters, catalog routing, the per-process warmup, and
mid-call failover (``pipelines.providers.failover``).
"""

from pipelines.providers.factories import (
    ProviderSpec,
    build,
    shared_ssl_context,
    speaking_rate_knob,
    supports,
    vendor_speaking_rate,
)
from pipelines.providers.local_stt import MoonshineSTT, PocketsphinxSTT
from pipelines.providers.local_tts import EspeakTTS
from pipelines.providers.openai_llm import ChatCompletionsLLM, ChatOptions, ChunkParser, sse_events
from pipelines.providers.routing import Catalog, CatalogEntry, Route, parse_entry, route
from pipelines.providers.voices import CatalogVoice, VoiceCatalog
from pipelines.providers.warmup import warm_vendor_plugins

__all__ = [
    "Catalog",
    "CatalogEntry",
    "CatalogVoice",
    "ChatCompletionsLLM",
    "ChatOptions",
    "ChunkParser",
    "EspeakTTS",
    "MoonshineSTT",
    "PocketsphinxSTT",
    "ProviderSpec",
    "Route",
    "VoiceCatalog",
    "build",
    "parse_entry",
    "route",
    "shared_ssl_context",
    "speaking_rate_knob",
    "sse_events",
    "supports",
    "vendor_speaking_rate",
    "warm_vendor_plugins",
]
