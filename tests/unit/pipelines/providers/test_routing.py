"""Routing rules (``pipelines.providers.routing``), each quoted from reference ``000_*`` "Stack
preferences" or from DESIGN.md "Routing"."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from pipelines.errors import ConfigError, RoutingError
from pipelines.providers import Catalog, CatalogEntry, Route, parse_entry, route
from pipelines.types import Layer, OptimizeFor

CATALOG = Catalog.from_json(
    {
        "providers": [
            {
                "id": "deepgram:nova-3",
                "layer": "stt",
                "scores": {"latency": 0.9, "quality": 0.9, "cost": 0.6},
            },
            {
                "id": "deepgram:nova-2",
                "layer": "stt",
                "scores": {"latency": 0.8, "quality": 0.8, "cost": 0.7},
            },
            {
                "id": "assemblyai:universal",
                "layer": "stt",
                "scores": {"latency": 0.7, "quality": 0.85, "cost": 0.9},
            },
            {
                "id": "openai:gpt-4o-transcribe",
                "layer": "stt",
                "scores": {"latency": 0.5, "quality": 0.95, "cost": 0.5},
            },
            {
                "id": "local:pocketsphinx",
                "layer": "stt",
                "scores": {"latency": 0.4, "quality": 0.2, "cost": 1.0},
                "languages": ["en"],
            },
            {"id": "openai:gpt-4o-mini", "layer": "llm", "scores": {"latency": 0.85}},
            {"id": "custom:*", "layer": "llm", "scores": {"latency": 0.6}},
            {"id": "elevenlabs:eleven_flash_v2_5", "layer": "tts", "scores": {"latency": 0.9}},
        ]
    }
)


def ids(r: Route) -> list[str]:
    return [e.id for e in r.chain]


def stt(
    allowlist: Sequence[str] | None,
    *,
    optimize_for: OptimizeFor = "latency",
    language: str = "en",
    pin: str | None = None,
    unusable: Any = None,
    layer: Layer = "stt",
) -> Route:
    kwargs: dict[str, Any] = {"unusable": unusable} if unusable else {}
    return route(
        layer,
        CATALOG,
        allowlist=allowlist,
        optimize_for=optimize_for,
        language=language,
        pin=pin,
        **kwargs,
    )


# --- vendor vs model entries ----------------------------------------------------------


def test_vendor_entry_allows_every_model_of_the_vendor() -> None:
    """'Each entry ... is either a vendor id (allow any model from that vendor)'."""
    assert ids(stt(["deepgram"])) == ["deepgram:nova-3", "deepgram:nova-2"]


def test_model_entry_allows_only_that_model() -> None:
    """'or "<vendor>:<model>" (allow only that specific model)'."""
    assert ids(stt(["deepgram:nova-2"])) == ["deepgram:nova-2"]


def test_two_model_entries_pin_two_models_without_other_vendor_models() -> None:
    """'["deepgram:nova-3", "deepgram:nova-2"] is also valid — that pins to two specific
    Deepgram models, with no fallback to other Deepgram models within the vendor'."""
    assert sorted(ids(stt(["deepgram:nova-3", "deepgram:nova-2"]))) == [
        "deepgram:nova-2",
        "deepgram:nova-3",
    ]


def test_mixed_vendor_and_model_entries_yield_exactly_those() -> None:
    """'Both forms can be mixed in the same array.' '["deepgram:nova-3", "assemblyai"] will
    fail over from Nova-3 to AssemblyAI.'"""
    assert ids(stt(["deepgram:nova-3", "assemblyai"])) == [
        "deepgram:nova-3",
        "assemblyai:universal",
    ]


def test_vendor_entries_are_case_and_space_insensitive() -> None:
    assert ids(stt([" Deepgram "])) == ids(stt(["deepgram"]))


def test_duplicate_entries_do_not_duplicate_the_chain() -> None:
    assert ids(stt(["deepgram", "deepgram:nova-3"])) == ["deepgram:nova-3", "deepgram:nova-2"]


@pytest.mark.parametrize("bad", ["", "   ", ":nova-3", "deepgram:"])
def test_malformed_entry_is_a_config_error_naming_the_layer(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"allowed_providers\.stt"):
        stt([bad])


def test_parse_entry() -> None:
    assert parse_entry("deepgram", "stt") == ("deepgram", None)
    assert parse_entry("deepgram:nova-3", "stt") == ("deepgram", "nova-3")


# --- no constraint --------------------------------------------------------------------


