"""Hedged requests: a late first output (LLM token, TTS audio of a sentence) is raced on
the next allowed provider; the first to answer serves, the other is cancelled and recorded.

Thresholds are tens of milliseconds here (``FAST``) so the tier stays fast; the policy's
arithmetic is tested on its own."""

from __future__ import annotations

import time

import pytest
from livekit.agents import tts

from pipelines.providers.failover import (
    BreakerPolicy,
    FailoverLLM,
    FailoverTTS,
    HealthRegistry,
    HedgePolicy,
    SwitchEvent,
)
from tests.fakes import Clock, FakeLLM, FakeTTS, collect_reply, make_chain

FAST = HedgePolicy(floor=0.05, cold=0.05)
"""Hedge after 50 ms without a first output (no latency history)."""


def test_threshold_follows_the_providers_p95_between_floor_and_deadline() -> None:
    policy = HedgePolicy(factor=1.5, floor=0.3, cold=1.0)
    assert policy.threshold(None, 2.5) == 1.0, "no history yet: the cold threshold"
    assert policy.threshold(0.4, 2.5) == pytest.approx(0.6)
    assert policy.threshold(0.05, 2.5) == 0.3, "never under the floor"
    assert policy.threshold(1.8, 2.5) is None, "at or past the deadline: the watchdog decides"
    assert policy.threshold(None, 0.8) is None


def test_one_cold_sample_does_not_set_the_threshold_but_lasting_slowness_does() -> None:
    policy = HedgePolicy(factor=1.5, floor=0.3, cold=1.0, min_samples=5)
    warm = [0.02, 0.025, 0.03, 0.022, 0.024]
    assert policy.usual(warm[:4]) is None, "fewer than min_samples: no usual latency yet"
    assert policy.limit(warm[:4], 1.5) == 1.0
    assert policy.usual(warm) == 0.03
    # a connection's cold first request (0.75 s, 30x the median) is an outlier: the
    # threshold stays at the floor instead of 1.5 x 0.75 s
    cold = [0.75, *warm]
    assert policy.usual(cold) == 0.03
    assert policy.limit(cold, 1.5) == 0.3
    # without the outlier rule the nearest-rank p95 of a short window is its maximum
    assert HedgePolicy(outlier=float("inf")).limit(cold, 1.5) == pytest.approx(1.125)
    # slowness that lasts moves the median: every slow sample counts again
    slow = [0.75, 0.5, 0.6, 0.02, 0.7, 0.55]
    assert policy.usual(slow) == 0.75
    assert policy.limit(slow, 1.5) == pytest.approx(1.125)
    assert policy.limit(slow, 1.0) is None, "past the deadline: the watchdog decides"
    # a spread-out but usual distribution keeps its own p95
    spread = [0.1, 0.2, 0.3, 0.35, 0.4]
    assert policy.usual(spread) == 0.4


def test_health_learns_p95_and_slow_losses_demote_a_provider() -> None:
    clock = Clock()
    health = HealthRegistry(BreakerPolicy(failure_threshold=3, cooldown=10), clock=clock)
    for i in range(20):
        health.record_success("p", 0.1 + i / 100)
    assert health.latency_p95("p") == pytest.approx(0.28)
    assert health.latency_p95("p", min_samples=21) is None
    assert health.latency_p95("q") is None
    health.record_slow("p", 1.0)
    health.record_slow("p", 1.0)
    snap = health.snapshot()["p"]
    assert snap.state == "closed" and snap.slow == 2, "a lost race is a slow sample"
    health.record_slow("p", 1.0)
    assert health.state("p") == "open", "three lost races in a row: stalled, demoted"
    assert health.snapshot()["p"].last_failure == "stall"
    clock.t = 10
    assert health.state("p") == "half_open", "probed back as any open circuit"


async def test_llm_stalled_first_token_is_answered_by_the_hedge() -> None:
    a, b = FakeLLM("late", stall_after_tokens=0), FakeLLM("on time")
    events: list[SwitchEvent] = []
    health = HealthRegistry()
    model = FailoverLLM(
        make_chain("llm", [a, b], deadline=2.0, events=events, health=health, hedge=FAST)
    )
    started = time.monotonic()
    assert await collect_reply(model) == "on time"
    assert time.monotonic() - started < 0.3, "the hedge answered, not the 2 s deadline"
    (event,) = events
    assert (event.reason, event.from_provider, event.to_provider) == ("hedge_won", "v0:m", "v1:m")
    assert 0.05 <= event.switch_seconds < 0.3
    assert a.cancelled == 1, "the loser was cancelled"
    assert health.snapshot()["v0:m"].slow == 1 and health.state("v0:m") == "closed"
    # the hedge serves the rest of the call
    assert await collect_reply(model) == "on time"
    assert len(a.contexts) == 1 and len(b.contexts) == 2


