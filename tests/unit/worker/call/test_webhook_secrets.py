"""Which secrets sign a call's webhooks, quoting reference 002: "Lifecycle webhooks are
Standard Webhooks-signed with the organization webhook secret. The legacy per-webhook secret
field is still accepted for older clients" (it used to be accepted and never used), and
tool webhooks use the organization secret when the agent has none (they used to go
unsigned)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import httpx
from livekit.agents.llm.utils import prepare_function_arguments

from pipelines.providers import Catalog
from worker.call import CallLifecycle, webhook_sender
from worker.config import ToolPlan, parse_agent, parse_dispatch
from worker.plan import resolve
from worker.settings import Settings
from worker.webhooks import signed_headers, verify

FRONT_DESK = "agent_01JC0FRNTDESK0000000000000"
ORG = "org-secret-for-tests"
LEGACY = "legacy-status-secret"


def lifecycle(
    control_plane_dir: Path, settings: Callable[..., Settings], **webhooks: object
) -> CallLifecycle:
    agent = json.loads((control_plane_dir / "agents" / f"{FRONT_DESK}.json").read_text())
    agent.pop("webhook_secret", None)
    agent.pop("webhookSecret", None)
    agent["webhooks"] = webhooks
    catalog = Catalog.from_json(json.loads((control_plane_dir / "providers.json").read_text()))
    s = settings(webhook_secret=ORG)
    plan = resolve(parse_agent(agent), None, parse_dispatch(None), catalog, s)
    return CallLifecycle(plan, settings=s, call_id="c-1", room_name="r", secrets=())


def test_several_secrets_each_sign_and_any_one_verifies() -> None:
    body = b'{"type":"call.status"}'
    headers = signed_headers((ORG, LEGACY), body, msg_id="msg_1")
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (ORG, LEGACY):
        verify(secret, headers, body)
    assert signed_headers((ORG, ORG), body, msg_id="m")["webhook-signature"].count(" ") == 0


async def test_a_legacy_per_webhook_secret_signs_beside_the_organization_secret(
    control_plane_dir: Path, settings: Callable[..., Settings]
) -> None:
    life = lifecycle(
        control_plane_dir,
        settings,
        status={"url": "https://hooks.example/status", "secret": LEGACY},
        postCall={"url": "https://hooks.example/post-call"},
    )
    sender = webhook_sender(life.settings)
    try:
        status = await sender._lookup_secret(life.hook_key("status"))
        report = await sender._lookup_secret(life.hook_key("post_call"))
    finally:
        await sender.aclose()
    assert status == (ORG, LEGACY)  # older clients verify the legacy one, new ones the org's
    assert report == (ORG,)
    assert LEGACY not in json.dumps(life.recorder.snapshot())


async def test_tool_webhooks_are_signed_with_the_organization_secret(
    control_plane_dir: Path, settings: Callable[..., Settings]
) -> None:
    life = lifecycle(control_plane_dir, settings)
    lookup = ToolPlan(
        name="lookup_user",
        description="Find a customer.",
        parameters={"type": "object", "properties": {}},
        url="https://tools.example/lookup",
    )
    life.plan = dataclasses.replace(life.plan, tools=(lookup,))
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        (tool,) = life.function_tools(http, transfer=None, publish_dtmf=None)
        args, kwargs = prepare_function_arguments(fnc=tool, json_arguments="{}")
        await tool(*args, **kwargs)
    (request,) = seen
    verify(ORG, dict(request.headers), request.content)  # the agent has no secret of its own
