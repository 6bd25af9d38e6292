"""When a provider is late: the ``Watchdog`` that turns its silence into ``StallError``,
the policies that set how late is too late (``HedgePolicy`` for a first output raced by a
hedge, ``RatePolicy`` for a stream's next output) and the ``Race`` of a hedged request.
``ProviderChain`` (``chain``) acts on them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from livekit.agents import APITimeoutError, utils

from pipelines.providers.failover.health import p95

HEDGE_REASONS = ("hedge_won", "hedge_lost")


@dataclass(frozen=True, slots=True)
class HedgePolicy:
    """When a request whose first output is late gets a parallel request on the next
    allowed provider (a hedge), and how many a layer may start per call.

    The threshold follows the serving provider's own recent first-output latency on this
    worker (``usual`` over ``HealthRegistry.history``): ``factor`` x its p95, at least
    ``floor``, and never at or past the layer's deadline (there the watchdog fails the
    provider over anyway). With fewer than ``min_samples`` latencies it is ``cold``
    (clamped the same way)."""

    factor: float = 1.5
    floor: float = 0.3
    cold: float = 1.0
    """Threshold with no latency history yet (the first requests of a worker)."""
    min_samples: int = 5
    budget: int = 3
    """Hedges a layer may start per call (one chain): caps the duplicate spend."""
    outlier: float = 4.0
    """Samples over this multiple of the window's median are left out of the p95 (a
    connection's cold first request, a hiccup of the machine): a single slow sample does
    not set the threshold. Slowness that lasts moves the median, and counts again."""

    def usual(self, samples: Sequence[float]) -> float | None:
        """The provider's usual p95 latency over ``samples`` (its recent window), its
        outliers left out; None with fewer than ``min_samples``."""
        if len(samples) < self.min_samples:
            return None
        ordered = sorted(samples)
        median = ordered[len(ordered) // 2]
        return p95([s for s in ordered if s <= self.outlier * median])

    def limit(self, samples: Sequence[float], deadline: float) -> float | None:
        """``threshold`` from the provider's recent ``samples`` (see ``usual``)."""
        return self.threshold(self.usual(samples), deadline)

    def threshold(self, p95: float | None, deadline: float) -> float | None:
        """Seconds without a first output after which to hedge; None: never (the
        threshold would reach the deadline)."""
        base = self.cold if p95 is None else self.factor * p95
        seconds = max(self.floor, base)
        return seconds if seconds < deadline else None


NO_HEDGE = HedgePolicy(budget=0)


@dataclass(frozen=True, slots=True)
class RatePolicy:
    """The mid-stream watchdog: once a stream has shown its own rate (``min_gaps`` gaps
    between outputs), a silence longer than ``factor`` x its largest recent gap (at least
    ``floor``, at most the layer's deadline) is a stall. The provider's p95 gap on this
    worker (the health registry's ``gap`` series) stands in for a young stream and is
    never undercut; a provider with neither keeps the deadline."""

    factor: float = 2.0
    floor: float = 0.3
    min_gaps: int = 2

    def limit(self, gaps: Sequence[float], deadline: float, usual: float | None = None) -> float:
        """The silence allowed after ``gaps`` (this stream's); ``usual`` is the provider's
        p95 gap on this worker, which stands in while the stream is too young and keeps a
        stream whose first gaps were quick from tripping on a usual pause."""
        seen = max(gaps) if len(gaps) >= self.min_gaps else None
        if seen is None and usual is None:
            return deadline
        return min(deadline, max(self.floor, self.factor * max(seen or 0.0, usual or 0.0)))


class HedgeLost(Exception):
    """Raised inside the attempt that answered after its rival had already won the race."""


class Race:
    """Primary and hedge of one request: the first to answer claims it."""

    def __init__(self) -> None:
        self.winner: Watchdog | None = None
        self.decided = asyncio.Event()

    def claim(self, wd: Watchdog) -> bool:
        if self.winner is None:
            self.winner = wd
            self.decided.set()
        return self.winner is wd


class StallError(APITimeoutError):
    """A provider owed output and stayed silent past its layer's deadline."""

    def __init__(self, layer: str, provider: str, waited: float) -> None:
        super().__init__(f"{layer} {provider}: no output for {waited:.2f} s")
        self.layer = layer
        self.provider = provider
        self.waited = waited