async def test_llm_primary_answering_first_keeps_serving_and_the_hedge_is_cancelled() -> None:
    a = FakeLLM("primary", first_token_delay=0.12)
    b = FakeLLM("hedge", first_token_delay=0.5)
    events: list[SwitchEvent] = []
    model = FailoverLLM(make_chain("llm", [a, b], deadline=2.0, events=events, hedge=FAST))
    assert await collect_reply(model) == "primary"
    (event,) = events
    assert (event.reason, event.from_provider, event.to_provider) == ("hedge_lost", "v0:m", "v1:m")
    assert b.cancelled == 1 and len(b.contexts) == 1
    assert model.chain.active.id == "v0:m"


async def test_no_hedge_on_a_one_entry_layer() -> None:
    a = FakeLLM("alone", first_token_delay=0.15)
    events: list[SwitchEvent] = []
    model = FailoverLLM(make_chain("llm", [a], deadline=2.0, events=events, hedge=FAST))
    assert await collect_reply(model) == "alone"
    assert events == [] and a.cancelled == 0


async def test_hedge_budget_caps_duplicate_requests_per_call() -> None:
    a = FakeLLM("primary", first_token_delay=0.1)
    b = FakeLLM("hedge", first_token_delay=0.3)
    events: list[SwitchEvent] = []
    policy = HedgePolicy(floor=0.05, cold=0.05, min_samples=99, budget=2)
    model = FailoverLLM(make_chain("llm", [a, b], deadline=2.0, events=events, hedge=policy))
    for _ in range(4):
        assert await collect_reply(model) == "primary"
    assert [e.reason for e in events] == ["hedge_lost", "hedge_lost"]
    assert len(b.contexts) == 2, "two hedges, then none: the budget is spent"


async def test_hedge_goes_only_to_a_provider_whose_circuit_is_closed() -> None:
    health = HealthRegistry(BreakerPolicy(failure_threshold=1))
    health.record_failure("v1:m", "connection")
    a, b, c = FakeLLM("a", stall_after_tokens=0), FakeLLM("b"), FakeLLM("c")
    events: list[SwitchEvent] = []
    model = FailoverLLM(
        make_chain("llm", [a, b, c], deadline=2.0, events=events, health=health, hedge=FAST)
    )
    assert await collect_reply(model) == "c"
    assert b.contexts == [] and [e.to_provider for e in events] == ["v2:m"]


async def test_healthy_traffic_with_a_latency_history_does_not_hedge() -> None:
    health = HealthRegistry()
    for _ in range(10):
        health.record_success("v0:m", 0.1)
    a, b = FakeLLM("a", first_token_delay=0.1), FakeLLM("b")
    events: list[SwitchEvent] = []
    policy = HedgePolicy(floor=0.05, cold=0.05)
    model = FailoverLLM(
        make_chain("llm", [a, b], deadline=2.0, events=events, health=health, hedge=policy)
    )
    for _ in range(3):
        assert await collect_reply(model) == "a"
    assert events == [] and b.contexts == [], "1.5 x its own p95 (0.15 s) was never reached"


async def test_primary_failing_during_the_race_leaves_the_hedge_serving() -> None:
    a = FakeLLM("a", stall_after_tokens=0)
    b = FakeLLM("hedge", first_token_delay=0.1)
    events: list[SwitchEvent] = []
    model = FailoverLLM(make_chain("llm", [a, b], deadline=0.12, events=events, hedge=FAST))
    assert await collect_reply(model) == "hedge"
    assert [e.reason for e in events] == ["stall"], "the primary's deadline came first"
    assert a.cancelled == 1


async def synthesize(model: tts.TTS[object], text: str) -> float:
    seconds = 0.0
    async with model.synthesize(text) as stream:
        async for ev in stream:
            seconds += ev.frame.samples_per_channel / ev.frame.sample_rate
    return seconds


async def test_tts_stalled_first_audio_of_a_sentence_is_answered_by_the_hedge() -> None:
    a, b = FakeTTS(stall=True), FakeTTS()
    events: list[SwitchEvent] = []
    model = FailoverTTS(make_chain("tts", [a, b], deadline=2.0, events=events, hedge=FAST))
    started = time.monotonic()
    text = "First sentence here. Second one."
    seconds = await synthesize(model, text)
    assert time.monotonic() - started < 0.5
    assert abs(seconds - len("First sentence here.Second one.") / 100) < 0.06
    assert b.texts == ["First sentence here.", "Second one."]
    assert a.cancelled == 1
    assert [e.reason for e in events] == ["hedge_won"]


async def test_tts_slow_sentence_of_a_healthy_primary_hedges_per_sentence() -> None:
    a, b = FakeTTS(first_chunk_delay=0.1), FakeTTS(first_chunk_delay=0.4)
    events: list[SwitchEvent] = []
    model = FailoverTTS(make_chain("tts", [a, b], deadline=2.0, events=events, hedge=FAST))
    await synthesize(model, "One. Two.")
    assert a.texts == ["One.", "Two."] and b.texts == ["One.", "Two."]
    assert b.cancelled == 2 and [e.reason for e in events] == ["hedge_lost", "hedge_lost"]
