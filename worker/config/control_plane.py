"""Control-plane client: fetch an agent, its tools and the provider catalog as raw JSON.

Two sources behind one ``ControlPlane`` protocol: the HTTP API (Bearer key, bounded
retries) and a ``file://DIR`` directory (the embedded default). ``CachingControlPlane``
keeps the last good answer per process so a control-plane outage at session start
degrades to a stale config instead of a failed call. Parsing into models is the
caller's job (``worker.config.agent``); this module only checks the top-level JSON type.
"""

from __future__ import annotations

import asyncio
import copy
import email.utils
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import quote, unquote

import httpx
from pydantic import SecretStr

from pipelines.errors import (
    AgentNotFound,
    ConfigError,
    ControlPlaneError,
    ControlPlaneUnavailable,
    InvalidPayload,
    Unauthorized,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


class ControlPlane(Protocol):
    """Where agent configs come from. Every method returns the raw JSON document."""

    async def get_agent(self, agent_id: str) -> dict[str, Any]: ...

    async def get_tools(self, agent_id: str) -> Any:
        """A JSON list of tools, or an object wrapping one; ``[]`` when the agent has none."""
        ...

    async def get_providers(self) -> dict[str, Any]: ...

    async def get_voices(self) -> Any:
        """The voice catalog: a JSON list of voices, or an object wrapping one."""
        ...

    async def aclose(self) -> None: ...


def _check_agent_id(agent_id: str) -> str:
    # Ids become URL path segments and file names: refuse anything that could walk.
    if (
        not agent_id
        or agent_id in (".", "..")
        or any(c in agent_id for c in "/\\")
        or any(ord(c) < 0x20 for c in agent_id)
    ):
        raise ConfigError(f"invalid agent id {agent_id!r}", field="agentId")
    return agent_id


def _expect(value: Any, kinds: tuple[type, ...], where: str) -> Any:
    if not isinstance(value, kinds):
        wanted = " or ".join("a JSON object" if k is dict else "a JSON list" for k in kinds)
        raise InvalidPayload(f"{where}: expected {wanted}, got {type(value).__name__}")
    return value


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class HttpControlPlane:
    """The control-plane HTTP API.

    Network errors, timeouts, 5xx and 429 are retried up to ``max_attempts`` times with
    exponential backoff and full jitter (``Retry-After`` wins when the server sends it,
    capped at ``max_retry_after``); other 4xx answers are final.
    """

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr | None,
        *,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        max_attempts: int = 3,
        backoff_base: float = 0.2,
        backoff_max: float = 2.0,
        max_retry_after: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ConfigError("must be at least 1", field="max_attempts")
        self._secret = api_key.get_secret_value() if api_key else ""
        headers = {"Accept": "application/json"}
        if self._secret:
            headers["Authorization"] = f"Bearer {self._secret}"
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            transport=transport,
        )
        # Messages name the URL; userinfo in it would be a credential.
        self._base_url = str(self._client.base_url.copy_with(userinfo=b"")).rstrip("/")
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._max_retry_after = max_retry_after
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"HttpControlPlane({self._base_url!r})"

    async def get_agent(self, agent_id: str) -> dict[str, Any]:
        path = f"/v1/agents/{quote(_check_agent_id(agent_id), safe='')}"
        result: dict[str, Any] = await self._get_json(path, (dict,), agent_id)
        return result

    async def get_tools(self, agent_id: str) -> Any:
        path = f"/v1/agents/{quote(_check_agent_id(agent_id), safe='')}/tools"
        return await self._get_json(path, (list, dict), agent_id)

    async def get_providers(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._get_json("/v1/providers/known", (dict,), None)
        return result

    async def get_voices(self) -> Any:
        return await self._get_json("/v1/voices", (list, dict), None)

    async def aclose(self) -> None:
        await self._client.aclose()

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1)))

    async def _get_json(self, path: str, kinds: tuple[type, ...], agent_id: str | None) -> Any:
        url = self._base_url + path
        cause = "no attempt made"
        for attempt in range(1, self._max_attempts + 1):
            delay: float | None = None
            try:
                response = await self._client.get(path)
            except httpx.TimeoutException as e:
                cause = f"timeout ({type(e).__name__})"
            except httpx.RequestError as e:
                cause = self._scrub(f"{type(e).__name__}: {e}")
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return self._decode(response, url, kinds)
                if status in (401, 403):
                    raise Unauthorized(
                        f"GET {path} answered {status}: the control-plane API key "
                        "is missing, wrong or lacks access"
                    )
                if status == 404 and agent_id is not None:
                    raise AgentNotFound(f"agent {agent_id!r} not found (GET {url} answered 404)")
                if status != 429 and status < 500:
                    body = self._scrub(response.text[:200])
                    raise ControlPlaneError(f"GET {url} answered {status}: {body}")
                cause = f"HTTP {status}"
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                if retry_after is not None:
                    delay = min(retry_after, self._max_retry_after)
            if attempt == self._max_attempts:
                break
            delay = self._backoff(attempt) if delay is None else delay
            logger.warning(
                "control plane GET %s failed (%s); attempt %d/%d, retrying in %.2fs",
                url, cause, attempt, self._max_attempts, delay,
            )  # fmt: skip
            await self._sleep(delay)
        raise ControlPlaneUnavailable(
            f"GET {url} failed after {self._max_attempts} attempt(s): {cause}"
        )

    @staticmethod
    def _decode(response: httpx.Response, url: str, kinds: tuple[type, ...]) -> Any:
        try:
            value = json.loads(response.content)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InvalidPayload(f"GET {url}: body is not JSON ({e})") from e
        return _expect(value, kinds, f"GET {url}")


