"""Hedged requests through the LiveKit plugins against real local servers: a primary that
connects and goes silent (toxiproxy's timeout toxic, or the server's own stall knob) is
answered by a hedge on the next allowed provider well inside the layer's deadline, and the
loser's request is cancelled (its server saw the client go away). A one-entry layer never
hedges, and a call spends at most its hedge budget.

Every test also runs a provider that is not in the allowed set and asserts it was never
contacted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from livekit.agents import llm, utils

from pipelines.loopback import Knobs, OpenAIServer
from pipelines.providers import ProviderSpec
from pipelines.providers.failover import (
    Deadlines,
    HealthRegistry,
    HedgePolicy,
    SwitchEvent,
    build_failover_layers,
)
from worker.dev.services import ToxiproxyServer

pytestmark = pytest.mark.integration

DEADLINES = Deadlines()  # the settings' defaults: 1.5 / 2.5 / 1.5 s
REPLY = "One two three four five six seven eight nine ten."
SENTENCES = "Hello there, this is the first sentence. Here is the second one."


@pytest_asyncio.fixture(loop_scope="function")
async def toxi() -> AsyncIterator[ToxiproxyServer]:
    async with utils.http_context.open(), ToxiproxyServer() as server:
        yield server


@pytest_asyncio.fixture(loop_scope="function")
async def http() -> AsyncIterator[None]:
    async with utils.http_context.open():
        yield


def llm_spec(vendor: str, model: str, url: str) -> ProviderSpec:
    return ProviderSpec("llm", vendor, model, base_url=f"{url}/v1", api_key="k")


def tts_spec(model: str, url: str) -> ProviderSpec:
    return ProviderSpec("tts", "openai", model, base_url=f"{url}/v1", api_key="k", voice="en-us")


def build(
    layer: str,
    specs: list[ProviderSpec],
    events: list[SwitchEvent],
    health: HealthRegistry | None = None,
    hedge: HedgePolicy | None = None,
) -> Any:
    return build_failover_layers(
        {layer: specs},
        deadlines=DEADLINES,
        health=health or HealthRegistry(),
        on_switch=events.append,
        hedge=hedge,
    )[layer]


async def ask(model: Any) -> tuple[str, float]:
    """The reply and its time to first token (seconds)."""
    ctx = llm.ChatContext.empty()
    ctx.add_message(role="user", content="Count to ten.")
    text, first = "", None
    started = time.monotonic()
    async with asyncio.timeout(15), model.chat(chat_ctx=ctx) as stream:
        async for chunk in stream:
            if chunk.delta and chunk.delta.content:
                first = first or time.monotonic() - started
                text += chunk.delta.content
    assert first is not None
    return text, first


async def settled(server: OpenAIServer) -> None:
    """Waits (up to 2 s) until the server has seen every request end."""
    async with asyncio.timeout(2):
        while not all(r.closed for r in server.requests):
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("stall", ["toxiproxy", "server"])
async def test_llm_stalled_primary_is_answered_by_the_hedge(
    toxi: ToxiproxyServer, stall: str
) -> None:
    knobs = Knobs(first_response_delay=0.05, response_delay=0.05)
    async with (
        OpenAIServer(reply=REPLY, knobs=knobs) as primary,
        OpenAIServer(reply=REPLY, knobs=Knobs(first_response_delay=0.05)) as fallback,
        OpenAIServer(reply="not allowed") as outsider,
    ):
        proxy = await toxi.proxy(f"llm-hedge-{stall}", primary.url)
        events: list[SwitchEvent] = []
        health = HealthRegistry()
        specs = [llm_spec("openai", "a", proxy.url), llm_spec("custom", "b", fallback.url)]
        # warm-up: the primary's own latency history on this worker (p95 ~0.06 s), so the
        # hedge waits its floor (0.3 s), not the cold 1.0 s
        for _ in range(5):
            assert (await ask(build("llm", specs, events, health)))[0] == REPLY
        assert events == [] and fallback.requests == []
        p95 = health.latency_p95("openai:a")
        assert p95 is not None and p95 < 0.2
        if stall == "toxiproxy":
            await proxy.stall()
        else:
            primary.knobs.stall_after = 0
        model = build("llm", specs, events, health)
        text, first = await ask(model)
        await model.aclose()
        assert text == REPLY
        (event,) = events
        assert (event.reason, event.from_provider, event.to_provider) == (
            "hedge_won",
            "openai:a",
            "custom:b",
        )
        # the 0.3 s floor plus the fallback's own first token, far inside the 2.5 s deadline
        assert 0.3 <= first < 0.8, first
        assert len(fallback.requests) == 1
        await settled(primary)
        if stall == "server":
            # the stalled request was cancelled, and the primary's server saw it go
            assert primary.requests[-1].fault == "stall" and primary.requests[-1].cancelled
        assert health.snapshot()["openai:a"].slow == 1
        assert health.state("openai:a") == "closed", "one lost race demotes nothing"
        assert outsider.requests == []


async def test_llm_primary_first_keeps_serving_and_the_hedge_is_cancelled_within_budget(
    http: None,
) -> None:
    async with (
        OpenAIServer(reply=REPLY, knobs=Knobs(first_response_delay=0.5)) as primary,
        OpenAIServer(reply=REPLY, knobs=Knobs(first_response_delay=1.2)) as fallback,
        OpenAIServer(reply="not allowed") as outsider,
    ):
        events: list[SwitchEvent] = []
        specs = [llm_spec("openai", "a", primary.url), llm_spec("custom", "b", fallback.url)]
        model = build("llm", specs, events, hedge=HedgePolicy(cold=0.3, budget=2))
        for _ in range(3):
            text, first = await ask(model)
            assert text == REPLY and 0.5 <= first < 1.0
        await model.aclose()
        # three late first tokens, two hedges: the budget of the call
        assert [e.reason for e in events] == ["hedge_lost", "hedge_lost"]
        assert {(e.from_provider, e.to_provider) for e in events} == {("openai:a", "custom:b")}
        assert len(fallback.requests) == 2
        await settled(fallback)
        assert all(r.cancelled for r in fallback.requests), "each losing hedge was cancelled"
        assert len(primary.requests) == 3 and not any(r.cancelled for r in primary.requests)
        assert outsider.requests == []


async def test_no_hedge_on_a_one_entry_layer(http: None) -> None:
    async with (
        OpenAIServer(reply=REPLY, knobs=Knobs(first_response_delay=1.2)) as alone,
        OpenAIServer(reply="not allowed") as outsider,
    ):
        events: list[SwitchEvent] = []
        model = build("llm", [llm_spec("openai", "a", alone.url)], events)
        text, first = await ask(model)
        await model.aclose()
        # later than the cold threshold (1.0 s): a two-entry layer would have hedged
        assert text == REPLY and first >= 1.2
        assert events == [] and len(alone.requests) == 1
        assert outsider.requests == []


async def test_tts_stalled_first_audio_is_answered_by_the_hedge(toxi: ToxiproxyServer) -> None:
    async with (
        OpenAIServer(knobs=Knobs(stall_after=0)) as primary,
        OpenAIServer() as fallback,
        OpenAIServer() as outsider,
    ):
        proxy = await toxi.proxy("tts-hedge", primary.url)
        events: list[SwitchEvent] = []
        model = build("tts", [tts_spec("a", proxy.url), tts_spec("b", fallback.url)], events)
        stream = model.stream()
        stream.push_text(SENTENCES)
        stream.end_input()
        started = time.monotonic()
        first: float | None = None
        seconds = 0.0
        async with asyncio.timeout(20):
            async for ev in stream:
                first = first or time.monotonic() - started
                seconds += ev.frame.samples_per_channel / ev.frame.sample_rate
        await stream.aclose()
        await model.aclose()
        (event,) = events
        assert (event.reason, event.to_provider) == ("hedge_won", "openai:b")
        # cold threshold (1.0 s, no history) plus the fallback's synthesis; the deadline
        # alone would have cost 1.5 s
        assert first is not None and first < DEADLINES.tts, first
        spoken = [r.text for r in fallback.records("/v1/audio/speech")]
        assert spoken == ["Hello there, this is the first sentence.", "Here is the second one."]
        assert seconds > 2.0
        await settled(primary)
        (stalled,) = primary.records("/v1/audio/speech")
        assert stalled.fault == "stall" and stalled.cancelled
        assert outsider.requests == []
