"""The voice catalog in the plan: the TTS chain starts at the vendor serving the agent's
voice slug; every other TTS speaks its nearest voice, never the slug; the speaking rate's
fate per TTS is in the plan."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from pipelines.errors import ConfigError
from pipelines.providers import Catalog, VoiceCatalog
from worker.config import parse_agent, parse_dispatch
from worker.plan import SessionPlan, resolve
from worker.settings import REPO_ROOT, Settings

MakeSettings = Callable[..., Settings]

FIXTURES = REPO_ROOT / "fixtures/control_plane"
EVERY_KEY = {
    "deepgram_api_key": "k",
    "openai_api_key": "k",
    "eleven_api_key": "k",
    "speechify_api_key": "k",
    "speechify_llm_base_url": "http://127.0.0.1:9/v1",
    "cartesia_api_key": "k",
    "anthropic_api_key": "k",
}
# 001 ("Create Agent"): a voice slug, no LLM (the platform default), no STT.
SPEECHIFY_AGENT = {
    "name": "Front desk",
    "voice_id": "oliver",
    "prompt": "Be kind.",
    "language": "en",
}


@pytest.fixture(scope="module")
def catalogs() -> tuple[Catalog, VoiceCatalog]:
    providers = json.loads((FIXTURES / "providers.json").read_text())
    voices = json.loads((FIXTURES / "voices.json").read_text())
    return Catalog.from_json(providers), VoiceCatalog.from_json(voices)


@pytest.fixture
def plan(
    catalogs: tuple[Catalog, VoiceCatalog], settings: MakeSettings
) -> Callable[..., SessionPlan]:
    def make(agent: dict[str, Any], **overrides: Any) -> SessionPlan:
        providers, voices = catalogs
        return resolve(
            parse_agent(agent), None, parse_dispatch(None), providers, settings(**overrides), voices
        )

    return make


def tts(p: SessionPlan) -> list[tuple[str, str | None]]:
    return [(c.id, c.voice) for c in p.providers["tts"]]


def test_a_speechify_voice_is_spoken_by_speechify_first(plan: Any) -> None:
    """001: 'voice_id: Speechify voice slug' — Speechify leads however the others rank."""
    p = plan(SPEECHIFY_AGENT, **EVERY_KEY)
    chain = tts(p)
    assert chain[0] == ("speechify:simba-3.2", "oliver")
    assert chain[1] == ("speechify:simba-3.0", "oliver")
    voices = dict(chain)
    # the fallbacks speak their own nearest (en, male) voice, never "oliver"
    assert voices["elevenlabs:eleven_flash_v2_5"] == "pNInz6obpgDQGcFmaJgB"
    assert voices["cartesia:sonic-3"] == "a0e99841-438c-4a64-b679-ae501e7d6091"
    assert voices["openai:gpt-4o-mini-tts"] == "onyx"
    assert voices["local:espeak"] is None  # no catalog voice: espeak's default
    assert "tts: elevenlabs:eleven_flash_v2_5 speaks 'adam' for 'oliver' (en-US male)" in (
        p.warnings
    )
    # done when: no "no integration" warning for this vendors, the platform LLM first
    mine = ("speechify", "anthropic", "cartesia")
    assert not [w for w in p.warnings if "left out" in w and any(v in w for v in mine)]
    assert p.providers["llm"][0].id == "speechify:kimi-k2.6"


def test_gender_then_language_pick_the_nearest_voice(plan: Any) -> None:
    p = plan({**SPEECHIFY_AGENT, "voice_id": "lisa"}, **EVERY_KEY)
    assert dict(tts(p))["elevenlabs:eleven_flash_v2_5"] == "21m00Tcm4TlvDq8ikWAM"  # rachel
    # a Spanish voice: no Spanish ElevenLabs voice in the catalog -> its default voice
    p = plan({**SPEECHIFY_AGENT, "voice_id": "elena", "language": "es"}, **EVERY_KEY)
    assert tts(p)[0] == ("speechify:simba-3.0", "elena")  # simba-3.2 is English only
    assert dict(tts(p))["elevenlabs:eleven_flash_v2_5"] is None
    assert "tts: elevenlabs:eleven_flash_v2_5 has no voice near 'elena': its default voice" in (
        p.warnings
    )


def test_voice_vendor_without_credentials_is_said(plan: Any) -> None:
    keys = {k: v for k, v in EVERY_KEY.items() if not k.startswith("speechify")}
    p = plan(SPEECHIFY_AGENT, **keys)
    assert all(not c.startswith("speechify") for c, _ in tts(p))
    assert "oliver" not in [v for _, v in tts(p)]
    assert any("'oliver' is a speechify voice and speechify cannot serve" in w for w in p.warnings)


def test_a_pinned_tts_model_still_leads_with_its_nearest_voice(plan: Any) -> None:
    p = plan({**SPEECHIFY_AGENT, "tts_model": "eleven_flash_v2_5"}, **EVERY_KEY)
    assert tts(p)[0] == ("elevenlabs:eleven_flash_v2_5", "pNInz6obpgDQGcFmaJgB")


def test_an_unknown_slug_goes_as_is_and_the_plan_says_so(plan: Any) -> None:
    p = plan({**SPEECHIFY_AGENT, "voice_id": "en-us+f3"}, **EVERY_KEY)
    assert {v for _, v in tts(p)} == {"en-us+f3"}
    assert "tts: voice 'en-us+f3' is not in the voice catalog: sent as is to every TTS" in (
        p.warnings
    )


def test_speaking_rate_reaches_every_knob_and_the_rest_is_said(plan: Any) -> None:
    """Issue: 'Speaking rate reaches every TTS that has a knob ...; where one has none the
    plan says so.'"""
    p = plan(
        {
            **SPEECHIFY_AGENT,
            "tts_speaking_rate": 1.5,
            "stackPreferences": {"allowedProviders": {"tts": ["cartesia", "elevenlabs"]}},
        },
        **EVERY_KEY,
    )
    assert p.speech.speaking_rate == 1.5
    assert "tts_speaking_rate 1.5 not applied by cartesia:sonic-2 (no speaking-rate option)" in (
        p.warnings
    )
    assert (
        "tts_speaking_rate 1.5 applied by elevenlabs:eleven_flash_v2_5 as 1.2 (its range)"
        in p.warnings
    )
    assert not [w for w in p.warnings if "cartesia:sonic-3" in w and "rate" in w]


def test_voice_catalog_entries_are_checked() -> None:
    assert VoiceCatalog.from_json([{"slug": "a", "provider": "Speechify"}]).voices[0].voice_id == (
        "a"
    )
    with pytest.raises(ConfigError, match=r"voices\[0\]\.provider"):
        VoiceCatalog.from_json([{"slug": "a"}])
    with pytest.raises(ConfigError, match="expected a list of voices"):
        VoiceCatalog.from_json({"voices": 3})


def test_each_tts_is_built_with_its_own_voice_and_the_rate(plan: Any) -> None:
    from worker.call.session import provider_spec

    p = plan({**SPEECHIFY_AGENT, "tts_speaking_rate": 1.1}, **EVERY_KEY)
    specs = [provider_spec("tts", c, p) for c in p.providers["tts"]]
    assert [s.voice for s in specs] == [c.voice for c in p.providers["tts"]]
    assert specs[0].voice == "oliver" and "oliver" not in [s.voice for s in specs[2:]]
    assert {s.speaking_rate for s in specs} == {1.1}
