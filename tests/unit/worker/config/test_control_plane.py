"""Control-plane client: HTTP via httpx.MockTransport (no sockets), file source, cache."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from pipelines.errors import (
    AgentNotFound,
    ConfigError,
    ControlPlaneError,
    ControlPlaneUnavailable,
    InvalidPayload,
    Unauthorized,
)
from worker.config import (
    CachingControlPlane,
    ControlPlane,
    FileControlPlane,
    HttpControlPlane,
    open_control_plane,
    parse_retry_after,
)

KEY = "sk_live_secret_1234567890"
BASE = "https://cp.example"
AGENT = {"id": "agent_01", "name": "Support", "systemPrompt": "Be kind."}

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """Replays a script of responses (or exceptions) and records every request."""

    def __init__(self, *script: httpx.Response | Exception) -> None:
        self.script = list(script)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, Exception):
            raise item
        return item


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def client(handler: Handler, sleep: Sleeps | None = None, **kw: Any) -> HttpControlPlane:
    return HttpControlPlane(
        BASE,
        SecretStr(KEY),
        transport=httpx.MockTransport(handler),
        sleep=sleep or Sleeps(),
        **kw,
    )


def ok(body: Any) -> httpx.Response:
    return httpx.Response(200, json=body)


# --- HTTP -----------------------------------------------------------------------------


async def test_success_sends_bearer_key_and_returns_raw_json() -> None:
    """Rule: control plane is HTTP with Bearer key; the client returns raw JSON."""
    rec = Recorder(ok(AGENT))
    cp = client(rec)
    assert await cp.get_agent("agent_01") == AGENT
    req = rec.requests[0]
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    assert req.url == httpx.URL(f"{BASE}/v1/agents/agent_01")
    assert KEY not in repr(cp)
    await cp.aclose()


async def test_tools_and_providers_paths_and_types() -> None:
    """Rule: GET /v1/agents/{id}/tools (list or object) and GET /v1/providers/known (object)."""
    rec = Recorder(ok([{"name": "lookup"}]), ok({"tools": []}), ok({"providers": []}))
    cp = client(rec)
    assert await cp.get_tools("agent_01") == [{"name": "lookup"}]
    assert await cp.get_tools("agent_01") == {"tools": []}
    assert await cp.get_providers() == {"providers": []}
    assert [r.url.path for r in rec.requests] == [
        "/v1/agents/agent_01/tools",
        "/v1/agents/agent_01/tools",
        "/v1/providers/known",
    ]


async def test_agent_id_is_url_path_escaped() -> None:
    """Rule: agent ids are URL-path-escaped."""
    rec = Recorder(ok(AGENT))
    await client(rec).get_agent("agent 01?x=1#f")
    assert rec.requests[0].url.raw_path == b"/v1/agents/agent%2001%3Fx%3D1%23f"


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "a\\b", "../providers"])
async def test_http_rejects_path_walking_agent_ids(bad: str) -> None:
    """Rule: ids that would walk the URL path are refused before any request."""
    rec = Recorder(ok(AGENT))
    with pytest.raises(ConfigError, match="agentId"):
        await client(rec).get_agent(bad)
    assert rec.requests == []


async def test_retry_on_503_then_200() -> None:
    """Rule: 5xx is retried with backoff and full jitter, bounded by backoff_max."""
    sleeps = Sleeps()
    rec = Recorder(httpx.Response(503), ok(AGENT))
    assert await client(rec, sleeps, backoff_base=0.2).get_agent("agent_01") == AGENT
    assert len(rec.requests) == 2
    assert len(sleeps.delays) == 1 and 0 <= sleeps.delays[0] <= 0.2


async def test_retry_on_connection_error_and_timeout() -> None:
    """Rule: network errors and timeouts are retried."""
    rec = Recorder(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), ok(AGENT))
    assert await client(rec).get_agent("agent_01") == AGENT
    assert len(rec.requests) == 3


async def test_429_honours_retry_after_seconds() -> None:
    """Rule: 429 is retried after the server's Retry-After (seconds)."""
    sleeps = Sleeps()
    rec = Recorder(httpx.Response(429, headers={"Retry-After": "0.01"}), ok(AGENT))
    assert await client(rec, sleeps).get_agent("agent_01") == AGENT
    assert sleeps.delays == [0.01]


async def test_retry_after_is_capped() -> None:
    """Rule: Retry-After is capped by max_retry_after so session start stays bounded."""
    sleeps = Sleeps()
    rec = Recorder(httpx.Response(503, headers={"Retry-After": "3600"}), ok(AGENT))
    await client(rec, sleeps, max_retry_after=0.5).get_agent("agent_01")
    assert sleeps.delays == [0.5]


