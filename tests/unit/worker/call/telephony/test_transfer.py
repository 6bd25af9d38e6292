"""Blind transfer: the LLM picks a configured destination by label, the REFER target is a
``sip:`` or ``tel:`` URI, and every step is a report event and a ``call.transfer`` status;
a failure is a tool error in words the agent can say, a success ends the call
``transferred``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from livekit.agents.llm import RawFunctionTool, StopResponse, ToolError
from livekit.agents.llm.utils import prepare_function_arguments

from worker.call import CallRecorder, ToolCallContext, build_function_tools
from worker.call.telephony import TRANSFERRED, TransferFailed, blind_transfer
from worker.config import parse_tools

DESTINATIONS = [
    {"to": "sip:desk@pbx.example.com", "label": "Front desk"},
    {"to": "+12015554321", "label": "Overflow"},
]


class FakeLife:
    """What ``blind_transfer`` uses of ``CallLifecycle``: the recorder, ``send_status``
    and ``end_reason``."""

    def __init__(self) -> None:
        self.recorder = CallRecorder(call_id="c")
        self.end_reason: str | None = None
        self.statuses: list[tuple[str, str, dict[str, Any]]] = []

    async def send_status(
        self, sender: object, event_type: str, status: str, **fields: Any
    ) -> bool:
        self.recorder.status_event(event_type, status, **fields)
        self.statuses.append((event_type, status, fields))
        return True


async def invoke(tool: RawFunctionTool[Any, Any], arguments: dict[str, Any]) -> Any:
    args, kwargs = prepare_function_arguments(fnc=tool, json_arguments=json.dumps(arguments))
    return await tool(*args, **kwargs)


async def transfer_tool(
    life: FakeLife, refer_error: Exception | None, referred: list[str]
) -> RawFunctionTool[Any, Any]:
    async def refer(to: str) -> None:
        referred.append(to)
        if refer_error is not None:
            raise refer_error

    transfer = blind_transfer(life, object(), refer)  # type: ignore[arg-type]
    (plan,) = parse_tools(
        [{"type": "transfer_call", "options": {"destinations": DESTINATIONS}}], tool_url=None
    )
    ctx = ToolCallContext(
        call_id="c", agent_id="a", transfer=transfer, record_event=life.recorder.add_event
    )
    async with httpx.AsyncClient() as http:
        (tool,) = build_function_tools([plan], call_context=ctx, http=http, secret=None)
    return tool


async def test_the_llm_picks_a_destination_and_the_call_ends_transferred() -> None:
    life, referred = FakeLife(), []
    tool = await transfer_tool(life, None, referred)
    destination = tool.info.raw_schema["parameters"]["properties"]["destination"]
    assert destination["enum"] == ["Front desk", "Overflow"]
    with pytest.raises(StopResponse):
        await invoke(tool, {"destination": "overflow"})
    await asyncio.sleep(0)  # the status webhooks go out as tasks
    assert referred == ["tel:+12015554321"]  # a bare E.164 number is referred as tel:
    assert life.end_reason == TRANSFERRED
    assert [s[:2] for s in life.statuses] == [
        ("call.transfer", "transferring"),
        ("call.transfer", "transferred"),
    ]
    assert life.statuses[0][2]["metadata"] == {"kind": "blind", "to": "tel:+12015554321"}
    events = [(e.type, e.data) for e in life.recorder.finish("x").events if e.type == "transfer"]
    assert [d["outcome"] for _, d in events] == ["started", "transferred"]


async def test_an_unknown_destination_is_a_tool_error_without_a_refer() -> None:
    life, referred = FakeLife(), []
    tool = await transfer_tool(life, None, referred)
    with pytest.raises(ToolError, match="Front desk, Overflow"):
        await invoke(tool, {"destination": "Billing"})
    assert referred == [] and life.end_reason is None


async def test_a_failed_refer_is_a_tool_error_the_agent_can_say() -> None:
    life, referred = FakeLife(), []
    tool = await transfer_tool(life, RuntimeError("SIP REFER failed with code 486"), referred)
    with pytest.raises(ToolError, match="did not go through: the line is busy"):
        await invoke(tool, {"destination": "Front desk"})
    await asyncio.sleep(0)
    assert referred == ["sip:desk@pbx.example.com"]
    assert life.end_reason is None  # the call goes on with the agent
    (_, failed, fields) = life.statuses[-1]
    assert failed == "failed" and fields["sip_status_code"] == 486
    events = [e.data for e in life.recorder.finish("x").events if e.type == "transfer"]
    assert events[-1]["outcome"] == "failed" and events[-1]["sip_status_code"] == 486


async def test_transfer_failed_without_a_code_says_so_plainly() -> None:
    from livekit.api.twirp_client import ServerError

    life = FakeLife()

    async def refer(to: str) -> None:
        # what livekit.api raises when livekit-sip got a failing NOTIFY (HTTP 408)
        raise ServerError("canceled", "twirp error unknown: call transfer failed", status=408)

    transfer = blind_transfer(life, object(), refer)  # type: ignore[arg-type]
    with pytest.raises(TransferFailed) as failed:
        await transfer("sip:x@example.com")
    assert str(failed.value) == "the transfer did not go through"
    assert failed.value.reason is None and failed.value.sip_status_code is None
    event = [e.data for e in life.recorder.finish("x").events if e.type == "transfer"][-1]
    assert event["error"] == "twirp error unknown: call transfer failed"
