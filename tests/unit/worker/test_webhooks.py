from __future__ import annotations

import base64
import json
import os
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import standardwebhooks

from pipelines.errors import ConfigError
from worker.metrics import WorkerMetrics
from worker.webhooks import (
    SpoolEntry,
    WebhookSender,
    WebhookSignatureError,
    post_signed,
    sign,
    signed_headers,
    verify,
)

SPEC_SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
PLAIN_SECRET = "my plain seed: not base64!"
BODY = b'{"type":"call.report","call_id":"c1"}'


@pytest.mark.parametrize(
    ("secret", "lib_key"),
    [(SPEC_SECRET, SPEC_SECRET), (PLAIN_SECRET, PLAIN_SECRET.encode())],
)
def test_signature_matches_standardwebhooks_both_ways(secret: str, lib_key: str | bytes) -> None:
    lib = standardwebhooks.Webhook(lib_key)
    now = int(time.time())
    # ours -> library
    headers = signed_headers(secret, BODY, msg_id="msg_1", timestamp=now)
    assert lib.verify(BODY, headers) == json.loads(BODY)
    # library -> ours

    lib_sig = lib.sign("msg_2", datetime.fromtimestamp(now, tz=UTC), BODY.decode())
    verify(
        secret,
        {"webhook-id": "msg_2", "webhook-timestamp": str(now), "webhook-signature": lib_sig},
        BODY,
    )
    assert lib_sig == sign(secret, "msg_2", now, BODY)


def test_unpadded_whsec_secret_is_accepted() -> None:
    padded = "whsec_" + base64.b64encode(b"abcd1").decode()
    assert padded.endswith("=")
    assert sign(padded, "m", 1, b"x") == sign(padded.rstrip("="), "m", 1, b"x")


def test_bad_whsec_secret_is_config_error_without_the_secret() -> None:
    secret = "whsec_???not-base64-secret-value"
    with pytest.raises(ConfigError) as info:
        sign(secret, "m", 1, b"x")
    assert "not-base64-secret-value" not in str(info.value)


def test_verify_rejects_tampering_age_and_missing_headers() -> None:
    now = int(time.time())
    headers = signed_headers(PLAIN_SECRET, BODY, msg_id="msg_1", timestamp=now)
    verify(PLAIN_SECRET, headers, BODY)
    with pytest.raises(WebhookSignatureError, match="no matching"):
        verify(PLAIN_SECRET, headers, BODY + b" ")
    with pytest.raises(WebhookSignatureError, match="no matching"):
        verify("another secret", headers, BODY)
    with pytest.raises(WebhookSignatureError, match="too old"):
        verify(PLAIN_SECRET, headers, BODY, now=now + 301)
    with pytest.raises(WebhookSignatureError, match="future"):
        verify(PLAIN_SECRET, headers, BODY, now=now - 301)
    with pytest.raises(WebhookSignatureError, match="webhook-signature"):
        verify(PLAIN_SECRET, {k: v for k, v in headers.items() if k != "webhook-signature"}, BODY)
    # a rotated key list: one valid v1 signature among others is enough
    rotated = dict(headers)
    rotated["webhook-signature"] = "v1,AAAA v2,zzz " + headers["webhook-signature"]
    verify(PLAIN_SECRET, rotated, BODY)