class FileControlPlane:
    """A directory holding ``agents/{id}.json``, ``agents/{id}.tools.json``, ``providers.json``
    and ``voices.json`` (optional).

    Reads are synchronous: the files are a few kilobytes and read once per session.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"FileControlPlane({str(self.directory)!r})"

    async def get_agent(self, agent_id: str) -> dict[str, Any]:
        path = self.directory / "agents" / f"{_check_agent_id(agent_id)}.json"
        value = self._read(path)
        if value is None:
            raise AgentNotFound(f"agent {agent_id!r} not found: {path} does not exist")
        result: dict[str, Any] = _expect(value, (dict,), str(path))
        return result

    async def get_tools(self, agent_id: str) -> Any:
        path = self.directory / "agents" / f"{_check_agent_id(agent_id)}.tools.json"
        value = self._read(path)
        return [] if value is None else _expect(value, (list, dict), str(path))

    async def get_providers(self) -> dict[str, Any]:
        path = self.directory / "providers.json"
        value = self._read(path)
        if value is None:
            raise ControlPlaneError(f"provider catalog {path} does not exist")
        result: dict[str, Any] = _expect(value, (dict,), str(path))
        return result

    async def get_voices(self) -> Any:
        """``voices.json``; none there: an empty catalog (every slug is then unknown)."""
        path = self.directory / "voices.json"
        value = self._read(path)
        return [] if value is None else _expect(value, (list, dict), str(path))

    async def aclose(self) -> None:
        return None

    @staticmethod
    def _read(path: Path) -> Any:
        """The parsed file, or ``None`` if it does not exist."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except UnicodeDecodeError as e:
            raise InvalidPayload(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
        except OSError as e:
            raise ControlPlaneError(f"{path}: cannot read ({e.strerror})") from e
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise InvalidPayload(
                f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
            ) from e


@dataclass(frozen=True, slots=True)
class Fetched(Generic[T]):
    """A control-plane answer and whether it came from the cache after a failure."""

    value: T
    stale: bool = False
    """True when the source was unavailable and this is the last good copy."""
    age_seconds: float = 0.0
    """How long ago the value was fetched from the source (0 for a fresh answer)."""


class CachingControlPlane:
    """Remembers the last good answer per agent; serves it when the source is unavailable.

    Only ``ControlPlaneUnavailable`` (network, timeout, 5xx, 429) falls back to the cache:
    a missing agent, a refused key or a malformed answer is never masked by old data.
    ``fetch_*`` return a ``Fetched`` so the session plan can record staleness;
    ``get_*`` satisfy ``ControlPlane`` and return the value alone.
    """

    def __init__(self, inner: ControlPlane, *, clock: Callable[[], float] = time.monotonic):
        self.inner = inner
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[Any, float]] = {}

    def __repr__(self) -> str:
        return f"CachingControlPlane({self.inner!r})"

    async def fetch_agent(self, agent_id: str) -> Fetched[dict[str, Any]]:
        return await self._fetch(("agent", agent_id), lambda: self.inner.get_agent(agent_id))

    async def fetch_tools(self, agent_id: str) -> Fetched[Any]:
        return await self._fetch(("tools", agent_id), lambda: self.inner.get_tools(agent_id))

    async def fetch_providers(self) -> Fetched[dict[str, Any]]:
        return await self._fetch(("providers", ""), self.inner.get_providers)

    async def fetch_voices(self) -> Fetched[Any]:
        return await self._fetch(("voices", ""), self.inner.get_voices)

    async def get_agent(self, agent_id: str) -> dict[str, Any]:
        return (await self.fetch_agent(agent_id)).value

    async def get_tools(self, agent_id: str) -> Any:
        return (await self.fetch_tools(agent_id)).value

    async def get_providers(self) -> dict[str, Any]:
        return (await self.fetch_providers()).value

    async def get_voices(self) -> Any:
        return (await self.fetch_voices()).value

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def _fetch(self, key: tuple[str, str], get: Callable[[], Awaitable[T]]) -> Fetched[T]:
        try:
            value = await get()
        except ControlPlaneUnavailable as e:
            cached = self._cache.get(key)
            if cached is None:
                raise
            age = self._clock() - cached[1]
            logger.warning(
                "control plane unavailable (%s); using cached %s %r fetched %.0fs ago (stale)",
                e.message, key[0], key[1], age,
            )  # fmt: skip
            # Copies, so a caller mutating its answer cannot corrupt the cache.
            return Fetched(copy.deepcopy(cached[0]), stale=True, age_seconds=age)
        self._cache[key] = (copy.deepcopy(value), self._clock())
        return Fetched(value)


