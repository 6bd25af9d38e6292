"""Leases, claims and fencing of calls, and the IVR memory, in a real Redis (the session's
redis-server)."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from worker.call.checkpoint import CallStore, Fenced
from worker.call.ivr_memory import IVRMemory

pytestmark = pytest.mark.integration


async def test_a_lapsed_call_is_claimed_once_and_its_old_holder_fenced(redis_address: str) -> None:
    url = f"redis://{redis_address}/2"
    store = CallStore(url, lease_seconds=0.5)
    call_id = f"call-{secrets.token_hex(4)}"
    lease = await store.acquire(call_id, "job-1")
    assert await store.save(lease, {"room": "r", "report": {"n": 1}})
    assert await store.renew(lease)
    assert call_id not in await store.lapsed()
    assert await store.claim(call_id) == 0  # a live lease is nobody's to claim

    await asyncio.sleep(0.7)  # the holder stalls past its lease
    assert call_id in await store.lapsed()
    rivals = [CallStore(url) for _ in range(3)]  # other workers watching
    won = await asyncio.gather(*(r.claim(call_id) for r in [store, *rivals]))
    assert sorted(won)[:-1] == [0, 0, 0] and max(won) == lease.epoch + 1
    assert call_id not in await store.lapsed()  # held off while the takeover starts

    # the old holder wakes up: neither its lease nor its checkpoint goes through
    assert not await store.renew(lease)
    assert not await store.save(lease, {"room": "r", "report": {"n": 2}})
    assert (await store.load(call_id)) == {"room": "r", "report": {"n": 1}}
    with pytest.raises(Fenced):
        await store.acquire(call_id, "job-1", epoch=lease.epoch)

    # the new job takes the call at the claimed epoch, then ends it
    taken = await store.acquire(call_id, "job-2", epoch=max(won))
    assert await store.holder(call_id) == (max(won), "job-2")
    # a second job dispatched for the same takeover (the first dispatch looked lost) is late
    with pytest.raises(Fenced):
        await store.acquire(call_id, "job-3", epoch=max(won))
    assert await store.renew(taken)
    assert await store.save(taken, {"room": "r", "report": {"n": 3}})
    await store.release(lease)  # the fenced job cannot drop the new job's keys
    assert (await store.load(call_id)) == {"room": "r", "report": {"n": 3}}
    await store.release(taken)
    assert await store.load(call_id) is None
    assert call_id not in await store.lapsed()
    for r in [store, *rivals]:
        await r.aclose()


async def test_the_ivr_memory_is_shared_through_redis(redis_address: str, tmp_path: Path) -> None:
    url = f"redis://{redis_address}/2"
    one, other = (IVRMemory(redis_url=url, directory=tmp_path) for _ in range(2))
    number = f"+1415555{secrets.randbelow(10_000):04d}"
    await one.remember("agent_a", number, "1 0")
    assert await other.recall("agent_a", number) == "1 0"  # another worker learned it
    assert not list(tmp_path.iterdir())  # nothing on disk when Redis holds it
    keys = await one._redis.keys("vw:ivr:*")
    assert keys and not any(number[1:] in k for k in keys)
    await other.forget("agent_a", number)
    assert await one.recall("agent_a", number) is None
    await one.aclose()
    await other.aclose()
