"""Calls that outlive their worker: a lease and a checkpoint per call in Redis.

Self-hosted LiveKit does not restart a job whose worker died, and notices a SIGKILLed agent
only after its 15 s ping timeout. So each call holds a short lease in Redis, renewed by its
job every ``lease/4`` seconds, and writes a checkpoint (the dispatch it came with and the
report so far, transcript included) at every turn. Every worker process watches the
leases; when one lapses, one watcher wins the claim, and the claim bumps the call's epoch:
a fencing token. The old job, if it was only slow, finds its epoch gone at its next renewal
or checkpoint and leaves without a word or a report; the claimer re-dispatches the agent
into the room (``AgentDispatchService.CreateDispatch``) with the claimed epoch, and the new
job takes the lease at that epoch, says it lost the caller for a second and goes on.

Keys (``vw:`` prefix; a call's keys expire an hour after its last checkpoint):
``vw:call:{id}`` the checkpoint (JSON), ``vw:epoch:{id}`` the fencing token,
``vw:lease:{id}`` the holder (``epoch:job``, expires with the lease), ``vw:calls`` a
sorted set of call ids by lease expiry (ms), which the watchers scan.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

logger = logging.getLogger(__name__)

PREFIX = "vw:"
KEEP_SECONDS = 3600
"""How long a call's checkpoint outlives its last write."""
LOOP_STALL_SECONDS = 10.0
"""A job whose event loop has not ticked for this long stops renewing its lease (its
process lives, but the call is as good as dead): the other workers take the call."""
CLAIM_GRACE_MS = 30_000
"""After a claim, how long the watchers leave the call to the new job before trying again
(a job process may have to start first: seconds on a busy host)."""

