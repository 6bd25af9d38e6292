"""Per-process provider health: outcomes, latency and a circuit breaker per provider id.

Sessions of one worker process share one registry (``default_health()``), so a provider
that keeps failing in one call is skipped by the calls that start after it:

    closed ──(failure_threshold consecutive failures, or error rate over the window)──> open
    open ──(cooldown elapsed)──> half_open: one session at a time may try it (the probe)
    half_open ──success──> closed          half_open ──failure──> open (cooldown again)

A probe is the next real request routed to the provider, not synthetic traffic: the
failover chain that carries it switches away within its deadline if the probe fails.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

CircuitState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failure_threshold: int = 3
    """Consecutive failures that open the circuit."""
    error_rate_threshold: float = 0.5
    """Share of failures in the window that opens the circuit (with ``min_samples``)."""
    min_samples: int = 6
    window: int = 20
    """Outcomes kept per provider for the error rate and latency figures."""
    cooldown: float = 30.0
    """Seconds an open circuit stays open before a half-open probe is allowed."""
    probe_timeout: float = 60.0
    """A probe that never reports (its session ended first) frees the slot after this."""


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    """A snapshot of one provider's health."""

    provider: str
    state: CircuitState
    error_rate: float
    """Failures / outcomes over the window (0 with no outcomes)."""
    latency_p50: float | None
    """Median first-output latency of the successes in the window, seconds."""
    latency_p95: float | None
    """95th percentile of the same latencies (a hedge waits for it without the window's
    outliers: ``HedgePolicy.usual``)."""
    slow: int
    """Requests in the window this provider lost to a hedge (it answered later than its
    usual latency and another provider answered first)."""
    consecutive_failures: int
    last_failure: str | None
    """Reason of the latest failure (``stall``, ``connection``, ``server_error``...)."""
    last_success_at: float | None
    """``time.monotonic()`` of the latest success."""


@dataclass
class _Record:
    outcomes: deque[bool]
    latencies: deque[float]
    slow: deque[bool]
    kinds: dict[str, deque[float]] = field(default_factory=dict)
    """Other latency series (``final``: a final transcript after the caller stopped)."""
    consecutive_failures: int = 0
    opened_at: float | None = None
    probe_started: float | None = None
    last_failure: str | None = None
    last_success_at: float | None = None