class Watchdog:
    """Turns a provider's silence into ``StallError``.

    The attempt says when output is owed (``owe``; ``request`` when it is the first output
    of a new request, which a hedge may race), when some arrived (``answered``,
    ``progress`` = answered and more owed) and when nothing is owed (``settle``);
    ``trip`` stalls it at once (a layer with its own clock, such as STT counting
    unanswered speech). ``on_first_answer`` gets the latency of each request's first
    output (of the attempt's first output when it never calls ``request``)."""

    def __init__(
        self,
        layer: str,
        provider: str,
        deadline: float,
        *,
        on_first_answer: Callable[[float], None] | None = None,
        rate: RatePolicy | None = None,
        usual_gap: Callable[[], float | None] | None = None,
        on_gap: Callable[[float], None] | None = None,
    ) -> None:
        self.layer = layer
        self.provider = provider
        self.deadline = deadline
        self.rate = rate
        """Mid-stream (after ``progress``) the limit follows the stream's own rate."""
        self._limit = deadline
        self._last_answer: float | None = None
        self._gaps: deque[float] = deque(maxlen=8)
        self._usual_gap = usual_gap
        self._on_gap = on_gap
        self._on_first_answer = on_first_answer
        self._owed_since: float | None = None
        self._first_owed: float | None = None
        self._answers = 0
        self._tripped: float | None = None
        self._wake = asyncio.Event()
        self._request_since: float | None = None
        self.changed = asyncio.Event()
        """Set whenever a request starts or is answered (the hedge timer waits on it)."""
        self.race: Race | None = None
        """Set while this attempt races a hedge: its first answer must claim the race."""

    @property
    def answers(self) -> int:
        return self._answers

    def silent_since(self) -> float:
        """When the provider went silent while owing output; now if nothing is owed."""
        if self._tripped is not None:
            return self._tripped
        return self._owed_since if self._owed_since is not None else time.monotonic()

    @property
    def limit(self) -> float:
        """Seconds of silence allowed for the output owed now."""
        return self._limit

    def owe(self, deadline: float | None = None) -> None:
        if deadline is not None:
            self.deadline = deadline
        self._limit = self.deadline
        if self._owed_since is None:
            self._owed_since = time.monotonic()
            if self._first_owed is None:
                self._first_owed = self._owed_since
            self._wake.set()

    @property
    def request_since(self) -> float | None:
        """When the request now waiting for its first output started; None if none is."""
        return self._request_since

    def request(self, deadline: float | None = None) -> None:
        """A new request: its first output is owed (from now)."""
        self._owed_since = self._last_answer = None
        self.owe(deadline)
        self._request_since = self._owed_since
        self.changed.set()

    def owe_within(self, limit: float, since: float) -> None:
        """Output is owed ``limit`` seconds after ``since`` (a moment already past, such as
        the end of the caller's speech), whatever was owed before."""
        self._owed_since = since
        if self._first_owed is None:
            self._first_owed = since
        self._limit = limit
        self._wake.set()

    def answered(self) -> None:
        now = time.monotonic()
        if self.race is not None and not self.race.claim(self):
            raise HedgeLost(f"{self.layer} {self.provider} answered after its rival")
        if self._on_first_answer is not None:
            if self._request_since is not None:
                self._on_first_answer(now - self._request_since)
            elif self._answers == 0:
                self._on_first_answer(now - (self._first_owed or now))
        if self._request_since is not None:
            self._request_since = None
            self.changed.set()
        elif self._last_answer is not None:
            self._gaps.append(now - self._last_answer)
            if self._on_gap is not None:
                self._on_gap(now - self._last_answer)
        self._last_answer = now
        self._answers += 1
        self._owed_since = None
        self._wake.set()

    def progress(self) -> None:
        self.answered()
        self.owe()
        if self.rate is not None:
            usual = self._usual_gap() if self._usual_gap is not None else None
            self._limit = self.rate.limit(self._gaps, self.deadline, usual)

    def settle(self) -> None:
        self._owed_since = None
        self._wake.set()

    def trip(self, silent_since: float | None = None) -> None:
        self._tripped = silent_since if silent_since is not None else time.monotonic()
        self._wake.set()

    async def _watch(self) -> None:
        while True:
            if self._tripped is not None:
                raise StallError(self.layer, self.provider, time.monotonic() - self._tripped)
            since = self._owed_since
            self._wake.clear()
            if since is None:
                await self._wake.wait()
                continue
            remaining = since + self._limit - time.monotonic()
            if remaining <= 0:
                self._tripped = since
                continue
            # asyncio.timeout, not wait_for: wait_for (3.11) can swallow a cancellation
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._wake.wait()

    async def guard(self, work: Awaitable[None]) -> None:
        """Runs ``work``; cancels it and raises ``StallError`` if the provider stalls."""
        task = asyncio.ensure_future(work)
        watcher = asyncio.create_task(self._watch())
        try:
            await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()
                return
            await cancel_all(task)
            watcher.result()
        finally:
            await cancel_all(task, watcher)


async def cancel_all(*futures: asyncio.Future[Any]) -> None:
    """Cancels ``futures`` and waits for them; an exception one of them had already ended
    with (a losing attempt that failed as it was cancelled) is consumed, not left for
    asyncio to report as never retrieved."""
    await utils.aio.cancel_and_wait(*futures)
    for fut in futures:
        if fut.done() and not fut.cancelled():
            fut.exception()
