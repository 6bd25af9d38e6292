"""Standard Webhooks signing, verification and durable delivery.

Signing follows https://www.standardwebhooks.com/: the ``webhook-signature`` header is
``v1,<base64 HMAC-SHA256>`` over ``f"{webhook-id}.{webhook-timestamp}.{body}"``.

Secrets: a secret starting with ``whsec_`` is the spec's form and the rest is the
base64 key (padding optional). Any other secret is an opaque seed (the control plane's
``webhook_secret`` is free text) and its UTF-8 bytes are the key, so a receiver using
the ``standardwebhooks`` library verifies it with ``Webhook(secret.encode())``. A
``whsec_`` secret that is not valid base64 is a :class:`~pipelines.errors.ConfigError`.

Delivery (:class:`WebhookSender`) writes every payload to a spool directory before the
first attempt and removes it only after a 2xx answer, so a worker killed mid-retry
redelivers on its next start (:meth:`WebhookSender.redeliver_spool`). Every attempt of
one payload carries the same ``webhook-id`` so receivers can deduplicate. The spool
never holds a secret: it records the ``agent_id`` and the sender asks ``secret_for``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import inspect
import json
import logging
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import httpx

from pipelines.errors import ConfigError, VoiceWorkerError
from worker.config import parse_retry_after

if TYPE_CHECKING:
    from worker.metrics import WorkerMetrics

logger = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
SPOOL_VERSION = 1

Secrets = str | tuple[str, ...] | None
"""One signing secret, several (each signs: the header carries every signature, so a
receiver verifying any one of them accepts), or none."""
SecretLookup = Callable[[str | None], "Secrets | Awaitable[Secrets]"]
"""``secret_for(agent_id)``: the signing secret(s) for an agent's webhooks, or ``None``."""

Outcome = Literal["delivered", "rejected", "exhausted", "no_secret"]


class WebhookSignatureError(VoiceWorkerError):
    """A webhook failed verification: missing header, stale timestamp or bad signature."""


