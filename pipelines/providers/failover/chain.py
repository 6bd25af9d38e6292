"""The failover mechanism shared by the three layers, and what it shows LiveKit.

``ProviderChain`` walks the session's ranked allowed chain of one layer (never anything
else), skips providers whose circuit is open in the shared ``HealthRegistry``, runs one
*attempt* per provider under a ``Watchdog`` (``watchdog``) that turns silence into a
``StallError`` (the layer's deadline; mid-stream, the stream's own rate), classifies what
went wrong (``classify``), records it, emits a ``SwitchEvent`` and moves on. A request
whose first output is later than the provider's usual latency is hedged: raced on the next
allowed provider, the first to answer serves and the other is cancelled. When every
allowed provider has failed it raises ``LayerDown``, whose cause is a non-retryable
``ProviderError`` naming the layer and each provider tried.

``ChainFront`` is the part of ``FailoverSTT``, ``FailoverLLM`` and ``FailoverTTS`` that
does not depend on the layer: model and provider of the serving link, metrics, prewarming
and closing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import aiohttp
from livekit.agents import (
    APIConnectionError,
    APIConnectOptions,
    APIError,
    APIStatusError,
    APITimeoutError,
    utils,
)
from livekit.agents.metrics import AgentMetrics
from livekit.agents.metrics.base import Metadata

from pipelines.errors import ProviderError
from pipelines.providers.factories import ProviderSpec
from pipelines.providers.failover.health import HealthRegistry
from pipelines.providers.failover.watchdog import (
    NO_HEDGE,
    HedgePolicy,
    Race,
    RatePolicy,
    StallError,
    Watchdog,
    cancel_all,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")


class LayerDown(APIConnectionError):
    """Every allowed provider of a layer failed; ``__cause__`` is the ``ProviderError``."""

    @property
    def provider_error(self) -> ProviderError:
        assert isinstance(self.__cause__, ProviderError)
        return self.__cause__


INNER_CONN_OPTIONS = APIConnectOptions(max_retry=0, retry_interval=0.0, timeout=10.0)
"""What the chain passes to each provider: no plugin retries (the chain decides); the
plugin's own timeout stays above the chain's deadlines, which fire first."""


def front_conn_options(conn_options: APIConnectOptions) -> APIConnectOptions:
    """What a chain-backed stream runs with: the caller's timeout and no retries, so
    LiveKit's base class never re-runs ``_run`` (the chain decides)."""
    return APIConnectOptions(max_retry=0, timeout=conn_options.timeout)


@dataclass(frozen=True, slots=True)
class Deadlines:
    """Seconds a provider may stay silent while it owes output before it is failed over."""

    stt: float = 1.5
    """No result while the caller speaks (or after the caller stopped)."""
    llm: float = 2.5
    """No first token (and no next token mid-reply)."""
    tts: float = 1.5
    """No first audio byte of a sentence (and no next chunk mid-sentence)."""

    def for_layer(self, layer: str) -> float:
        return float(getattr(self, layer))


@dataclass(frozen=True, slots=True)
class SwitchEvent:
    """One failover inside a layer (or a return to the recovered primary)."""

    layer: str
    from_provider: str
    """``vendor:model`` that failed (or served until now)."""
    to_provider: str
    reason: str
    """``stall``, ``connection``, ``timeout``, ``server_error``, ``rate_limited``,
    ``client_error``, ``protocol``, ``return_to_primary`` or ``circuit_open``; for hedges
    (``hedge``): ``hedge_won`` (``to_provider``, the hedge, answered first and serves now;
    ``from_provider`` was cancelled) or ``hedge_lost`` (``from_provider`` answered first
    and keeps serving; the hedge ``to_provider`` was cancelled)."""
    switch_seconds: float
    """From the moment the failing provider went silent while owing output (or raised,
    when nothing was owed) to handing the request to ``to_provider``; for a hedge, from
    the request to the first output that decided the race."""
    error: str = ""
    at: float = field(default_factory=time.time)
    """Wall-clock time of the switch."""


