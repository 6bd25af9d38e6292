"""The talk page's server without LiveKit: the default agent it offers, and the agent ids
``POST /session`` refuses (a 400 naming the field) before it opens any room; and
``voice-worker talk`` on an unknown agent fails as bad input before starting anything."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from pipelines.errors import AgentNotFound
from worker.cli import main
from worker.dev.services import LiveKitEndpoint
from worker.dev.talk import TalkServer

FRONT_DESK = "agent_01JC0FRNTDESK0000000000000"


async def refuse_unknown(metadata: Mapping[str, Any]) -> None:
    if metadata["agentId"] != FRONT_DESK:
        raise AgentNotFound(f"agent {metadata['agentId']}: not in the control plane")


def talk_server() -> TalkServer:
    endpoint = LiveKitEndpoint("ws://127.0.0.1:9", "key", "secret-not-for-the-page")
    return TalkServer(
        endpoint, "nobody", {"agentId": FRONT_DESK}, title="Front desk", check=refuse_unknown
    )


async def test_config_names_the_default_agent_and_never_the_secret() -> None:
    async with TestClient(TestServer(talk_server().app())) as client:
        resp = await client.get("/config")
        assert resp.status == 200
        text = await resp.text()
        assert await resp.json() == {"title": "Front desk", "agentId": FRONT_DESK}
        assert "secret-not-for-the-page" not in text


async def test_session_refuses_bad_agent_ids_before_any_room() -> None:
    server = talk_server()
    async with TestClient(TestServer(server.app())) as client:
        for body, needle in (
            ('{"agentId": "a b/c"}', "agentId: not an agent id"),
            ('{"agentId": 7}', "agentId: not an agent id"),
            ('{"agentId": "agent_other"}', "agentId agent_other: agent agent_other"),
            ("{not json", "body: not JSON"),
        ):
            resp = await client.post("/session", data=body)
            assert resp.status == 400, body
            assert (await resp.text()).startswith(needle), body
    assert server.rooms == []


def test_talk_with_an_unknown_agent_exits_2_before_any_server(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    control_plane_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONTROL_PLANE_URL", f"file://{control_plane_dir}")
    code = main(["talk", "--agent", "agent_nope", "--out", str(tmp_path / "talk")])
    err = capsys.readouterr().err
    assert code == 2 and "agent_nope" in err, err
    assert not (tmp_path / "talk").exists()  # failed before the stack (and its logs) started