@pytest.mark.parametrize("empty", [None, [], ()])
def test_empty_or_missing_layer_means_no_constraint(empty: Sequence[str] | None) -> None:
    """'Empty / missing layer = no constraint. A stt allowlist of [] (or absent entirely)
    means the router has full freedom for STT.'"""
    assert ids(stt(empty)) == [
        "deepgram:nova-3",
        "deepgram:nova-2",
        "assemblyai:universal",
        "openai:gpt-4o-transcribe",
        "local:pocketsphinx",
    ]


def test_no_constraint_never_routes_to_a_wildcard_entry() -> None:
    """``custom:*`` names no model: it can only be reached through the agent's model."""
    assert ids(stt(None, layer="llm")) == ["openai:gpt-4o-mini"]


# --- ranking --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("criterion", "first"),
    [
        ("latency", "deepgram:nova-3"),
        ("quality", "openai:gpt-4o-transcribe"),
        ("cost", "local:pocketsphinx"),
    ],
)
def test_ranked_by_optimize_for(criterion: OptimizeFor, first: str) -> None:
    """'the highest-scoring provider per pipeline layer ... is picked' for 'optimizeFor
    (latency/quality/cost)'."""
    chain = stt(None, optimize_for=criterion).chain
    assert chain[0].id == first
    scores = [e.scores[criterion] for e in chain]
    assert scores == sorted(scores, reverse=True)


def test_ranking_ignores_allowlist_order() -> None:
    """The allowlist says who may serve, the benchmark says in which order."""
    assert ids(stt(["assemblyai", "deepgram:nova-3"])) == [
        "deepgram:nova-3",
        "assemblyai:universal",
    ]
    assert ids(stt(["assemblyai", "deepgram:nova-3"], optimize_for="cost")) == [
        "assemblyai:universal",
        "deepgram:nova-3",
    ]


def test_ties_are_broken_by_id_so_plans_are_reproducible() -> None:
    catalog = Catalog.from_json(
        [
            {"id": "b:m", "layer": "tts", "scores": {"latency": 0.5}},
            {"id": "a:m", "layer": "tts", "scores": {"latency": 0.5}},
        ]
    )
    r = route("tts", catalog, allowlist=None, optimize_for="latency", language="en")
    assert ids(r) == ["a:m", "b:m"]


# --- unrankable entries ---------------------------------------------------------------


@pytest.mark.parametrize("entry", ["speechmatics", "deepgram:nova-9", "deepgram:NOVA-3"])
def test_unrankable_entry_is_an_error_not_a_substitute(entry: str) -> None:
    """'If you allowlist a provider that has no benchmark data, the router can't rank it;
    the session will error rather than silently picking an alternative.'"""
    with pytest.raises(RoutingError, match="cannot rank") as info:
        stt(["deepgram", entry])
    assert info.value.layer == "stt"
    assert entry in str(info.value)


# --- credentials / usability ----------------------------------------------------------


def no_key_for(*vendors: str) -> Any:
    def check(e: CatalogEntry) -> str | None:
        return f"{e.vendor.upper()}_API_KEY is not configured" if e.vendor in vendors else None

    return check


def test_unusable_provider_is_left_out_with_its_reason() -> None:
    """Issue: 'a provider whose credentials are not configured is left out with a warning'."""
    r = stt(["deepgram", "assemblyai"], unusable=no_key_for("deepgram"))
    assert ids(r) == ["assemblyai:universal"]
    assert r.excluded == (
        ("deepgram:nova-3", "DEEPGRAM_API_KEY is not configured"),
        ("deepgram:nova-2", "DEEPGRAM_API_KEY is not configured"),
    )


def test_nothing_usable_is_an_error_naming_the_layer() -> None:
    """Issue: 'an empty result is an error naming the layer' — never a step outside the
    allowed set: 'the router will fail over to AssemblyAI rather than to a non-allowed
    provider'."""
    with pytest.raises(RoutingError, match=r"^stt: no usable provider.*DEEPGRAM_API_KEY") as info:
        stt(["deepgram"], unusable=no_key_for("deepgram"))
    assert info.value.layer == "stt"


def test_language_not_served_is_left_out() -> None:
    r = stt(["deepgram", "local"], language="de")
    assert ids(r) == ["deepgram:nova-3", "deepgram:nova-2"]
    assert r.excluded == (("local:pocketsphinx", "does not serve language 'de'"),)


