"""The mid-stream watchdog: a stream that stops between outputs is failed over after a few
times its own gap, not after the layer's deadline; one that never showed a rate keeps it."""

from __future__ import annotations

import time

import pytest

from pipelines.providers.failover import (
    FailoverLLM,
    FailoverTTS,
    HealthRegistry,
    RatePolicy,
    SwitchEvent,
)
from tests.fakes import FakeLLM, FakeTTS, collect_reply, make_chain

RATE = RatePolicy(factor=4.0, floor=0.1, min_gaps=3)


def test_limit_follows_the_largest_recent_gap_between_floor_and_deadline() -> None:
    assert RATE.limit([0.01, 0.02], 2.0) == 2.0, "no rate shown yet: the deadline"
    assert RATE.limit([0.01, 0.05, 0.02], 2.0) == pytest.approx(0.2)
    assert RATE.limit([0.001] * 5, 2.0) == 0.1
    assert RATE.limit([1.0] * 5, 2.0) == 2.0
    assert RATE.limit([], 2.0, usual=0.05) == pytest.approx(0.2), "the provider's usual gap"
    assert RATE.limit([0.01] * 3, 2.0, usual=0.1) == pytest.approx(0.4), "never undercut"


async def test_young_stream_stopping_is_caught_at_the_providers_usual_rate() -> None:
    health = HealthRegistry()
    health.seed("v0:m", "gap", [0.02] * 10)
    a = FakeLLM("One two three four five six.", stall_after_tokens=2, token_interval=0.02)
    b = FakeLLM("three four five six.")
    events: list[SwitchEvent] = []
    chain = make_chain("llm", [a, b], deadline=2.0, events=events, health=health, rate=RATE)
    started = time.monotonic()
    assert await collect_reply(FailoverLLM(chain)) == "One two three four five six."
    assert time.monotonic() - started < 0.6, "one gap of its own, the usual gap stood in"
    assert [e.reason for e in events] == ["stall"]


async def test_llm_stopping_between_tokens_is_caught_at_its_own_rate() -> None:
    a = FakeLLM("One two three four five six.", stall_after_tokens=4, token_interval=0.02)
    b = FakeLLM("five six.")
    events: list[SwitchEvent] = []
    model = FailoverLLM(make_chain("llm", [a, b], deadline=2.0, events=events, rate=RATE))
    started = time.monotonic()
    assert await collect_reply(model) == "One two three four five six."
    assert time.monotonic() - started < 0.6, "4 x 20 ms gaps (floor 0.1 s), not the 2 s deadline"
    (event,) = events
    assert event.reason == "stall" and event.switch_seconds < 0.3


async def test_llm_without_a_rate_policy_waits_for_the_deadline() -> None:
    a = FakeLLM("One two three four five six.", stall_after_tokens=4, token_interval=0.02)
    b = FakeLLM("five six.")
    events: list[SwitchEvent] = []
    model = FailoverLLM(make_chain("llm", [a, b], deadline=0.5, events=events))
    assert await collect_reply(model) == "One two three four five six."
    assert events[0].switch_seconds >= 0.5


async def test_tts_stopping_mid_sentence_is_caught_at_its_own_rate() -> None:
    a = FakeTTS(stall_after_chunks=6, chunk_interval=0.01)
    b = FakeTTS()
    events: list[SwitchEvent] = []
    model = FailoverTTS(make_chain("tts", [a, b], deadline=2.0, events=events, rate=RATE))
    text = "A first sentence that is long enough. Second."
    started = time.monotonic()
    async with model.synthesize(text) as stream:
        async for _ in stream:
            pass
    assert time.monotonic() - started < 1.0
    (event,) = events
    assert event.reason == "stall" and event.switch_seconds < 0.5
    assert b.texts == ["A first sentence that is long enough.", "Second."]