def test_retry_after_http_date() -> None:
    """Rule: Retry-After may be an HTTP-date; a past date or junk means no server hint."""
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after(format_datetime(now + timedelta(seconds=7), usegmt=True), now=now) == 7
    assert parse_retry_after(format_datetime(now - timedelta(seconds=7), usegmt=True), now=now) == 0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize("status", [400, 404, 409, 422])
async def test_no_retry_on_4xx(status: int) -> None:
    """Rule: NO retry on 4xx (other than 429)."""
    rec = Recorder(httpx.Response(status, text="nope"), ok(AGENT))
    with pytest.raises(ControlPlaneError) as info:
        await client(rec).get_agent("agent_01")
    assert len(rec.requests) == 1
    assert not info.value.retryable


async def test_404_is_agent_not_found_naming_the_id() -> None:
    """Rule: 404 -> AgentNotFound naming the agent id."""
    rec = Recorder(httpx.Response(404))
    with pytest.raises(AgentNotFound, match="agent_missing"):
        await client(rec).get_tools("agent_missing")


@pytest.mark.parametrize("status", [401, 403])
async def test_401_is_unauthorized_naming_path_not_key(status: int) -> None:
    """Rule: 401/403 -> Unauthorized; the message names the URL path, never the key."""
    rec = Recorder(httpx.Response(status, text=f"bad key {KEY}"))
    with pytest.raises(Unauthorized) as info:
        await client(rec).get_agent("agent_01")
    assert "/v1/agents/agent_01" in str(info.value)
    assert KEY not in str(info.value)
    assert len(rec.requests) == 1


async def test_4xx_body_echoing_the_key_is_scrubbed() -> None:
    """Rule: never put the API key in any message, even when the server echoes it."""
    rec = Recorder(httpx.Response(400, text=f"invalid request for {KEY}"))
    with pytest.raises(ControlPlaneError) as info:
        await client(rec).get_agent("agent_01")
    assert KEY not in str(info.value) and "***" in str(info.value)


async def test_exhausted_retries_are_unavailable_naming_url_and_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Rule: exhausted retries -> ControlPlaneUnavailable naming the URL and the cause."""
    sleeps = Sleeps()
    rec = Recorder(httpx.Response(502))
    with pytest.raises(ControlPlaneUnavailable) as info:
        await client(rec, sleeps, max_attempts=3).get_providers()
    assert len(rec.requests) == 3 and len(sleeps.delays) == 2  # no sleep after the last try
    msg = str(info.value)
    assert f"{BASE}/v1/providers/known" in msg and "HTTP 502" in msg
    assert info.value.retryable
    assert KEY not in caplog.text


async def test_connect_error_cause_is_named() -> None:
    """Rule: ControlPlaneUnavailable names the network cause."""
    rec = Recorder(httpx.ConnectError("connection refused"))
    with pytest.raises(ControlPlaneUnavailable, match="ConnectError: connection refused"):
        await client(rec, max_attempts=2).get_agent("agent_01")


@pytest.mark.parametrize(
    ("response", "fragment"),
    [
        (httpx.Response(200, text="<html>oops</html>"), "not JSON"),
        (httpx.Response(200, content=b"\xff\xfe"), "not JSON"),
        (ok(["not", "an", "object"]), "expected a JSON object, got list"),
    ],
)
async def test_invalid_json_is_invalid_payload(response: httpx.Response, fragment: str) -> None:
    """Rule: non-JSON/wrong-type body -> InvalidPayload naming the URL; not retried."""
    rec = Recorder(response)
    with pytest.raises(InvalidPayload, match=fragment) as info:
        await client(rec).get_agent("agent_01")
    assert "/v1/agents/agent_01" in str(info.value)
    assert len(rec.requests) == 1


async def test_tools_must_be_list_or_object() -> None:
    """Rule: tools payload is a list or an object."""
    with pytest.raises(InvalidPayload, match="JSON list or a JSON object"):
        await client(Recorder(ok("tools"))).get_tools("agent_01")


async def test_without_key_no_authorization_header() -> None:
    """Rule: no key configured -> no Authorization header (local/test servers)."""
    rec = Recorder(ok(AGENT))
    cp = HttpControlPlane(BASE, None, transport=httpx.MockTransport(rec))
    await cp.get_agent("agent_01")
    assert "Authorization" not in rec.requests[0].headers


# --- file:// ---------------------------------------------------------------------------


@pytest.fixture
def cpdir(tmp_path: Path) -> Path:
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "agent_01.json").write_text(json.dumps(AGENT))
    (tmp_path / "agents" / "agent_01.tools.json").write_text('[{"name": "lookup"}]')
    (tmp_path / "providers.json").write_text('{"providers": []}')
    return tmp_path


async def test_file_source_happy_path(cpdir: Path) -> None:
    """Rule: file://DIR holds agents/{id}.json, agents/{id}.tools.json, providers.json."""
    cp = FileControlPlane(cpdir)
    assert await cp.get_agent("agent_01") == AGENT
    assert await cp.get_tools("agent_01") == [{"name": "lookup"}]
    assert await cp.get_providers() == {"providers": []}