def test_language_region_is_matched_on_its_base() -> None:
    """'intent: { "language": "en-US" }' (002_*) is served by an ``en`` provider."""
    assert ids(stt(["local"], language="en-US")) == ["local:pocketsphinx"]


# --- failover stays in the allowed set ------------------------------------------------


@pytest.mark.parametrize(
    "allowlist",
    [["deepgram"], ["deepgram:nova-3", "assemblyai"], ["openai", "local"], ["assemblyai"]],
)
def test_chain_is_exactly_the_allowed_usable_set(allowlist: list[str]) -> None:
    """'Failover stays active within the allowed set': the chain (head + failover) is the
    allowed set, nothing more, nothing less."""
    r = stt(allowlist)
    for e in r.chain:
        assert any(
            parse_entry(a, "stt") in ((e.vendor, None), (e.vendor, e.model)) for a in allowlist
        )
    expected = {
        e.id
        for e in CATALOG.layer("stt")
        if any(parse_entry(a, "stt") in ((e.vendor, None), (e.vendor, e.model)) for a in allowlist)
    }
    assert set(ids(r)) == expected
    assert len(ids(r)) == len(expected)


# --- pins -----------------------------------------------------------------------------


def test_pin_goes_first_and_the_allowed_set_stays_behind_it() -> None:
    """Issue: '``stt_override`` and ``*_model`` fields pin' — the pin leads, the allowed
    set remains as failover."""
    assert ids(stt(["deepgram", "assemblyai"], pin="deepgram:nova-2")) == [
        "deepgram:nova-2",
        "deepgram:nova-3",
        "assemblyai:universal",
    ]


def test_pin_by_bare_model_name() -> None:
    """Calls API 'stt_model: Override the default STT model for this agent' (a model slug)."""
    assert ids(stt(None, pin="nova-2"))[0] == "deepgram:nova-2"


def test_pin_outside_the_allowlist_is_an_error() -> None:
    with pytest.raises(RoutingError, match="outside the allowed providers"):
        stt(["assemblyai"], pin="deepgram:nova-3")


def test_pin_unknown_to_the_catalog_is_an_error() -> None:
    with pytest.raises(RoutingError, match="not in the provider catalog"):
        stt(None, pin="deepgram:nova-9")


def test_unusable_pin_is_an_error_not_a_silent_substitute() -> None:
    with pytest.raises(RoutingError, match="pinned deepgram:nova-3 cannot be used"):
        stt(None, pin="deepgram:nova-3", unusable=no_key_for("deepgram"))


def test_wildcard_vendor_is_reached_through_the_pinned_model() -> None:
    """``custom:*`` stands for the agent's own endpoint: pinned ``custom:<llm_model>``."""
    assert ids(stt(None, layer="llm", pin="custom:gemma3-270m")) == [
        "custom:gemma3-270m",
        "openai:gpt-4o-mini",
    ]
    assert ids(stt(["custom:gemma3-270m"], layer="llm", pin="custom:gemma3-270m")) == [
        "custom:gemma3-270m"
    ]


def test_bare_wildcard_vendor_entry_allows_the_pinned_custom_model() -> None:
    """An allowlist ``["custom"]`` (vendor entry) with ``llm_provider: custom`` routes to
    the agent's endpoint instead of failing as unrankable."""
    r = stt(["custom"], layer="llm", pin="custom:gemma3-270m")
    assert ids(r) == ["custom:gemma3-270m"]
    with pytest.raises(RoutingError, match="cannot rank"):
        stt(["custom"], layer="llm")


# --- catalog parsing ------------------------------------------------------------------


def test_fixture_catalog_parses(control_plane_dir: Path) -> None:
    catalog = Catalog.from_json(json.loads((control_plane_dir / "providers.json").read_text()))
    assert {e.layer for e in catalog.entries} == {"stt", "llm", "tts"}
    assert "deepgram:nova-3" in {e.id for e in catalog.layer("stt")}


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"nope": []}, "providers"),
        ([1], r"providers\[0\]"),
        ([{"id": "novendor", "layer": "stt"}], r"providers\[0\]"),
        ([{"id": "a:b", "layer": "asr"}], r"providers\[0\]\.layer"),
        ([{"id": "a:b", "layer": "stt", "scores": {"latency": "fast"}}], r"providers\[0\]\.scores"),
    ],
)
def test_bad_catalog_is_a_config_error_naming_the_entry(data: Any, where: str) -> None:
    with pytest.raises(ConfigError, match=where):
        Catalog.from_json(data)