async def test_post_signed_sends_a_verifiable_request() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        verify(SPEC_SECRET, dict(request.headers), request.content)
        return httpx.Response(200, json={"firstMessage": "Hi"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        response = await post_signed(
            "https://example.com/pre",
            {"type": "call.pre_call"},
            SPEC_SECRET,
            timeout=2.0,
            client=client,
        )
    assert response.json() == {"firstMessage": "Hi"}
    assert len(seen) == 1


class Receiver:
    """A MockTransport handler answering from a script of status codes (or exceptions)."""

    def __init__(self, script: list[int | Exception], headers: dict[str, str] | None = None):
        self.script = list(script)
        self.headers = headers or {}
        self.requests: list[httpx.Request] = []
        self.spool_at_request: list[list[str]] = []
        self.spool_dir: Path | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.spool_dir is not None:
            self.spool_at_request.append(sorted(p.name for p in self.spool_dir.glob("*.json")))
        step = self.script.pop(0) if self.script else 200
        if isinstance(step, Exception):
            raise step
        return httpx.Response(step, headers=self.headers if step >= 400 else {})


def make_sender(
    tmp_path: Path, receiver: Receiver, sleeps: list[float], **kw: object
) -> WebhookSender:
    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    receiver.spool_dir = tmp_path
    secret_for: Callable[[str | None], str | None] = lambda agent_id: (  # noqa: E731
        PLAIN_SECRET if agent_id == "agent_1" else None
    )
    return WebhookSender(
        spool_dir=tmp_path,
        secret_for=secret_for,
        client=httpx.AsyncClient(transport=httpx.MockTransport(receiver)),
        sleep=fake_sleep,
        rng=random.Random(1),
        **kw,  # type: ignore[arg-type]
    )


async def test_5xx_and_network_errors_then_2xx_deliver_once_with_one_id(tmp_path: Path) -> None:
    receiver = Receiver([503, httpx.ConnectError("refused"), 500, 204])
    sleeps: list[float] = []
    metrics = WorkerMetrics()
    sender = make_sender(tmp_path, receiver, sleeps, base_delay=0.1, max_delay=5.0, metrics=metrics)
    result = await sender.send(
        "https://example.com/post?token=abc",
        {"type": "call.report"},
        kind="post_call",
        agent_id="agent_1",
    )
    assert result.delivered and result.attempts == 4 and result.status_code == 204
    ids = {r.headers["webhook-id"] for r in receiver.requests}
    assert ids == {result.msg_id}
    for request in receiver.requests:
        verify(PLAIN_SECRET, dict(request.headers), request.content)
    # equal-jitter exponential backoff: each delay in [step/2, step]
    assert len(sleeps) == 3
    for attempt, delay in enumerate(sleeps, start=1):
        step = 0.1 * 2 ** (attempt - 1)
        assert step / 2 <= delay <= step
    # spooled before the first attempt, gone after the 2xx
    assert len(receiver.spool_at_request[0]) == 1
    assert sender.pending() == []
    text = metrics.render().decode()
    assert 'voice_worker_webhook_deliveries_total{kind="post_call",outcome="delivered"} 1.0' in text
    await sender.aclose()


async def test_4xx_is_final_and_moves_payload_to_failed(tmp_path: Path) -> None:
    receiver = Receiver([400, 200])
    sleeps: list[float] = []
    sender = make_sender(tmp_path, receiver, sleeps)
    result = await sender.send("https://x/h", {"a": 1}, kind="status", agent_id="agent_1")
    assert result.outcome == "rejected" and result.attempts == 1 and result.status_code == 400
    assert len(receiver.requests) == 1 and sleeps == []
    assert sender.pending() == []
    assert len(list((tmp_path / "failed").glob("*.json"))) == 1


async def test_429_honours_retry_after(tmp_path: Path) -> None:
    receiver = Receiver([429, 200], headers={"Retry-After": "0.25"})
    sleeps: list[float] = []
    sender = make_sender(tmp_path, receiver, sleeps, base_delay=10.0, max_delay=60.0)
    result = await sender.send("https://x/h", {"a": 1}, kind="status", agent_id="agent_1")
    assert result.delivered and sleeps == [0.25]


async def test_retry_after_is_capped_by_max_delay(tmp_path: Path) -> None:
    receiver = Receiver([503, 200], headers={"Retry-After": "3600"})
    sleeps: list[float] = []
    sender = make_sender(tmp_path, receiver, sleeps, max_delay=2.0)
    assert (await sender.send("https://x/h", {}, kind="status", agent_id="agent_1")).delivered
    assert sleeps == [2.0]


async def test_exhausted_attempts_keep_the_payload_spooled(tmp_path: Path) -> None:
    receiver = Receiver([500, 500, 500, 500])
    sleeps: list[float] = []
    sender = make_sender(tmp_path, receiver, sleeps, max_attempts=3, base_delay=0.01)
    result = await sender.send("https://x/h", {"n": 1}, kind="post_call", agent_id="agent_1")
    assert result.outcome == "exhausted" and result.attempts == 3 and len(receiver.requests) == 3
    assert len(sender.pending()) == 1


async def test_time_budget_stops_retrying(tmp_path: Path) -> None:
    receiver = Receiver([500] * 10)
    sleeps: list[float] = []
    sender = make_sender(
        tmp_path, receiver, sleeps, max_attempts=10, base_delay=1.0, max_delay=1.0, max_elapsed=0.5
    )
    result = await sender.send("https://x/h", {}, kind="post_call", agent_id="agent_1")
    # the first delay (>= 0.5 s) would overrun the 0.5 s budget
    assert result.outcome == "exhausted" and result.attempts == 1 and sleeps == []


async def test_spool_holds_no_secret_and_leftovers_are_redelivered(tmp_path: Path) -> None:
    down = Receiver([httpx.ConnectError("down")] * 2)
    sleeps: list[float] = []
    first = make_sender(tmp_path, down, sleeps, max_attempts=2, base_delay=0.01)
    result = await first.send(
        "https://x/h", {"text": "hello"}, kind="post_call", agent_id="agent_1"
    )
    assert result.outcome == "exhausted"
    (spooled,) = first.pending()
    raw = spooled.read_text()
    assert PLAIN_SECRET not in raw
    entry = SpoolEntry.from_json(raw)
    assert entry.agent_id == "agent_1" and json.loads(entry.body) == {"text": "hello"}

    # files written before the sender existed count as leftovers

    os.utime(spooled, (time.time() - 60, time.time() - 60))
    up = Receiver([200])
    second = make_sender(tmp_path, up, sleeps)
    (redelivered,) = await second.redeliver_spool()
    assert redelivered.delivered and redelivered.msg_id == result.msg_id
    assert up.requests[0].headers["webhook-id"] == result.msg_id
    verify(PLAIN_SECRET, dict(up.requests[0].headers), up.requests[0].content)
    assert second.pending() == []


async def test_redelivery_skips_files_of_live_calls_and_needs_the_secret(tmp_path: Path) -> None:
    sleeps: list[float] = []
    receiver = Receiver([])
    sender = make_sender(tmp_path, receiver, sleeps)
    old = SpoolEntry("msg_old", "post_call", "https://x/h", "agent_unknown", True, "{}", 0.0)
    path = tmp_path / "0-msg_old.json"
    path.write_text(old.to_json())

    os.utime(path, (time.time() - 60, time.time() - 60))
    (tmp_path / "9-msg_new.json").write_text(old.to_json().replace("msg_old", "msg_new"))
    results = await sender.redeliver_spool()
    # no secret for agent_unknown: never sent unsigned, kept for a later start
    assert [r.outcome for r in results] == ["no_secret"]
    assert receiver.requests == []
    assert len(sender.pending()) == 2


async def test_unsigned_payloads_for_agents_without_secret(tmp_path: Path) -> None:
    receiver = Receiver([200])
    sender = make_sender(tmp_path, receiver, [])
    result = await sender.send("https://x/h", {}, kind="status", agent_id=None, signed=False)
    assert result.delivered
    assert "webhook-signature" not in receiver.requests[0].headers
    assert receiver.requests[0].headers["webhook-id"] == result.msg_id


def test_metrics_registry_is_dedicated_and_mountable() -> None:
    from aiohttp import web

    from worker.metrics import add_metrics_route

    metrics = WorkerMetrics()
    metrics.observe_turn("first_audio", 0.7)
    metrics.failovers.labels(
        layer="tts", from_provider="elevenlabs", to_provider="local", reason="timeout"
    ).inc()
    text = metrics.render().decode()
    assert 'voice_worker_turn_latency_seconds_bucket{le="0.75",stage="first_audio"} 1.0' in text
    assert 'from_provider="elevenlabs"' in text
    assert "python_gc" not in text  # not the global registry
    with pytest.raises(ValueError, match="stage"):
        metrics.observe_turn("tts", 0.1)  # type: ignore[arg-type]

    app = web.Application()
    add_metrics_route(app, metrics)
    routes = [r.resource for r in app.router.routes() if r.method == "GET"]
    assert [r.canonical for r in routes if r is not None] == ["/metrics"]
    app.freeze()
    with pytest.raises(RuntimeError, match="frozen"):
        add_metrics_route(app, metrics)


async def test_a_sender_of_its_own_parses_no_ca_bundle_on_the_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call builds its sender as it starts: a TLS context of its own would parse the CA
    bundle on the call's loop (0.1 s of CPU, 2 s on a busy host). It shares the process's."""
    import ssl

    from pipelines.providers import shared_ssl_context

    shared_ssl_context()  # as the job process's prewarm does
    built: list[object] = []
    real = ssl.create_default_context
    monkeypatch.setattr(
        ssl, "create_default_context", lambda *a, **k: built.append(a) or real(*a, **k)
    )
    sender = WebhookSender(spool_dir=tmp_path, secret_for=lambda _key: None)
    try:
        assert built == []
    finally:
        await sender.aclose()
    assert sender._client.is_closed  # it owns the client it made