async def test_file_missing_agent_names_the_file(cpdir: Path) -> None:
    """Rule: missing agents/{id}.json -> AgentNotFound naming the file."""
    with pytest.raises(AgentNotFound, match=r"agent_x.*agents/agent_x\.json"):
        await FileControlPlane(cpdir).get_agent("agent_x")


async def test_file_missing_tools_is_empty_list(cpdir: Path) -> None:
    """Rule: missing tools file -> empty list (agents may have no tools)."""
    (cpdir / "agents" / "agent_01.tools.json").unlink()
    assert await FileControlPlane(cpdir).get_tools("agent_01") == []


async def test_file_missing_providers_names_the_file(cpdir: Path) -> None:
    """Rule: missing providers.json -> a clear error naming the file."""
    (cpdir / "providers.json").unlink()
    with pytest.raises(ControlPlaneError, match=r"providers\.json"):
        await FileControlPlane(cpdir).get_providers()


async def test_file_bad_json_names_file_and_position(cpdir: Path) -> None:
    """Rule: bad JSON -> InvalidPayload naming the file and the JSON error position."""
    (cpdir / "agents" / "agent_01.json").write_text('{\n  "id": "agent_01",\n  oops\n}')
    with pytest.raises(InvalidPayload, match=r"agent_01\.json: invalid JSON at line 3 column 3"):
        await FileControlPlane(cpdir).get_agent("agent_01")


async def test_file_wrong_type_is_invalid_payload(cpdir: Path) -> None:
    """Rule: the agent file must hold a JSON object."""
    (cpdir / "agents" / "agent_01.json").write_text("[1, 2]")
    with pytest.raises(InvalidPayload, match="expected a JSON object, got list"):
        await FileControlPlane(cpdir).get_agent("agent_01")


@pytest.mark.parametrize("bad", ["../providers", "..", "a/b", "..\\x", "/etc/passwd"])
async def test_file_rejects_path_traversal(cpdir: Path, bad: str) -> None:
    """Rule: reject agent ids with path separators or '..', naming the id."""
    (cpdir / "agents" / "a").mkdir()
    (cpdir / "agents" / "a" / "b.json").write_text("{}")
    with pytest.raises(ConfigError, match="invalid agent id") as info:
        await FileControlPlane(cpdir).get_agent(bad)
    assert repr(bad) in str(info.value)


# --- cache -----------------------------------------------------------------------------


class FlakySource:
    """A ControlPlane whose next failure is set by the test."""

    def __init__(self) -> None:
        self.fail: Exception | None = None
        self.agent: dict[str, Any] = dict(AGENT)

    async def get_agent(self, agent_id: str) -> dict[str, Any]:
        if self.fail:
            raise self.fail
        return dict(self.agent)

    async def get_tools(self, agent_id: str) -> Any:
        if self.fail:
            raise self.fail
        return [{"name": "lookup"}]

    async def get_providers(self) -> dict[str, Any]:
        if self.fail:
            raise self.fail
        return {"providers": []}

    async def aclose(self) -> None:
        pass


async def test_cache_serves_stale_copy_when_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    """Rule: when the source is unavailable and a cached copy exists, serve it, flag it
    stale with its age, and log a warning."""
    now = [100.0]
    src = FlakySource()
    cp = CachingControlPlane(src, clock=lambda: now[0])
    fresh = await cp.fetch_agent("agent_01")
    assert not fresh.stale and fresh.value == AGENT
    await cp.fetch_tools("agent_01")
    await cp.fetch_providers()

    src.fail = ControlPlaneUnavailable("GET x failed: HTTP 503")
    now[0] = 142.0
    stale = await cp.fetch_agent("agent_01")
    assert stale.stale and stale.age_seconds == 42.0 and stale.value == AGENT
    assert (await cp.fetch_tools("agent_01")).stale
    assert (await cp.get_providers()) == {"providers": []}
    assert "stale" in caplog.text and "42s" in caplog.text

    stale.value["name"] = "mutated"
    assert (await cp.get_agent("agent_01"))["name"] == "Support"