def classify(exc: BaseException) -> str:
    """The failure reason recorded for a provider error (see ``SwitchEvent.reason``)."""
    if isinstance(exc, StallError):
        return "stall"
    if isinstance(exc, APIStatusError | aiohttp.ClientResponseError):
        # the Baseten plugin lets aiohttp's handshake error (a ClientResponseError) through
        code = exc.status_code if isinstance(exc, APIStatusError) else exc.status
        if code == 429:
            return "rate_limited"
        if 500 <= code < 600:
            return "server_error"
        if 400 <= code < 500:
            return "client_error"
        # plugins report WebSocket close codes (1006: closed abnormally) as status codes
        return "connection" if 1000 <= code < 5000 else "protocol"
    if isinstance(exc, APITimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, APIConnectionError | ConnectionError | OSError):
        return "connection"
    return "protocol"


@dataclass(frozen=True, slots=True)
class Link(Generic[T]):
    """One allowed provider of a layer: its spec and its plugin instance."""

    spec: ProviderSpec
    instance: T

    @property
    def id(self) -> str:
        return self.spec.id


class Rotate(Exception):
    """Raised by an attempt at a safe point to hand over to the recovered primary."""


Attempt = Callable[[Link[T], Watchdog], Awaitable[None]]


class ProviderChain(Generic[T]):
    """The session's ranked allowed providers of one layer, and which one serves now.

    Order of a new request: the serving provider first (``return_to_primary=False``) or
    the ranked order (``True``); providers that failed in this session and have not
    recovered, or whose circuit is open, go to the end as a last resort."""

    def __init__(
        self,
        layer: str,
        links: Sequence[Link[T]],
        *,
        deadline: float,
        health: HealthRegistry,
        on_switch: Callable[[SwitchEvent], None] | None = None,
        return_to_primary: bool = False,
        hedge: HedgePolicy = NO_HEDGE,
        rate: RatePolicy | None = None,
    ) -> None:
        if not links:
            raise ValueError(f"{layer}: a provider chain needs at least one provider")
        self.layer = layer
        self.links = tuple(links)
        self.deadline = deadline
        self.health = health
        self.on_switch = on_switch
        self.return_to_primary = return_to_primary
        self.hedge = hedge
        self.rate = rate
        self._hedges_left = hedge.budget
        self.current = 0
        self._served = False
        self._failed_at: dict[int, float] = {}

    @property
    def active(self) -> Link[T]:
        return self.links[self.current]

    def _recovered(self, i: int) -> bool:
        failed = self._failed_at.get(i)
        if failed is None:
            return True
        success = self.health.last_success_at(self.links[i].id)
        return (success is not None and success > failed) or (
            self.health.now() - failed >= self.health.policy.cooldown
        )

    def _usable(self, i: int) -> bool:
        return self._recovered(i) and self.health.allows(self.links[i].id)

    def order(self) -> list[int]:
        n = len(self.links)
        if self.return_to_primary or not self._served:
            base = list(range(n))
        else:
            base = [self.current, *(i for i in range(n) if i != self.current)]
        good = [i for i in base if self._usable(i)]
        return good + [i for i in base if i not in good]

    def should_return(self) -> bool:
        """Whether a recovered higher-ranked provider should take over now."""
        if not (self.return_to_primary and self._served):
            return False
        best = self.order()[0]
        return best < self.current and self._usable(best)

    def _emit(self, to: int, reason: str, since: float, error: str) -> None:
        event = SwitchEvent(
            layer=self.layer,
            from_provider=self.links[self.current].id,
            to_provider=self.links[to].id,
            reason=reason,
            switch_seconds=max(0.0, time.monotonic() - since),
            error=error,
        )
        logger.warning(
            "%s failover %s -> %s (%s after %.3f s) %s",
            event.layer,
            event.from_provider,
            event.to_provider,
            event.reason,
            event.switch_seconds,
            error,
        )
        if self.on_switch is not None:
            try:
                self.on_switch(event)
            except Exception:
                logger.exception("on_switch callback failed")

    async def run(self, attempt: Attempt[T]) -> None:
        """Runs ``attempt`` on providers in order until one completes."""
        tried: set[int] = set()
        failures: list[str] = []
        pending: tuple[str, float, str] | None = None
        first = True
        while True:
            idx = next((i for i in self.order() if i not in tried), None)
            if idx is None:
                down = ProviderError(
                    f"{self.layer}: every allowed provider failed: {'; '.join(failures)}",
                    layer=self.layer,
                    provider=",".join(self.links[i].id for i in sorted(tried)),
                    retryable=False,
                )
                # Surfaced as a non-retryable APIError so LiveKit reports it as an
                # unrecoverable session error; the cause says which layer is down.
                raise LayerDown(down.message, retryable=False) from down
            if first and self._served and idx != self.current:
                reason = "return_to_primary" if idx < self.current else "circuit_open"
                pending = (reason, time.monotonic(), "")
            if pending is not None and idx != self.current:
                self._emit(idx, *pending)
            first, pending = False, None
            self.current, self._served = idx, True
            wd = self._watchdog(idx)
            try:
                wd = await self._serve(idx, wd, attempt, tried, failures)
            except Rotate:
                tried = set()
                pending = ("return_to_primary", time.monotonic(), "")
                continue
            except _Failed as failed:
                idx, wd = self.current, failed.wd
                # a provider that served before failing does not spend the others' turns
                tried = {idx} if wd.answers else tried | {idx}
                pending = failed.pending
                continue
            if wd.answers == 0:
                self.health.record_success(self.links[self.current].id)
            return

    def _watchdog(self, idx: int) -> Watchdog:
        link = self.links[idx]
        self.health.begin(link.id)
        return Watchdog(
            self.layer,
            link.id,
            self.deadline,
            on_first_answer=functools.partial(self.health.record_success, link.id),
            rate=self.rate,
            usual_gap=functools.partial(self.health.latency_p95, link.id, 5, "gap"),
            on_gap=functools.partial(self.health.record_latency, link.id, "gap"),
        )

    def _failed(self, idx: int, wd: Watchdog, exc: Exception, failures: list[str]) -> _Failed:
        """Records the failure of provider ``idx``; what ``run`` needs to move on."""
        link = self.links[idx]
        reason = classify(exc)
        self.health.record_failure(link.id, reason)
        self._failed_at[idx] = self.health.now()
        failures.append(f"{link.id} ({reason}: {exc})")
        if reason == "protocol" and not isinstance(exc, APIError):
            logger.warning("%s %s raised %r", self.layer, link.id, exc, exc_info=exc)
        return _Failed(wd, (reason, wd.silent_since(), str(exc)))

    async def _serve(
        self, idx: int, wd: Watchdog, attempt: Attempt[T], tried: set[int], failures: list[str]
    ) -> Watchdog:
        """Runs ``attempt`` on provider ``idx``; each request of it whose first output is
        late is raced by a hedge while the budget lasts. Returns the watchdog of the
        attempt that completed (``self.current`` is its provider); raises ``_Failed`` for
        the one that failed last."""
        task: asyncio.Future[None] = asyncio.ensure_future(wd.guard(attempt(self.links[idx], wd)))
        try:
            while self._hedges_left > 0 and len(self.links) > 1 and not task.done():
                moment = asyncio.create_task(self._hedge_moment(self.current, wd))
                try:
                    await asyncio.wait({task, moment}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    await utils.aio.cancel_and_wait(moment)
                h = None if task.done() else self._hedge_candidate(self.current, tried)
                if h is None:
                    break
                wd, task = await self._race(wd, task, h, attempt, failures)
            try:
                await task
            except Rotate:
                raise
            except Exception as exc:
                raise self._failed(self.current, wd, exc, failures) from exc
            return wd
        finally:
            await cancel_all(task)

    async def _hedge_moment(self, idx: int, wd: Watchdog) -> None:
        """Returns once a request of ``wd`` has waited past the hedge threshold."""
        link_id = self.links[idx].id
        while True:
            wd.changed.clear()
            since = wd.request_since
            threshold = self.hedge.limit(self.health.history(link_id), self.deadline)
            if since is None or threshold is None:
                await wd.changed.wait()
                continue
            remaining = since + threshold - time.monotonic()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await wd.changed.wait()

    def _hedge_candidate(self, idx: int, tried: set[int]) -> int | None:
        """The next allowed provider a hedge may go to: closed circuit (never a half-open
        probe), not failed in this call, not already tried for this request."""
        return next(
            (
                i
                for i in self.order()
                if i != idx
                and i not in tried
                and self._recovered(i)
                and self.health.state(self.links[i].id) == "closed"
            ),
            None,
        )

    async def _race(
        self,
        pwd: Watchdog,
        ptask: asyncio.Future[None],
        h: int,
        attempt: Attempt[T],
        failures: list[str],
    ) -> tuple[Watchdog, asyncio.Future[None]]:
        """The serving provider's request is late: races it against the same request on
        ``h``. The first to answer serves on (its watchdog and task are returned, its
        provider is ``self.current``); the other is cancelled and recorded."""
        p = self.current
        self._hedges_left -= 1
        since = pwd.request_since or time.monotonic()
        hlink = self.links[h]
        logger.info(
            "%s hedge: %s silent for %.3f s, racing %s (%d hedges left)",
            self.layer,
            self.links[p].id,
            time.monotonic() - since,
            hlink.id,
            self._hedges_left,
        )
        hwd = self._watchdog(h)
        race = Race()
        pwd.race = hwd.race = race
        htask = asyncio.ensure_future(hwd.guard(attempt(hlink, hwd)))
        decided: asyncio.Future[Any] = asyncio.ensure_future(race.decided.wait())
        rivals = {ptask: (p, pwd), htask: (h, hwd)}
        won: asyncio.Future[None] | None = None
        try:
            await asyncio.wait({ptask, htask, decided}, return_when=asyncio.FIRST_COMPLETED)
            if race.winner is None:
                # one ended before any answer: done (it wins) or failed (the other serves)
                ended = ptask if ptask.done() else htask
                other = htask if ended is ptask else ptask
                i, w = rivals[ended]
                exc = ended.exception()
                if exc is None:
                    won = ended
                else:
                    if isinstance(exc, Rotate):
                        raise exc
                    assert isinstance(exc, Exception)
                    failed = self._failed(i, w, exc, failures)
                    if i == p:
                        self._emit(h, *failed.pending)
                    won = other
                race.claim(rivals[won][1])
            else:
                won = ptask if race.winner is pwd else htask
                lost = htask if won is ptask else ptask
                await cancel_all(lost)
                if won is htask:
                    self.health.record_slow(self.links[p].id, time.monotonic() - since)
                    self._failed_at[p] = self.health.now()
                    self._emit(h, "hedge_won", since, "no first output within the hedge threshold")
                else:
                    self._emit(h, "hedge_lost", since, "")
            idx, wd = rivals[won]
            pwd.race = hwd.race = None
            self.current = idx
            return wd, won
        finally:
            await cancel_all(decided, *(t for t in rivals if t is not won))


class _Failed(Exception):
    """The serving attempt failed (recorded): ``run`` moves on to the next provider."""

    def __init__(self, wd: Watchdog, pending: tuple[str, float, str]) -> None:
        super().__init__(pending[2])
        self.wd = wd
        self.pending = pending


class MeasuredByAttempts:
    """Mixed into a chain's own streams: each attempt's stream measures itself (tokens,
    characters, per provider) and the front forwards that; LiveKit measuring the chain's
    stream as well would count every reply twice."""

    async def _metrics_monitor_task(self, event_aiter: AsyncIterable[Any]) -> None:
        async for _ in event_aiter:
            pass


class ChainFront:
    """What a chain-backed plugin shows LiveKit: the active link's model and provider, and
    every link's metrics as its own; prewarming warms the first link, closing closes them
    all. Shared by ``FailoverSTT``, ``FailoverLLM`` and ``FailoverTTS``."""

    chain: ProviderChain[Any]
    _forwarders: Sequence[tuple[Link[Any], Callable[[AgentMetrics], None]]] = ()

    @property
    def model(self) -> str:
        return str(self.chain.active.instance.model)

    @property
    def provider(self) -> str:
        return str(self.chain.active.instance.provider)

    def _follow_links(self) -> None:
        self._forwarders = [
            (link, functools.partial(self._forward_metrics, link.spec)) for link in self.chain.links
        ]
        for link, forward in self._forwarders:
            link.instance.on("metrics_collected", forward)

    def _forward_metrics(self, spec: ProviderSpec, metrics: AgentMetrics) -> None:
        # Named as the plan names the provider (vendor, model), not as each plugin calls
        # itself (a URL host, a brand): LiveKit's usage per model, and so the report's.
        named = Metadata(model_name=spec.model, model_provider=spec.vendor)
        self.emit("metrics_collected", metrics.model_copy(update={"metadata": named}))  # type: ignore[attr-defined]

    def prewarm(self) -> None:
        self.chain.links[0].instance.prewarm()

    async def aclose(self) -> None:
        for link, forward in self._forwarders:
            link.instance.off("metrics_collected", forward)
            await link.instance.aclose()
