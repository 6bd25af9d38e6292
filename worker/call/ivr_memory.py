"""IVR memory (001 ``ivr_memory_enabled``): per agent and dialed number, the keys the
navigator pressed on a phone menu that got the call to a person, replayed at the AMD verdict
of the next call to that number instead of asking the LLM again.

Kept in Redis when ``REDIS_URL`` is set (the phone leg's and the fleet's Redis: every worker
shares what one learned), else in files under ``<spool>/../ivr_memory``. Keys are hashed,
so no phone number is written anywhere; entries expire after ``KEEP_DAYS``. A path that was
replayed and did not reach a person is forgotten.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from worker.call.report import CallEvent, TranscriptEntry
from worker.settings import Settings

logger = logging.getLogger(__name__)

KEEP_DAYS = 30
KEY_GAP_SECONDS = 0.3
"""Between replayed keys: menus drop keys pressed faster than they play prompts."""
PRESS_PAUSE_SECONDS = 1.5
"""Keys sent within this of each other count as one menu choice; longer gaps (a menu
prompt in between) are kept in the path as a pause and replayed as one."""


def _key(agent_id: str, number: str) -> str:
    return hashlib.sha256(f"{agent_id}\n{number}".encode()).hexdigest()[:32]


class IVRMemory:
    """Remembered key paths, in Redis or in files."""

    def __init__(self, *, redis_url: str | None, directory: Path) -> None:
        self._redis: Any = None
        if redis_url:
            import redis.asyncio as aioredis

            self._redis = aioredis.from_url(redis_url, decode_responses=True)
        self.directory = directory

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    async def recall(self, agent_id: str, number: str) -> str | None:
        key = _key(agent_id, number)
        try:
            if self._redis is not None:
                body = await self._redis.get(f"vw:ivr:{key}")
            else:
                body = await asyncio.to_thread(self._read, key)
        except Exception as exc:  # a memory that cannot be read is no memory
            logger.warning("ivr memory unavailable: %s", type(exc).__name__)
            return None
        if not body:
            return None
        entry = json.loads(body)
        if time.time() - float(entry.get("at", 0)) > KEEP_DAYS * 86400:
            return None
        return str(entry["path"]) or None

    async def remember(self, agent_id: str, number: str, path: str) -> None:
        key = _key(agent_id, number)
        body = json.dumps({"path": path, "at": time.time()})
        if self._redis is not None:
            await self._redis.set(f"vw:ivr:{key}", body, ex=KEEP_DAYS * 86400)
        else:
            await asyncio.to_thread(self._write, key, body)

    async def forget(self, agent_id: str, number: str) -> None:
        key = _key(agent_id, number)
        if self._redis is not None:
            await self._redis.delete(f"vw:ivr:{key}")
        else:
            (self.directory / f"{key}.json").unlink(missing_ok=True)

    def _read(self, key: str) -> str | None:
        path = self.directory / f"{key}.json"
        return path.read_text() if path.is_file() else None

    def _write(self, key: str, body: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".{key}.tmp"
        tmp.write_text(body)
        tmp.replace(self.directory / f"{key}.json")


def ivr_memory(settings: Settings) -> IVRMemory:
    url = settings.redis_url.get_secret_value() if settings.redis_url else None
    return IVRMemory(redis_url=url, directory=settings.spool_dir.parent / "ivr_memory")


def _at(moment: datetime) -> float:
    return moment.timestamp()


def path_that_reached_a_person(
    events: Sequence[CallEvent], transcript: Sequence[TranscriptEntry], end_reason: str | None
) -> str | None:
    """The keys the agent sent on a navigated call, if a person answered after the last of
    them (the callee spoke after it and the call did not end by running out of attempts);
    pauses between menu choices are kept as spaces (``"1 0"``)."""
    keys = [e for e in events if e.type == "dtmf" and e.data.get("direction") == "sent"]
    if not keys or end_reason == "amd: navigation attempts exhausted":
        return None
    last = _at(keys[-1].at)
    if not any(t.role == "user" and _at(t.started_at) > last for t in transcript):
        return None
    path, previous = "", None
    for event in keys:
        t = _at(event.at)
        if previous is not None and t - previous > PRESS_PAUSE_SECONDS:
            path += " "
        path += str(event.data.get("digit", ""))
        previous = t
    return path or None


async def replay(
    path: str,
    publish: Callable[[int, str], Awaitable[None]],
    record: Callable[..., Any],
    *,
    gap: float = KEY_GAP_SECONDS,
    pause: float = PRESS_PAUSE_SECONDS * 2,
) -> None:
    """Presses a remembered path: ``gap`` between keys, ``pause`` at each space (the next
    menu's prompt plays meanwhile); each key is a ``dtmf`` event like the agent's own."""
    from worker.call.telephony import DTMF_CODES

    first = True
    for choice in path.split(" "):
        if not first:
            await asyncio.sleep(pause)
        first = False
        for i, digit in enumerate(choice):
            if i:
                await asyncio.sleep(gap)
            await publish(DTMF_CODES[digit], digit)
            record("dtmf", direction="sent", digit=digit, replayed=True)
