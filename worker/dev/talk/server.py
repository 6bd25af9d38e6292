"""The page and its token endpoint, served on loopback (aiohttp).

``GET /`` is the page, ``GET /talk.js`` its bundled script (``bundle.ensure_bundle``),
``GET /config`` the default agent, ``POST /session`` opens a call: a new room, the agent
dispatched into it through LiveKit's AgentDispatchService (the metadata the worker reads:
``agentId`` or an inline ``agent``; a JSON body ``{"agentId": ...}`` picks another agent,
checked by ``check`` first when given), and a token for the browser to join as the
caller. The API secret stays on this side; the browser gets only its own room token.
"""

from __future__ import annotations

import datetime
import json
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from livekit import api

from pipelines.errors import VoiceWorkerError
from worker.call import EVENTS_TOPIC
from worker.dev.services import LOOPBACK, LiveKitEndpoint, free_port
from worker.dev.talk.bundle import STATIC, ensure_bundle

ROOM_PREFIX = "talk-"
TOKEN_TTL_SECONDS = 3600
AGENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
Check = Callable[[Mapping[str, Any]], Awaitable[object]]
"""Resolves a call's dispatch metadata, raising ``VoiceWorkerError`` if it cannot run."""


class TalkServer:
    """``async with TalkServer(livekit, agent_name, metadata) as talk:`` serves the page
    at ``talk.url`` until the block ends; each ``POST /session`` is one call."""

    def __init__(
        self,
        livekit: LiveKitEndpoint,
        agent_name: str,
        metadata: Mapping[str, Any],
        *,
        title: str = "",
        port: int | None = None,
        check: Check | None = None,
    ) -> None:
        self.livekit = livekit
        self.agent_name = agent_name
        self.metadata = dict(metadata)
        self.title = title
        self.port = port or free_port()
        self.check = check
        self.rooms: list[str] = []
        """Rooms opened by ``POST /session``, oldest first."""
        self._bundle: Path | None = None
        self._lkapi: api.LiveKitAPI | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/talk.css", self._static)
        app.router.add_get("/talk.js", self._script)
        app.router.add_get("/config", self._config)
        app.router.add_post("/session", self._session)
        return app

    async def __aenter__(self) -> Self:
        self._bundle = ensure_bundle()
        self._lkapi = self.livekit.client()
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOOPBACK, self.port).start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._lkapi is not None:
            await self._lkapi.aclose()

    async def _page(self, _request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def _static(self, _request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "talk.css")

    async def _script(self, _request: web.Request) -> web.FileResponse:
        assert self._bundle is not None
        return web.FileResponse(self._bundle, headers={"Content-Type": "text/javascript"})

    async def _config(self, _request: web.Request) -> web.Response:
        body = {"title": self.title, "agentId": self.metadata.get("agentId", "")}
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    async def _call_metadata(self, request: web.Request) -> dict[str, Any]:
        """The dispatch metadata of this call: the default, or the body's ``agentId``."""
        raw = await request.text()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            raise web.HTTPBadRequest(text=f"body: not JSON ({exc.msg})") from None
        agent_id = body.get("agentId") if isinstance(body, dict) else None
        if agent_id in (None, "", self.metadata.get("agentId")):
            return self.metadata
        if not isinstance(agent_id, str) or not AGENT_ID.fullmatch(agent_id):
            raise web.HTTPBadRequest(text=f"agentId: not an agent id: {str(agent_id)[:80]!r}")
        metadata = {k: v for k, v in self.metadata.items() if k != "agent"}
        metadata["agentId"] = agent_id
        if self.check is not None:
            try:
                await self.check(metadata)
            except VoiceWorkerError as exc:
                raise web.HTTPBadRequest(text=f"agentId {agent_id}: {exc}") from None
        return metadata

    async def _session(self, request: web.Request) -> web.Response:
        metadata = await self._call_metadata(request)
        assert self._lkapi is not None
        room = f"{ROOM_PREFIX}{secrets.token_hex(4)}"
        identity = f"you-{secrets.token_hex(3)}"
        await self._lkapi.room.create_room(api.CreateRoomRequest(name=room))
        await self._lkapi.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(
                agent_name=self.agent_name, room=room, metadata=json.dumps(metadata)
            )
        )
        self.rooms.append(room)
        token = (
            api.AccessToken(self.livekit.api_key, self.livekit.api_secret)
            .with_identity(identity)
            .with_name("You")
            .with_ttl(datetime.timedelta(seconds=TOKEN_TTL_SECONDS))
            .with_grants(api.VideoGrants(room_join=True, room=room))
            .to_jwt()
        )
        body = {
            "url": self.livekit.url,
            "token": token,
            "room": room,
            "identity": identity,
            "title": self.title,
            "eventsTopic": EVENTS_TOPIC,
        }
        return web.json_response(body, headers={"Cache-Control": "no-store"})