_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local holder = ARGV[1] .. ':' .. ARGV[2]
local current = redis.call('GET', KEYS[2])
if current and current ~= holder then return 0 end
redis.call('SET', KEYS[2], holder, 'PX', ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
return 1
"""
"""Renews (or takes, at a claimed epoch) the lease if the epoch is still ours and no other
job holds it: of two jobs dispatched for one takeover, the first to take it keeps it.
KEYS: epoch, lease, calls; ARGV: epoch, job, lease ms, expiry ms, call id."""

_SAVE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
"""Writes the checkpoint if the epoch is still ours. KEYS: epoch, call; ARGV: epoch, body, ttl."""

_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return redis.call('INCR', KEYS[3])
"""
"""Claims a call whose lease lapsed: bumps its epoch (fencing the old holder) and holds
the watchers off for the grace period. KEYS: lease, calls, epoch; ARGV: call id, now ms,
grace-until ms. Returns the new epoch, or 0 when the lease is live or another claimed it."""


@dataclass(frozen=True)
class Lease:
    call_id: str
    epoch: int
    job_id: str


class Fenced(RuntimeError):
    """Another worker has taken the call over: this job must stop speaking and leave."""


class CallStore:
    """Leases and checkpoints of calls in Redis (``REDIS_URL``)."""

    def __init__(self, url: str, *, lease_seconds: float = 1.5) -> None:
        self.url = url
        self.redis = aioredis.from_url(url, decode_responses=True)
        self.lease_seconds = lease_seconds

    async def aclose(self) -> None:
        await self.redis.aclose()

    @staticmethod
    def _keys(call_id: str) -> tuple[str, str, str, str]:
        return (
            f"{PREFIX}epoch:{call_id}",
            f"{PREFIX}lease:{call_id}",
            f"{PREFIX}calls",
            f"{PREFIX}call:{call_id}",
        )

    async def acquire(self, call_id: str, job_id: str, *, epoch: int | None = None) -> Lease:
        """Takes the call's lease: a new call gets a new epoch; a takeover passes the epoch
        its claim returned. Raises ``Fenced`` if that epoch is no longer the call's."""
        epoch_key = self._keys(call_id)[0]
        if epoch is None:
            epoch = int(await self.redis.incr(epoch_key))
            await self.redis.expire(epoch_key, KEEP_SECONDS)
        lease = Lease(call_id, epoch, job_id)
        if not await self.renew(lease):
            raise Fenced(f"call {call_id} is at a later epoch than {epoch}")
        return lease

    def _renewal(self, lease: Lease) -> tuple[Any, ...]:
        """``EVAL`` arguments of one renewal of ``lease``."""
        epoch_key, lease_key, calls_key, _ = self._keys(lease.call_id)
        ms = int(self.lease_seconds * 1000)
        expiry = int(time.time() * 1000) + ms
        keys = (epoch_key, lease_key, calls_key)
        return (_RENEW, 3, *keys, lease.epoch, lease.job_id, ms, expiry, lease.call_id)

    async def renew(self, lease: Lease) -> bool:
        """Extends the lease; False once another worker has claimed the call."""
        return bool(await self.redis.eval(*self._renewal(lease)))

    async def save(self, lease: Lease, checkpoint: dict[str, Any]) -> bool:
        """Writes the call's checkpoint; False (nothing written) once fenced."""
        epoch_key, _, _, call_key = self._keys(lease.call_id)
        body = json.dumps(checkpoint, separators=(",", ":"))
        done = await self.redis.eval(_SAVE, 2, epoch_key, call_key, lease.epoch, body, KEEP_SECONDS)
        return bool(done)

    async def load(self, call_id: str) -> dict[str, Any] | None:
        body = await self.redis.get(self._keys(call_id)[3])
        return None if body is None else dict(json.loads(body))

    async def release(self, lease: Lease) -> None:
        """The call is over and reported: its keys go (only while the epoch is ours)."""
        epoch_key, lease_key, calls_key, call_key = self._keys(lease.call_id)
        if await self.redis.get(epoch_key) != str(lease.epoch):
            return
        await self.redis.zrem(calls_key, lease.call_id)
        await self.redis.delete(lease_key, call_key, epoch_key)

    async def forget(self, call_id: str) -> None:
        """Drops a claimed call whose report was delivered from its checkpoint."""
        epoch_key, lease_key, calls_key, call_key = self._keys(call_id)
        await self.redis.zrem(calls_key, call_id)
        await self.redis.delete(lease_key, call_key, epoch_key)

    async def holder(self, call_id: str) -> tuple[int, str] | None:
        """``(epoch, job id)`` of the live lease, None when it has lapsed."""
        found = await self.redis.get(self._keys(call_id)[1])
        if found is None:
            return None
        epoch, _, job_id = str(found).partition(":")
        return int(epoch), job_id

    async def lapsed(self) -> list[str]:
        """Calls whose lease expiry has passed (candidates for a claim)."""
        now = int(time.time() * 1000)
        found = await self.redis.zrangebyscore(self._keys("")[2], 0, now)
        return [str(call_id) for call_id in found]

    async def claim(self, call_id: str) -> int:
        """The new epoch if this process won the lapsed call, else 0."""
        epoch_key, lease_key, calls_key, _ = self._keys(call_id)
        now = int(time.time() * 1000)
        epoch = await self.redis.eval(
            _CLAIM, 3, lease_key, calls_key, epoch_key, call_id, now, now + CLAIM_GRACE_MS
        )
        return int(epoch)


class LeaseKeeper(threading.Thread):
    """Renews a lease every quarter lease from its own thread (and Redis connection), so a
    job whose event loop is busy for a second (a job process starting up, a burst of
    synchronous work on a loaded host) keeps its call; the loop proves it is alive by
    calling ``beat()``, and one silent for ``LOOP_STALL_SECONDS`` lets the lease lapse. A
    stopped or killed process renews nothing. ``on_fenced`` runs (from this thread) once
    the call has been claimed by another worker."""

    def __init__(
        self,
        store: CallStore,
        lease: Lease,
        *,
        on_fenced: Callable[[], object],
        loop_stall: float = LOOP_STALL_SECONDS,
    ) -> None:
        super().__init__(name=f"lease-{lease.call_id}", daemon=True)
        self.store, self.lease = store, lease
        self.on_fenced = on_fenced
        self.loop_stall = loop_stall
        self.last_beat = time.monotonic()
        self.stopped = threading.Event()

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def stop(self) -> None:
        self.stopped.set()

    def run(self) -> None:
        client = redis.Redis.from_url(self.store.url, socket_timeout=self.store.lease_seconds)
        every = self.store.lease_seconds / 4
        try:
            while not self.stopped.is_set():
                if time.monotonic() - self.last_beat < self.loop_stall:
                    try:
                        if not client.eval(*self.store._renewal(self.lease)):
                            if not self.stopped.is_set():
                                with contextlib.suppress(RuntimeError):  # the loop closed
                                    self.on_fenced()
                            return
                    except Exception as exc:  # Redis away: the call goes on; the lease may lapse
                        logger.warning("lease renewal failed: %s", type(exc).__name__)
                self.stopped.wait(every)
        finally:
            client.close()
