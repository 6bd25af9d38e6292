"""The failover mechanism (rank order, exhaustion, error classes, circuit breaker, return
to the primary) with fake providers subclassing LiveKit's base classes."""

from __future__ import annotations

import pytest
from livekit.agents import APIConnectionError, APIStatusError

from pipelines.errors import ProviderError
from pipelines.providers.failover import (
    BreakerPolicy,
    FailoverLLM,
    HealthRegistry,
    LayerDown,
    SwitchEvent,
    classify,
)
from tests.fakes import FakeLLM, collect_reply, make_chain


async def test_chain_fails_over_in_rank_order_and_reports_the_switch() -> None:
    a = FakeLLM("from a", fake_exception=APIStatusError("boom", status_code=503))
    b, c = FakeLLM("from b"), FakeLLM("from c")
    events: list[SwitchEvent] = []
    model = FailoverLLM(make_chain("llm", [a, b, c], events=events))
    assert await collect_reply(model) == "from b"
    assert (len(a.contexts), len(b.contexts), len(c.contexts)) == (1, 1, 0)
    (event,) = events
    assert (event.layer, event.from_provider, event.to_provider, event.reason) == (
        "llm",
        "v0:m",
        "v1:m",
        "server_error",
    )
    assert 0 <= event.switch_seconds < 0.2


async def test_exhausted_layer_raises_provider_error_naming_every_provider() -> None:
    a = FakeLLM(fake_exception=APIConnectionError("refused"))
    b = FakeLLM(fake_exception=APIStatusError("limited", status_code=429))
    outsider = FakeLLM()
    with pytest.raises(LayerDown) as info:
        await collect_reply(FailoverLLM(make_chain("llm", [a, b])))
    # LiveKit sees a non-retryable APIError (an unrecoverable session error) ...
    assert info.value.retryable is False
    # ... whose cause names the layer and every provider tried
    err = info.value.provider_error
    assert isinstance(err, ProviderError)
    assert err.layer == "llm" and err.retryable is False
    assert "v0:m (connection" in err.message and "v1:m (rate_limited" in err.message
    assert err.provider == "v0:m,v1:m"
    assert outsider.contexts == []


def test_classify_maps_errors_to_reasons() -> None:
    assert classify(APIStatusError("x", status_code=500)) == "server_error"
    assert classify(APIStatusError("x", status_code=429)) == "rate_limited"
    assert classify(APIStatusError("x", status_code=401)) == "client_error"
    assert classify(APIConnectionError("x")) == "connection"
    assert classify(APIStatusError("ws closed", status_code=1006)) == "connection"
    assert classify(ConnectionResetError()) == "connection"
    assert classify(ValueError("garbage")) == "protocol"


def test_classify_reads_a_handshake_status_a_plugin_let_through() -> None:
    """The Baseten plugin raises aiohttp's own handshake error on a 5xx upgrade."""
    import aiohttp

    def handshake(status: int) -> aiohttp.WSServerHandshakeError:
        return aiohttp.WSServerHandshakeError(None, (), status=status)  # type: ignore[arg-type]

    assert classify(handshake(500)) == "server_error"
    assert classify(handshake(429)) == "rate_limited"
    assert classify(handshake(403)) == "client_error"


async def test_open_circuit_skips_provider_for_new_sessions() -> None:
    health = HealthRegistry(BreakerPolicy(failure_threshold=1))
    a1, b1 = FakeLLM("a", fake_exception=APIConnectionError("down")), FakeLLM("b")
    assert await collect_reply(FailoverLLM(make_chain("llm", [a1, b1], health=health))) == "b"
    a2, b2 = FakeLLM("a"), FakeLLM("b")
    events: list[SwitchEvent] = []
    session2 = FailoverLLM(make_chain("llm", [a2, b2], health=health, events=events))
    assert await collect_reply(session2) == "b"
    assert a2.contexts == [] and events == []


@pytest.mark.parametrize("return_to_primary", [False, True])
async def test_return_to_recovered_primary_is_a_setting(return_to_primary: bool) -> None:
    health = HealthRegistry(BreakerPolicy(failure_threshold=5))
    a = FakeLLM("a", fake_exception=APIConnectionError("down"), fake_exception_count=1)
    b = FakeLLM("b")
    events: list[SwitchEvent] = []
    model = FailoverLLM(
        make_chain("llm", [a, b], health=health, events=events, return_to_primary=return_to_primary)
    )
    assert await collect_reply(model) == "b"
    assert await collect_reply(model) == "b", "a failed in this session and has not recovered"
    health.record_success("v0:m", 0.1)  # another session got answers from a again
    assert await collect_reply(model) == ("a" if return_to_primary else "b")
    reasons = [e.reason for e in events]
    assert reasons == (["connection", "return_to_primary"] if return_to_primary else ["connection"])
