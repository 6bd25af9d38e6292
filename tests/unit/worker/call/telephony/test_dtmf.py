"""The caller's keys: debounced into one turn the LLM sees, or taken by a waiting
``collect_digits`` (N digits, a terminator, a timeout); every key, pressed or sent, a
``dtmf`` event in the report."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from livekit.agents.llm import RawFunctionTool, ToolError
from livekit.agents.llm.utils import prepare_function_arguments

from worker.call import CallRecorder, ToolCallContext, build_function_tools
from worker.call.telephony import CallerDigits, turn_text
from worker.config import parse_tools

DEBOUNCE = 0.05


def keys(recorder: CallRecorder | None = None) -> tuple[CallerDigits, list[str]]:
    turns: list[str] = []
    digits = CallerDigits(
        on_turn=turns.append,
        record_event=recorder.add_event if recorder else None,
        debounce_seconds=DEBOUNCE,
    )
    return digits, turns


async def test_keys_pressed_together_become_one_turn() -> None:
    recorder = CallRecorder(call_id="c")
    digits, turns = keys(recorder)
    for key in "123":
        digits.push(key)
        await asyncio.sleep(DEBOUNCE / 5)
    assert turns == []  # still typing
    await asyncio.sleep(DEBOUNCE * 3)
    assert turns == ["The caller pressed 1 2 3"]
    digits.push("9")
    await asyncio.sleep(DEBOUNCE * 3)
    assert turns[1:] == ["The caller pressed 9"]  # a later key is a turn of its own
    events = recorder.finish("x").events
    assert [(e.type, e.data) for e in events] == [
        ("dtmf", {"direction": "received", "digit": d}) for d in "1239"
    ]


async def test_a_terminator_ends_the_turn_at_once_and_bad_keys_are_ignored() -> None:
    digits, turns = keys()
    for key in "4x2#":
        digits.push(key)
    assert turns == ["The caller pressed 4 2 #"]  # no wait for the debounce
    await asyncio.sleep(DEBOUNCE * 3)
    assert turns == ["The caller pressed 4 2 #"]


async def test_collect_takes_max_digits_then_keys_are_turns_again() -> None:
    digits, turns = keys()
    task = asyncio.create_task(digits.collect(max_digits=4, timeout=5))
    await asyncio.sleep(0)
    for key in "98765":
        digits.push(key)
    assert await task == ("9876", "max_digits")
    await asyncio.sleep(DEBOUNCE * 3)
    assert turns == ["The caller pressed 5"]


async def test_collect_stops_at_the_terminator_and_counts_typed_ahead_keys() -> None:
    digits, turns = keys()
    digits.push("1")  # typed before the tool asked
    task = asyncio.create_task(digits.collect(terminator="#", timeout=5))
    await asyncio.sleep(0)
    for key in "23#":
        digits.push(key)
    assert await task == ("123", "terminator")
    await asyncio.sleep(DEBOUNCE * 3)
    assert turns == []  # the typed-ahead key went to the tool, not to a turn


async def test_collect_times_out_with_what_it_has() -> None:
    digits, _ = keys()
    task = asyncio.create_task(digits.collect(max_digits=6, timeout=0.05))
    await asyncio.sleep(0)
    digits.push("7")
    assert await task == ("7", "timeout")
    with pytest.raises(RuntimeError):
        both = asyncio.create_task(digits.collect(timeout=1))
        await asyncio.sleep(0)
        await digits.collect(timeout=1)
    both.cancel()


def test_turn_text_spells_each_key() -> None:
    assert turn_text("12*#") == "The caller pressed 1 2 * #"


async def invoke(tool: RawFunctionTool[Any, Any], arguments: dict[str, Any]) -> Any:
    args, kwargs = prepare_function_arguments(fnc=tool, json_arguments=json.dumps(arguments))
    return await tool(*args, **kwargs)


async def test_collect_digits_tool_returns_the_keys_and_records_them() -> None:
    recorder = CallRecorder(call_id="c")
    digits, _ = keys(recorder)
    (plan,) = parse_tools([{"type": "collect_digits"}], tool_url=None)
    ctx = ToolCallContext(
        call_id="c", agent_id="a", collect_digits=digits.collect, record_event=recorder.add_event
    )
    async with httpx.AsyncClient() as http:
        (tool,) = build_function_tools([plan], call_context=ctx, http=http, secret=None)
    assert set(tool.info.raw_schema["parameters"]["properties"]) == {
        "max_digits",
        "terminator",
        "timeout_seconds",
    }
    call = asyncio.create_task(invoke(tool, {"max_digits": 4, "timeout_seconds": 5}))
    await asyncio.sleep(0.01)
    for key in "2468":
        digits.push(key)
    assert await call == "The caller typed 2468."
    # no limit given: up to "#"
    call = asyncio.create_task(invoke(tool, {"timeout_seconds": 5}))
    await asyncio.sleep(0.01)
    for key in "55#":
        digits.push(key)
    assert await call == "The caller typed 55."
    assert (
        await invoke(tool, {"timeout_seconds": 1, "max_digits": 2}) == "The caller typed nothing."
    )
    with pytest.raises(ToolError, match="max_digits"):
        await invoke(tool, {"max_digits": 0})
    tool_events = [e.data for e in recorder.finish("x").events if e.type == "tool_call"]
    assert tool_events == [
        {"tool": "collect_digits", "ok": True, "digits": "2468", "ended_by": "max_digits"},
        {"tool": "collect_digits", "ok": True, "digits": "55", "ended_by": "terminator"},
        {"tool": "collect_digits", "ok": False, "digits": "", "ended_by": "timeout"},
    ]


async def test_collect_digits_options_pin_the_llms_choice() -> None:
    digits, _ = keys()
    (plan,) = parse_tools([{"type": "collect_digits", "options": {"max_digits": 2}}], tool_url=None)
    ctx = ToolCallContext(call_id="c", agent_id="a", collect_digits=digits.collect)
    async with httpx.AsyncClient() as http:
        (tool,) = build_function_tools([plan], call_context=ctx, http=http, secret=None)
    call = asyncio.create_task(invoke(tool, {"max_digits": 6, "timeout_seconds": 5}))
    await asyncio.sleep(0.01)
    for key in "123":
        digits.push(key)
    assert await call == "The caller typed 12."


async def test_send_dtmf_records_each_key_sent() -> None:
    recorder = CallRecorder(call_id="c")

    async def publish(code: int, digit: str) -> None:
        pass

    (plan,) = parse_tools([{"type": "send_dtmf"}], tool_url=None)
    ctx = ToolCallContext(
        call_id="c", agent_id="a", publish_dtmf=publish, record_event=recorder.add_event,
        dtmf_gap_seconds=0,
    )  # fmt: skip
    async with httpx.AsyncClient() as http:
        (tool,) = build_function_tools([plan], call_context=ctx, http=http, secret=None)
    await invoke(tool, {"digits": "3#"})
    events = [(e.type, e.data) for e in recorder.finish("x").events if e.type == "dtmf"]
    assert events == [("dtmf", {"direction": "sent", "digit": d}) for d in "3#"]


class Emitter:
    """The ``on``/``off``/``emit`` of LiveKit's room and session, and ``generate_reply``."""

    def __init__(self) -> None:
        self.handlers: dict[str, list[Any]] = {}
        self.replies: list[str] = []

    def on(self, event: str, handler: Any) -> None:
        self.handlers.setdefault(event, []).append(handler)

    def off(self, event: str, handler: Any) -> None:
        self.handlers[event].remove(handler)

    def emit(self, event: str, arg: Any) -> None:
        for handler in list(self.handlers.get(event, [])):
            handler(arg)

    def generate_reply(self, *, user_input: str) -> None:
        self.replies.append(user_input)


async def test_attached_keys_are_answered_once_the_reply_gate_opens() -> None:
    from livekit import rtc

    room, session, gate = Emitter(), Emitter(), asyncio.Event()
    digits = CallerDigits(debounce_seconds=DEBOUNCE)
    digits.attach(room, session, reply_gate=gate)  # type: ignore[arg-type]
    room.emit("sip_dtmf_received", rtc.SipDTMF(code=1, digit="1"))
    room.emit("sip_dtmf_received", rtc.SipDTMF(code=11, digit="#"))
    assert session.replies == []  # AMD still listening: nobody is answered
    gate.set()
    room.emit("sip_dtmf_received", rtc.SipDTMF(code=2, digit="2"))
    await asyncio.sleep(DEBOUNCE * 3)
    assert session.replies == ["The caller pressed 2"]
    session.emit("close", None)
    assert room.handlers["sip_dtmf_received"] == []  # the room's listener is gone