class HealthRegistry:
    """Thread-safe: jobs of one process may run on threads of the same interpreter."""

    def __init__(
        self,
        policy: BreakerPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy or BreakerPolicy()
        self._clock = clock
        self._lock = threading.Lock()
        self._records: dict[str, _Record] = {}

    def _record(self, provider: str) -> _Record:
        rec = self._records.get(provider)
        if rec is None:
            rec = self._records[provider] = _Record(
                outcomes=deque(maxlen=self.policy.window),
                latencies=deque(maxlen=self.policy.window),
                slow=deque(maxlen=self.policy.window),
            )
        return rec

    def _state(self, rec: _Record, now: float) -> CircuitState:
        if rec.opened_at is None:
            return "closed"
        return "half_open" if now - rec.opened_at >= self.policy.cooldown else "open"

    def state(self, provider: str) -> CircuitState:
        with self._lock:
            return self._state(self._record(provider), self._clock())

    def allows(self, provider: str) -> bool:
        """Whether a new request may go to ``provider`` now: its circuit is closed, or
        half-open with no probe in flight."""
        with self._lock:
            rec, now = self._record(provider), self._clock()
            state = self._state(rec, now)
            if state == "closed":
                return True
            if state == "open":
                return False
            return rec.probe_started is None or now - rec.probe_started >= self.policy.probe_timeout

    def begin(self, provider: str) -> None:
        """A request is going to ``provider``; in half-open state it becomes the probe."""
        with self._lock:
            rec, now = self._record(provider), self._clock()
            if self._state(rec, now) == "half_open":
                rec.probe_started = now

    def record_success(self, provider: str, latency: float | None = None) -> None:
        with self._lock:
            rec = self._record(provider)
            rec.outcomes.append(True)
            if latency is not None:
                rec.latencies.append(latency)
            rec.slow.append(False)
            rec.consecutive_failures = 0
            rec.opened_at = rec.probe_started = None
            rec.last_success_at = self._clock()

    def record_failure(self, provider: str, reason: str) -> None:
        with self._lock:
            rec, now = self._record(provider), self._clock()
            rec.outcomes.append(False)
            rec.consecutive_failures += 1
            rec.last_failure = reason
            failures = rec.outcomes.count(False)
            tripped = rec.consecutive_failures >= self.policy.failure_threshold or (
                len(rec.outcomes) >= self.policy.min_samples
                and failures / len(rec.outcomes) >= self.policy.error_rate_threshold
            )
            if rec.probe_started is not None or tripped:
                # a failed probe re-opens at once; a closed circuit opens once tripped
                rec.opened_at = now
            rec.probe_started = None

    def record_slow(self, provider: str, waited: float) -> None:
        """``provider`` lost a hedge race after ``waited`` seconds without output: a slow
        sample, not a failure (the circuit stays as it is). Its latency window learns a
        lower bound of the answer it never gave; slow losses in a row count as a stall
        (``failure_threshold`` of them open the circuit, as consecutive failures do)."""
        with self._lock:
            rec = self._record(provider)
            rec.latencies.append(waited)
            rec.slow.append(True)
            recent = list(rec.slow)[-self.policy.failure_threshold :]
            if len(recent) == self.policy.failure_threshold and all(recent):
                rec.outcomes.append(False)
                rec.consecutive_failures += 1
                rec.last_failure = "stall"
                rec.opened_at = self._clock()
                rec.probe_started = None
                rec.slow.clear()

    def record_latency(self, provider: str, kind: str, seconds: float) -> None:
        """One sample of a latency series other than the first output (no outcome)."""
        with self._lock:
            rec = self._record(provider)
            series = rec.kinds.get(kind)
            if series is None:
                series = rec.kinds[kind] = deque(maxlen=self.policy.window)
            series.append(seconds)

    def latency_p95(self, provider: str, min_samples: int = 1, kind: str = "first") -> float | None:
        """95th percentile latency over the window (``first``: first output; other kinds
        as ``record_latency`` named them); None with fewer than ``min_samples`` samples."""
        with self._lock:
            rec = self._record(provider)
            series = rec.latencies if kind == "first" else rec.kinds.get(kind, ())
            lat = sorted(series)
        return p95(lat) if lat and len(lat) >= min_samples else None

    def history(self, provider: str, kind: str = "first") -> tuple[float, ...]:
        """The latency samples in the window, oldest first (to seed another registry
        with ``record_latency``/``record_success``, as a benchmark's warm-up does)."""
        with self._lock:
            rec = self._record(provider)
            return tuple(rec.latencies if kind == "first" else rec.kinds.get(kind, ()))

    def seed(self, provider: str, kind: str, samples: Sequence[float]) -> None:
        """Adds latency ``samples`` of ``kind`` (``first``: successful first outputs)."""
        for seconds in samples:
            if kind == "first":
                self.record_success(provider, seconds)
            else:
                self.record_latency(provider, kind, seconds)

    def last_success_at(self, provider: str) -> float | None:
        with self._lock:
            return self._record(provider).last_success_at

    def now(self) -> float:
        return self._clock()

    def rank(self, providers: Sequence[str]) -> list[str]:
        """``providers`` in their given order, those the breaker allows first; the others
        stay at the end as a last resort rather than being dropped."""
        allowed = [p for p in providers if self.allows(p)]
        return allowed + [p for p in providers if p not in allowed]

    def snapshot(self) -> dict[str, ProviderHealth]:
        with self._lock:
            now = self._clock()
            out = {}
            for provider, rec in self._records.items():
                n = len(rec.outcomes)
                lat = sorted(rec.latencies)
                out[provider] = ProviderHealth(
                    provider=provider,
                    state=self._state(rec, now),
                    error_rate=rec.outcomes.count(False) / n if n else 0.0,
                    latency_p50=lat[len(lat) // 2] if lat else None,
                    latency_p95=p95(lat) if lat else None,
                    slow=rec.slow.count(True),
                    consecutive_failures=rec.consecutive_failures,
                    last_failure=rec.last_failure,
                    last_success_at=rec.last_success_at,
                )
            return out

    def reset(self) -> None:
        with self._lock:
            self._records.clear()


def p95(ordered: Sequence[float]) -> float:
    """Nearest-rank 95th percentile of a sorted, non-empty sequence."""
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


_DEFAULT: HealthRegistry | None = None
_DEFAULT_LOCK = threading.Lock()


def default_health() -> HealthRegistry:
    """The process-wide registry shared by every session of this worker process."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = HealthRegistry()
        return _DEFAULT