def open_control_plane(
    url: str,
    api_key: SecretStr | None,
    *,
    connect_timeout: float = 2.0,
    read_timeout: float = 5.0,
    max_attempts: int = 3,
) -> ControlPlane:
    """The source named by ``CONTROL_PLANE_URL``: ``https://``/``http://`` or ``file://DIR``.

    ``file://DIR`` accepts an absolute (``file:///srv/cp``) or relative (``file://cp``) path.
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if sep and scheme == "file":
        if not rest:
            raise ConfigError("file:// needs a directory path", field="CONTROL_PLANE_URL")
        directory = Path(unquote(rest)).expanduser()
        if not directory.is_dir():
            raise ConfigError(f"{directory} is not a directory", field="CONTROL_PLANE_URL")
        return FileControlPlane(directory)
    if sep and scheme in ("http", "https"):
        host = httpx.URL(url).host
        if not host:
            raise ConfigError(f"{url!r} has no host", field="CONTROL_PLANE_URL")
        if scheme == "http" and api_key and host not in ("localhost", "127.0.0.1", "::1"):
            logger.warning("CONTROL_PLANE_URL is plain http: the API key travels unencrypted")
        return HttpControlPlane(
            url,
            api_key,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_attempts=max_attempts,
        )
    raise ConfigError(
        f"unsupported URL {url!r}: expected https://, http:// or file://DIR",
        field="CONTROL_PLANE_URL",
    )
