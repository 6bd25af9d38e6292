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

import json
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

PREFIX = "vw:"
KEEP_SECONDS = 3600
"""How long a call's checkpoint outlives its last write."""
CLAIM_GRACE_MS = 30_000
"""After a claim, how long the watchers leave the call to the new job before trying again
(a job process may have to start first: seconds on a busy host)."""

_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[1] .. ':' .. ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
return 1
"""
"""Renews (or takes, at a claimed epoch) the lease if the epoch is still ours.
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

    async def renew(self, lease: Lease) -> bool:
        """Extends the lease; False once another worker has claimed the call."""
        epoch_key, lease_key, calls_key, _ = self._keys(lease.call_id)
        ms = int(self.lease_seconds * 1000)
        expiry = int(time.time() * 1000) + ms
        done = await self.redis.eval(
            _RENEW,
            3,
            epoch_key,
            lease_key,
            calls_key,
            lease.epoch,
            lease.job_id,
            ms,
            expiry,
            lease.call_id,
        )
        return bool(done)

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