async def test_cache_refreshes_after_recovery() -> None:
    """Rule: the cache holds the LAST good config; a fresh answer replaces it."""
    src = FlakySource()
    cp = CachingControlPlane(src)
    await cp.get_agent("agent_01")
    src.agent["name"] = "Renamed"
    assert (await cp.get_agent("agent_01"))["name"] == "Renamed"
    src.fail = ControlPlaneUnavailable("down")
    assert (await cp.get_agent("agent_01"))["name"] == "Renamed"


async def test_cache_without_copy_reraises_unavailable() -> None:
    """Rule: the cache only helps if a copy exists; otherwise the outage surfaces."""
    src = FlakySource()
    src.fail = ControlPlaneUnavailable("down")
    with pytest.raises(ControlPlaneUnavailable):
        await CachingControlPlane(src).get_agent("agent_01")


@pytest.mark.parametrize(
    "error",
    [AgentNotFound("agent 'agent_01' not found"), Unauthorized("401"), InvalidPayload("bad")],
)
async def test_cache_does_not_mask_not_found_unauthorized_invalid(error: Exception) -> None:
    """Rule: NotFound/Unauthorized/InvalidPayload are NOT masked by the cache."""
    src = FlakySource()
    cp = CachingControlPlane(src)
    await cp.get_agent("agent_01")
    src.fail = error
    with pytest.raises(type(error)):
        await cp.get_agent("agent_01")


def test_every_source_is_a_control_plane() -> None:
    """Rule: all sources share the ControlPlane interface (checked by mypy here)."""
    sources: list[ControlPlane] = [
        client(Recorder(ok(AGENT))),
        FileControlPlane("."),
        CachingControlPlane(CachingControlPlane(FlakySource())),
    ]
    assert len(sources) == 3


async def test_cache_over_http_serves_stale_on_5xx_not_on_404() -> None:
    """Rule: end to end, an HTTP outage serves the cached agent but a 404 does not."""
    rec = Recorder(ok(AGENT))
    cp = CachingControlPlane(client(rec, max_attempts=2))
    await cp.get_agent("agent_01")
    rec.script = [httpx.Response(503)]
    assert (await cp.fetch_agent("agent_01")).stale
    rec.script = [httpx.Response(404)]
    with pytest.raises(AgentNotFound):
        await cp.get_agent("agent_01")
    await cp.aclose()


# --- open_control_plane ---------------------------------------------------------------


def test_open_dispatches_on_scheme(cpdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rule: https:// and http:// -> HTTP; file:// with absolute or relative path -> files."""
    assert isinstance(open_control_plane(BASE, SecretStr(KEY)), HttpControlPlane)
    assert isinstance(open_control_plane("http://localhost:8080", None), HttpControlPlane)
    absolute = open_control_plane(f"file://{cpdir}", None)
    assert isinstance(absolute, FileControlPlane) and absolute.directory == cpdir
    monkeypatch.chdir(cpdir.parent)
    relative = open_control_plane(f"file://{cpdir.name}", None)
    assert isinstance(relative, FileControlPlane) and relative.directory == Path(cpdir.name)


@pytest.mark.parametrize(
    "url", ["ftp://cp.example", "cp.example", "", "https://", "file://", "file://nope"]
)
def test_open_rejects_bad_urls_naming_the_setting(url: str) -> None:
    """Rule: any other scheme (or a missing directory) is a ConfigError naming CONTROL_PLANE_URL."""
    with pytest.raises(ConfigError, match="CONTROL_PLANE_URL"):
        open_control_plane(url, SecretStr(KEY))


async def test_voice_catalog_from_either_source(cpdir: Path) -> None:
    """001: 'Voice slug from the VMS catalog (see GET /v1/voices)'; voices.json on file://,
    an empty catalog when that file is absent."""
    assert await FileControlPlane(cpdir).get_voices() == []
    (cpdir / "voices.json").write_text('{"voices": [{"slug": "oliver", "provider": "speechify"}]}')
    assert (await FileControlPlane(cpdir).get_voices())["voices"][0]["slug"] == "oliver"
    rec = Recorder(ok([{"slug": "oliver", "provider": "speechify"}]))
    assert await client(rec).get_voices() == [{"slug": "oliver", "provider": "speechify"}]
    assert [r.url.path for r in rec.requests] == ["/v1/voices"]
