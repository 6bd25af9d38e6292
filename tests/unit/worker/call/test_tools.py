from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from livekit.agents.llm import RawFunctionTool, StopResponse, ToolError
from livekit.agents.llm.utils import prepare_function_arguments

from worker.call import CallRecorder, ToolCallContext, build_function_tools
from worker.config import ToolPlan, parse_tools
from worker.webhooks import verify

SECRET = "tool-secret-seed"
LOOKUP = ToolPlan(
    name="lookup_user",
    description="Find a customer by phone number.",
    parameters={"type": "object", "properties": {"phone": {"type": "string"}}},
    url="https://tools.example.com/lookup",
    timeout_seconds=0.2,
)


def by_name(tools: list[RawFunctionTool[Any, Any]]) -> dict[str, RawFunctionTool[Any, Any]]:
    return {t.info.name: t for t in tools}


async def invoke(tool: RawFunctionTool[Any, Any], arguments: dict[str, Any]) -> Any:
    # through livekit's own argument binding, as the agent session does it
    args, kwargs = prepare_function_arguments(fnc=tool, json_arguments=json.dumps(arguments))
    return await tool(*args, **kwargs)


# -- webhook tools ----------------------------------------------------------------------


async def test_tool_round_trip_signed_and_scoped() -> None:
    received: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        verify(SECRET, dict(request.headers), request.content)  # raises if unsigned
        received.append(json.loads(request.content))
        return httpx.Response(200, json={"name": "Maya Chen", "plan": "enterprise"})

    recorder = CallRecorder(call_id="call_1")
    ctx = ToolCallContext(
        call_id="call_1", agent_id="agent_1", metadata={"leadId": "l1"},
        record_event=recorder.add_event,
    )  # fmt: skip
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        tools = build_function_tools([LOOKUP], call_context=ctx, http=http, secret=SECRET)
        assert [t.info.name for t in tools] == ["lookup_user"]
        assert tools[0].info.raw_schema["parameters"] == LOOKUP.parameters
        reply = await invoke(tools[0], {"phone": "+12015551234"})
    assert json.loads(reply) == {"name": "Maya Chen", "plan": "enterprise"}
    assert received == [
        {
            "call_id": "call_1",
            "agent_id": "agent_1",
            "tool": "lookup_user",
            "arguments": {"phone": "+12015551234"},
            "metadata": {"leadId": "l1"},
        }
    ]
    (event,) = recorder.finish("done").events
    assert event.type == "tool_call" and event.data["ok"] is True


async def test_tool_timeout_is_a_tool_error() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json={})

    ctx = ToolCallContext(call_id="c", agent_id="a")
    async with httpx.AsyncClient(transport=httpx.MockTransport(slow)) as http:
        (tool,) = build_function_tools([LOOKUP], call_context=ctx, http=http, secret=SECRET)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ToolError, match=r"did not answer within 0\.2 seconds"):
            await invoke(tool, {"phone": "1"})
        assert loop.time() - started < 1.0


@pytest.mark.parametrize(
    "failure",
    [httpx.Response(500, text="boom"), httpx.Response(404), httpx.ConnectError("refused")],
)
async def test_tool_failures_are_tool_errors_without_url(
    failure: httpx.Response | Exception,
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(failure, Exception):
            raise failure
        return failure

    recorder = CallRecorder(call_id="c")
    ctx = ToolCallContext(call_id="c", agent_id="a", record_event=recorder.add_event)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        (tool,) = build_function_tools([LOOKUP], call_context=ctx, http=http, secret=SECRET)
        with pytest.raises(ToolError) as info:
            await invoke(tool, {})
    assert "lookup_user" in info.value.message and "example.com" not in info.value.message
    assert recorder.finish("x").events[0].data["ok"] is False


async def test_non_json_reply_goes_back_as_text_and_long_replies_are_cut() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="x" * 20000)

    ctx = ToolCallContext(call_id="c", agent_id="a")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        (tool,) = build_function_tools([LOOKUP], call_context=ctx, http=http, secret=None)
        reply = await invoke(tool, {})
    assert reply.startswith("xxx") and reply.endswith("[truncated]") and len(reply) < 8100


# -- built-ins --------------------------------------------------------------------------


BUILTINS = parse_tools(
    [
        {"type": "end_call"},
        {"type": "transfer_call", "options": {"to": "sip:desk@pbx.example.com"}},
        {"type": "send_dtmf"},
    ],
    tool_url=None,
)


async def test_end_call_says_goodbye_then_stops_the_reply() -> None:
    hangups: list[str] = []

    async def hangup(goodbye: str) -> None:
        hangups.append(goodbye)

    ctx = ToolCallContext(call_id="c", agent_id="a", hangup=hangup)
    async with httpx.AsyncClient() as http:
        tools = by_name(build_function_tools(BUILTINS, call_context=ctx, http=http, secret=None))
    assert set(tools) == {"end_call"}  # no transfer/dtmf callbacks: not offered to the LLM
    with pytest.raises(StopResponse):
        await invoke(tools["end_call"], {"goodbye": "Thanks for calling, bye!"})
    assert hangups == ["Thanks for calling, bye!"]


async def test_transfer_call_success_and_failure() -> None:
    targets: list[str] = []
    fail = False

    async def transfer(to: str) -> None:
        targets.append(to)
        if fail:
            raise RuntimeError("SIP 486 busy")

    recorder = CallRecorder(call_id="c")
    ctx = ToolCallContext(
        call_id="c", agent_id="a", transfer=transfer, record_event=recorder.add_event
    )
    async with httpx.AsyncClient() as http:
        tools = by_name(build_function_tools(BUILTINS, call_context=ctx, http=http, secret=None))
    with pytest.raises(StopResponse):
        await invoke(tools["transfer_call"], {})
    fail = True
    with pytest.raises(ToolError, match="did not go through"):
        await invoke(tools["transfer_call"], {})
    assert targets == ["sip:desk@pbx.example.com"] * 2
    assert [e.data["ok"] for e in recorder.finish("x").events] == [True, False]


async def test_send_dtmf_publishes_each_digit_with_its_code() -> None:
    published: list[tuple[int, str]] = []

    async def publish(code: int, digit: str) -> None:
        published.append((code, digit))

    ctx = ToolCallContext(call_id="c", agent_id="a", publish_dtmf=publish, dtmf_gap_seconds=0)
    async with httpx.AsyncClient() as http:
        tools = by_name(build_function_tools(BUILTINS, call_context=ctx, http=http, secret=None))
    assert await invoke(tools["send_dtmf"], {"digits": "1*#d0"}) == "Pressed 1*#D0."
    assert published == [(1, "1"), (10, "*"), (11, "#"), (15, "D"), (0, "0")]
    with pytest.raises(ToolError):
        await invoke(tools["send_dtmf"], {"digits": "12x"})


async def test_sip_transfer_uses_the_sip_service() -> None:
    from livekit.protocol import sip

    from worker.call import sip_transfer

    requests: list[Any] = []

    class FakeSip:
        async def transfer_sip_participant(self, req: Any) -> Any:
            requests.append(req)
            return sip.TransferSIPParticipantResponse(status=sip.STS_TRANSFER_FAILED)

    class FakeApi:
        sip = FakeSip()

    transfer = sip_transfer(FakeApi(), room_name="room-1", participant_identity="sip_caller")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="transfer failed"):
        await transfer("+12015554321")
    (req,) = requests
    assert (req.room_name, req.participant_identity, req.transfer_to) == (
        "room-1",
        "sip_caller",
        "+12015554321",
    )
