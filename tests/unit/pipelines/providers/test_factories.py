"""Provider factories: what each plugin instance is built with."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from pipelines.providers import ProviderSpec, build, shared_ssl_context


@pytest.mark.parametrize("layer", ["tts", "stt"])
async def test_openai_plugins_share_the_process_tls_context(layer: str) -> None:
    """No per-call CA-bundle parse on the call's loop: every OpenAI client of the process
    is built on the one context ``prewarm`` made."""
    model = {"llm": "gpt-4o-mini", "tts": "tts-1", "stt": "whisper-1"}[layer]
    spec = ProviderSpec(layer=layer, vendor="openai", model=model, base_url="http://127.0.0.1:9/v1")
    first: Any = build(spec)
    second: Any = build(spec)
    try:
        for plugin in (first, second):
            assert plugin._client._client._transport._pool._ssl_context is shared_ssl_context()
        assert first._client is not second._client
    finally:
        await first.aclose()
        await second.aclose()
    if layer != "stt":  # the STT plugin never closes its client, given or its own
        # the plugin owns the client it was handed: no connection pool outlives the call
        assert first._client.is_closed() and second._client.is_closed()


async def test_llm_client_gets_the_key_and_the_spec_hides_it() -> None:
    spec = ProviderSpec(layer="llm", vendor="openai", model="gpt-4o-mini", api_key="sk-secret-1")
    plugin: Any = build(spec)
    try:
        assert plugin._headers["Authorization"] == "Bearer sk-secret-1"
        assert "sk-secret-1" not in repr(spec)
        assert "sk-secret-1" not in repr(plugin._opts)
        assert plugin.provider == "api.openai.com"
    finally:
        await plugin.aclose()


def test_rehearsal_runs_every_vendor_plugin(caplog: pytest.LogCaptureFixture) -> None:
    """The rehearsal swallows errors (it must never fail a process start), so a plugin or
    SDK change that breaks it is caught here: each vendor's exchange must complete."""
    from pipelines.providers import warm_vendor_plugins

    with caplog.at_level(logging.DEBUG, logger="pipelines.providers.warmup"):
        took = warm_vendor_plugins()
    assert not [r for r in caplog.records if "failed" in r.getMessage()]
    assert set(took) == {
        "deepgram:stt",
        "baseten:stt",
        "assemblyai:stt",
        "openai:stt",
        "openai:llm",
        "elevenlabs:tts",
        "openai:tts",
        "speechify:tts",
        "anthropic:llm",
        "cartesia:tts",
    }
    assert any("warm-up audio" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        (None, "wss://api.deepgram.com/v2/listen"),
        ("ws://127.0.0.1:9001/v1/listen", "ws://127.0.0.1:9001/v2/listen"),
        ("http://127.0.0.1:9001/", "http://127.0.0.1:9001/v2/listen"),
    ],
)
async def test_flux_is_deepgrams_v2_client_on_the_same_host(
    base_url: str | None, expected: str
) -> None:
    """Issue 14: 'Flux is the v2 API (/v2/listen, the plugin's STTv2)', not v1 with model
    flux; ``DEEPGRAM_BASE_URL`` names the v1 live URL."""
    from livekit.plugins import deepgram

    plugin: Any = build(
        ProviderSpec("stt", "deepgram", "flux", base_url=base_url, api_key="dg-secret")
    )
    try:
        assert isinstance(plugin, deepgram.STTv2)
        assert plugin.model == "flux-general-en"
        assert plugin._opts.endpoint_url == expected
    finally:
        await plugin.aclose()
    nova: Any = build(ProviderSpec("stt", "deepgram", "nova-3", api_key="k"))
    assert isinstance(nova, deepgram.STT)
    await nova.aclose()


@pytest.mark.parametrize(
    ("language", "model"),
    [("en-US", "universal-streaming-english"), ("de", "universal-streaming-multilingual")],
)
async def test_assemblyai_family_maps_to_the_plugins_model(language: str, model: str) -> None:
    plugin: Any = build(
        ProviderSpec("stt", "assemblyai", "universal-streaming", api_key="k", language=language)
    )
    try:
        assert plugin.model == model and plugin.capabilities.streaming
    finally:
        await plugin.aclose()


async def test_baseten_needs_its_deployment_url() -> None:
    """Baseten has no shared endpoint: without one the plugin would read the process
    environment; the factory names the setting instead."""
    from pipelines.errors import ConfigError

    with pytest.raises(ConfigError, match="baseten_base_url"):
        build(ProviderSpec("stt", "baseten", "whisper-v3", api_key="k"))
    url = "ws://127.0.0.1:9/environments/production/websocket"
    plugin: Any = build(ProviderSpec("stt", "baseten", "whisper-v3", base_url=url, api_key="k"))
    try:
        assert plugin.capabilities.streaming and plugin.capabilities.interim_results
        assert plugin._model_endpoint == url
    finally:
        await plugin.aclose()