def signing_key(secret: str) -> bytes:
    """The HMAC key for ``secret`` (see the module docstring for the two accepted forms)."""
    if not secret:
        raise ConfigError("webhook secret is empty", field="webhook_secret")
    if not secret.startswith(SECRET_PREFIX):
        return secret.encode("utf-8")
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        # never echo the secret itself
        raise ConfigError(
            "secret has the whsec_ prefix but is not valid base64", field="webhook_secret"
        ) from None
    if not key:
        raise ConfigError("webhook secret decodes to an empty key", field="webhook_secret")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` of ``{msg_id}.{timestamp}.{body}``."""
    to_sign = f"{msg_id}.{int(timestamp)}.".encode() + body
    digest = hmac.new(signing_key(secret), to_sign, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_seconds: float = 300,
    now: float | None = None,
) -> None:
    """Raise :class:`WebhookSignatureError` unless ``headers`` sign ``body`` with ``secret``.

    ``webhook-signature`` may hold several space-separated signatures (key rotation);
    one matching ``v1`` signature is enough.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id")
    ts_header = lowered.get("webhook-timestamp")
    sig_header = lowered.get("webhook-signature")
    if not (msg_id and ts_header and sig_header):
        missing = [
            name
            for name, value in (
                ("webhook-id", msg_id),
                ("webhook-timestamp", ts_header),
                ("webhook-signature", sig_header),
            )
            if not value
        ]
        raise WebhookSignatureError(f"missing header(s): {', '.join(missing)}")
    try:
        timestamp = int(ts_header)
    except ValueError:
        raise WebhookSignatureError("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if timestamp < current - tolerance_seconds:
        raise WebhookSignatureError("webhook-timestamp is too old")
    if timestamp > current + tolerance_seconds:
        raise WebhookSignatureError("webhook-timestamp is in the future")

    expected = sign(secret, msg_id, timestamp, body).split(",", 1)[1].encode()
    for candidate in sig_header.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return
    raise WebhookSignatureError(f"no matching v1 signature for webhook-id {msg_id}")


def new_msg_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def encode_body(payload: Any) -> bytes:
    """Compact JSON; the exact bytes that are signed and sent."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def signed_headers(
    secret: Secrets, body: bytes, *, msg_id: str, timestamp: int | None = None
) -> dict[str, str]:
    """Headers for one attempt: one ``v1`` signature per secret, space-separated as the
    spec allows (key rotation; reference 002's legacy per-webhook secret beside the
    organization's); without a secret the payload goes unsigned."""
    ts = int(time.time()) if timestamp is None else timestamp
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
    }
    keys = [secret] if isinstance(secret, str) else list(secret or ())
    keys = list(dict.fromkeys(k for k in keys if k))
    if keys:
        headers["webhook-signature"] = " ".join(sign(k, msg_id, ts, body) for k in keys)
    return headers


async def post_signed(
    url: str,
    payload: Any,
    secret: Secrets,
    *,
    timeout: float,
    client: httpx.AsyncClient | None = None,
    msg_id: str | None = None,
) -> httpx.Response:
    """One signed POST with a hard deadline, no retry: for the pre-call webhook and tools.

    Raises ``httpx`` errors (``TimeoutException``, ``TransportError``) as they come; the
    status code is left to the caller.
    """
    body = encode_body(payload)
    headers = signed_headers(secret, body, msg_id=msg_id or new_msg_id())
    if client is not None:
        return await client.post(url, content=body, headers=headers, timeout=timeout)
    async with httpx.AsyncClient() as own:
        return await own.post(url, content=body, headers=headers, timeout=timeout)


def redacted_url(url: str) -> str:
    """Scheme, host and path only: query strings sometimes carry tokens."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One payload waiting for a 2xx; this is exactly what the spool file holds."""

    msg_id: str
    kind: str
    """``post_call``, ``status``, ... (also the metrics label)."""
    url: str
    agent_id: str | None
    """Which agent's secret signs it; the secret itself is never stored."""
    signed: bool
    body: str
    """The JSON text, byte for byte what is signed and sent."""
    created_at: float

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": SPOOL_VERSION,
                "msg_id": self.msg_id,
                "kind": self.kind,
                "url": self.url,
                "agent_id": self.agent_id,
                "signed": self.signed,
                "created_at": self.created_at,
                "body": self.body,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> SpoolEntry:
        raw = json.loads(text)
        if raw.get("version") != SPOOL_VERSION:
            raise ValueError(f"unknown spool version {raw.get('version')!r}")
        return cls(
            msg_id=str(raw["msg_id"]),
            kind=str(raw["kind"]),
            url=str(raw["url"]),
            agent_id=None if raw.get("agent_id") is None else str(raw["agent_id"]),
            signed=bool(raw["signed"]),
            body=str(raw["body"]),
            created_at=float(raw["created_at"]),
        )


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    msg_id: str
    kind: str
    outcome: Outcome
    """``delivered`` (2xx), ``rejected`` (4xx other than 429: moved to ``failed/``),
    ``exhausted`` (attempts or time used up: left in the spool for the next start),
    ``no_secret`` (a signed payload whose secret is unavailable: left in the spool)."""
    attempts: int
    status_code: int | None = None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.outcome == "delivered"


class WebhookSender:
    """Durable, signed webhook delivery with bounded retries.

    Retries network errors, timeouts, 5xx and 429 (honouring ``Retry-After``, capped at
    ``max_delay``) with exponential backoff and jitter; any other status is final. A
    payload gets at most ``max_attempts`` attempts and ``max_elapsed`` seconds.
    """

    def __init__(
        self,
        *,
        spool_dir: str | os.PathLike[str],
        secret_for: SecretLookup,
        client: httpx.AsyncClient | None = None,
        max_attempts: int = 6,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        timeout: float = 10.0,
        max_elapsed: float = 120.0,
        redeliver_concurrency: int = 4,
        metrics: WorkerMetrics | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ConfigError("must be >= 1", field="webhook_max_attempts")
        self._spool = Path(spool_dir)
        self._failed = self._spool / "failed"
        self._spool.mkdir(parents=True, exist_ok=True)
        self._secret_for = secret_for
        self._owns_client = client is None
        if client is None:
            # the process's shared TLS context: a context of its own would parse the CA
            # bundle (~0.1 s of CPU, seconds on a busy host) on the loop of every call
            from pipelines.providers import shared_ssl_context

            client = httpx.AsyncClient(verify=shared_ssl_context())
        self._client = client
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._timeout = timeout
        self._max_elapsed = max_elapsed
        self._redeliver_concurrency = max(1, redeliver_concurrency)
        self._metrics = metrics
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._in_flight: set[str] = set()
        # files newer than this belong to live calls (possibly other job processes)
        self._created_at = time.time()

    @property
    def spool_dir(self) -> Path:
        return self._spool

    def pending(self) -> list[Path]:
        """Spool files waiting for delivery, oldest first."""
        return sorted(p for p in self._spool.glob("*.json") if p.is_file())

    async def send(
        self,
        url: str,
        payload: Any,
        *,
        kind: str,
        agent_id: str | None,
        signed: bool = True,
        msg_id: str | None = None,
    ) -> DeliveryResult:
        """Spool ``payload``, then deliver it; returns once delivered or given up.

        ``signed=False`` sends without a signature (agents with no secret); a payload
        spooled as signed is never sent unsigned.
        """
        entry = SpoolEntry(
            msg_id=msg_id or new_msg_id(),
            kind=kind,
            url=url,
            agent_id=agent_id,
            signed=signed,
            body=encode_body(payload).decode("utf-8"),
            created_at=time.time(),
        )
        path = self._write(entry)
        return await self._deliver(entry, path)

    async def redeliver_spool(self) -> list[DeliveryResult]:
        """Retry payloads left by an earlier run (call once at worker start-up)."""
        paths = [p for p in self.pending() if p.stat().st_mtime < self._created_at]
        self._clean_stale_tmp()
        semaphore = asyncio.Semaphore(self._redeliver_concurrency)

        async def one(path: Path) -> DeliveryResult | None:
            try:
                entry = SpoolEntry.from_json(path.read_text("utf-8"))
            except (OSError, ValueError, KeyError, TypeError) as e:
                logger.error("unreadable spool file %s: %s", path.name, e)
                self._move_to_failed(path)
                return None
            if entry.msg_id in self._in_flight:
                return None
            async with semaphore:
                return await self._deliver(entry, path)

        results = await asyncio.gather(*(one(p) for p in paths))
        return [r for r in results if r is not None]

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> WebhookSender:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _deliver(self, entry: SpoolEntry, path: Path) -> DeliveryResult:
        self._in_flight.add(entry.msg_id)
        try:
            result = await self._attempts(entry, path)
        finally:
            self._in_flight.discard(entry.msg_id)
        if self._metrics is not None:
            self._metrics.webhook_deliveries.labels(kind=entry.kind, outcome=result.outcome).inc()
            self._metrics.spool_depth.set(len(self.pending()))
        return result

    async def _attempts(self, entry: SpoolEntry, path: Path) -> DeliveryResult:
        secret: Secrets = None
        if entry.signed:
            secret = await self._lookup_secret(entry.agent_id)
            if not secret:
                logger.error(
                    "no webhook secret for agent %s; %s kept in spool", entry.agent_id, entry.msg_id
                )
                return DeliveryResult(entry.msg_id, entry.kind, "no_secret", 0)

        body = entry.body.encode("utf-8")
        target = redacted_url(entry.url)
        deadline = time.monotonic() + self._max_elapsed
        status: int | None = None
        error: str | None = None
        for attempt in range(1, self._max_attempts + 1):
            retry_after: float | None = None
            headers = signed_headers(secret, body, msg_id=entry.msg_id)
            try:
                response = await self._client.post(
                    entry.url, content=body, headers=headers, timeout=self._timeout
                )
            except httpx.HTTPError as e:
                status, error = None, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            else:
                status, error = response.status_code, None
                if 200 <= status < 300:
                    path.unlink(missing_ok=True)
                    logger.info(
                        "webhook %s (%s) delivered to %s after %d attempt(s)",
                        entry.msg_id,
                        entry.kind,
                        target,
                        attempt,
                    )
                    return DeliveryResult(entry.msg_id, entry.kind, "delivered", attempt, status)
                if status != 429 and status < 500:
                    logger.error(
                        "webhook %s (%s) rejected by %s with %d; moved to failed/",
                        entry.msg_id,
                        entry.kind,
                        target,
                        status,
                    )
                    self._move_to_failed(path)
                    return DeliveryResult(
                        entry.msg_id, entry.kind, "rejected", attempt, status, f"HTTP {status}"
                    )
                error = f"HTTP {status}"
                retry_after = parse_retry_after(response.headers.get("retry-after"))

            if attempt == self._max_attempts:
                break
            delay = self._backoff(attempt) if retry_after is None else retry_after
            delay = min(delay, self._max_delay)
            if time.monotonic() + delay > deadline:
                break
            logger.warning(
                "webhook %s (%s) to %s failed (%s), attempt %d/%d; retrying in %.2fs",
                entry.msg_id,
                entry.kind,
                target,
                error,
                attempt,
                self._max_attempts,
                delay,
            )
            await self._sleep(delay)

        logger.error(
            "webhook %s (%s) to %s not delivered (%s); kept in spool",
            entry.msg_id,
            entry.kind,
            target,
            error,
        )
        return DeliveryResult(entry.msg_id, entry.kind, "exhausted", attempt, status, error)

    def _backoff(self, attempt: int) -> float:
        """Equal jitter: half the exponential step guaranteed, half random."""
        step = min(self._max_delay, self._base_delay * 2.0 ** (attempt - 1))
        return step / 2 + self._rng.uniform(0, step / 2)

    async def _lookup_secret(self, agent_id: str | None) -> Secrets:
        found = self._secret_for(agent_id)
        if inspect.isawaitable(found):
            found = await found
        return found

    def _write(self, entry: SpoolEntry) -> Path:
        final = self._spool / f"{time.time_ns():020d}-{entry.msg_id}.json"
        tmp = self._spool / f".tmp-{entry.msg_id}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(entry.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        return final

    def _move_to_failed(self, path: Path) -> None:
        self._failed.mkdir(exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, self._failed / path.name)

    def _clean_stale_tmp(self) -> None:
        for tmp in self._spool.glob(".tmp-*"):
            if tmp.stat().st_mtime < self._created_at:
                tmp.unlink(missing_ok=True)
