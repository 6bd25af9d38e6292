from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from livekit import api
from livekit.agents.llm import RawFunctionTool, StopResponse, ToolError
from livekit.agents.llm.utils import prepare_function_arguments

from worker.call import CallRecorder, ToolCallContext, build_function_tools
from worker.call.telephony import (
    Decision,
    DialFailed,
    LiveKitDialer,
    TransferOutcome,
    move_supported,
    outcome_for_sip,
    run_warm_transfer,
    screening_text,
)
from worker.call.telephony.warm_transfer import fallback_instruction
from worker.config import WarmDestination, WarmTransferOptions, parse_tools


def options(*labels: str, fallback: Any = "take_message") -> WarmTransferOptions:
    return WarmTransferOptions(
        destinations=tuple(WarmDestination(label.lower(), label, "ST_1") for label in labels),
        screening_prompt="A caller is waiting",
        fallback=fallback,
    )


@dataclass
class FakeLeg:
    decision_: Decision
    bridge_error: DialFailed | None = None
    screened: list[str] = field(default_factory=list)
    closed: bool = False
    bridged: bool = False

    async def screen(self, text: str) -> None:
        self.screened.append(text)

    async def decision(self, timeout: float) -> Decision:
        return self.decision_

    async def bridge(self) -> None:
        if self.bridge_error is not None:
            raise self.bridge_error
        self.bridged = True

    async def close(self) -> None:
        self.closed = True


class Script:
    """Per destination label: a DialFailed to raise, or the leg to answer with."""

    def __init__(self, **plan: DialFailed | FakeLeg) -> None:
        self.plan = plan
        self.dialled: list[tuple[str, int]] = []
        self.stages: list[tuple[str, str | None, dict[str, Any]]] = []

    async def dial(self, dest: WarmDestination, index: int) -> FakeLeg:
        self.dialled.append((dest.label, index))
        outcome = self.plan[dest.label]
        if isinstance(outcome, DialFailed):
            raise outcome
        return outcome

    async def stage(self, name: str, *, destination: str | None, **fields: Any) -> None:
        self.stages.append((name, destination, fields))

    def names(self) -> list[tuple[str, str | None]]:
        return [(n, d) for n, d, _ in self.stages]


async def test_busy_then_accepted_is_bridged() -> None:
    leg = FakeLeg(Decision.ACCEPT)
    script = Script(Desk=DialFailed(TransferOutcome.BUSY, 486, "Busy Here"), Overflow=leg)
    result = await run_warm_transfer(
        options("Desk", "Overflow"), "Sam wants a booking.", dial=script.dial, stage=script.stage
    )
    assert result.bridged_to == "Overflow" and result.fallback is None
    assert [(a.destination, a.outcome, a.sip_status_code) for a in result.attempts] == [
        ("Desk", TransferOutcome.BUSY, 486),
        ("Overflow", TransferOutcome.BRIDGED, None),
    ]
    assert script.names() == [
        ("dialing", "Desk"),
        ("busy", "Desk"),
        ("dialing", "Overflow"),
        ("answered", "Overflow"),
        ("screened", "Overflow"),
        ("accepted", "Overflow"),
        ("bridged", "Overflow"),
    ]
    assert script.stages[1][2] == {"sip_status_code": 486, "sip_status": "Busy Here"}
    (said,) = leg.screened
    assert said.startswith("A caller is waiting. Sam wants a booking. Press 1")
    assert leg.bridged and leg.closed
    event = result.to_event()
    assert event["bridged_to"] == "Overflow"
    assert [a["outcome"] for a in event["attempts"]] == ["busy", "bridged"]


async def test_every_decline_tries_the_next_then_takes_a_message() -> None:
    legs = {
        "A": FakeLeg(Decision.DECLINE),
        "B": FakeLeg(Decision.NO_REPLY),
        "C": FakeLeg(Decision.HUNG_UP),
        # accepted, but the leg into the caller's room was refused
        "D": FakeLeg(Decision.ACCEPT, bridge_error=DialFailed(TransferOutcome.NO_ANSWER, 480)),
        "E": DialFailed(TransferOutcome.FAILED),
    }

    class BrokenLeg(FakeLeg):
        async def screen(self, text: str) -> None:
            raise RuntimeError("TTS down")

    legs["F"] = BrokenLeg(Decision.ACCEPT)
    script = Script(**legs)
    result = await run_warm_transfer(options(*legs), "", dial=script.dial, stage=script.stage)
    assert result.bridged_to is None and result.fallback == "take_message"
    assert [a.outcome for a in result.attempts] == [
        TransferOutcome.DECLINED,
        TransferOutcome.NO_REPLY,
        TransferOutcome.HUNG_UP,
        TransferOutcome.NO_ANSWER,
        TransferOutcome.FAILED,
        TransferOutcome.FAILED,
    ]
    assert [i for _, i in script.dialled] == [0, 1, 2, 3, 4, 5]
    assert all(leg.closed for leg in legs.values() if isinstance(leg, FakeLeg))
    assert script.names()[-1] == ("fallback", None)
    told = fallback_instruction(result)
    assert "take a message" in told and "A (declined)" in told and "B (no reply)" in told


async def test_no_fallback_still_reports_who_was_tried() -> None:
    script = Script(A=DialFailed(TransferOutcome.NO_ANSWER, 487))
    result = await run_warm_transfer(
        options("A", fallback="none"), "", dial=script.dial, stage=script.stage
    )
    assert result.fallback is None
    assert "message" not in fallback_instruction(result)


def test_sip_codes_and_screening_text() -> None:
    assert [outcome_for_sip(c) for c in (486, 600, 603, 408, 480, 487, 500, None)] == [
        TransferOutcome.BUSY,
        TransferOutcome.BUSY,
        TransferOutcome.DECLINED,
        TransferOutcome.NO_ANSWER,
        TransferOutcome.NO_ANSWER,
        TransferOutcome.NO_ANSWER,
        TransferOutcome.FAILED,
        TransferOutcome.FAILED,
    ]
    text = screening_text(options("A"), "Billing question", rings_again=True)
    assert text == (
        "A caller is waiting. Billing question. Press 1 to take the call, or 2 to decline. "
        "If you take it, your phone rings again with the caller."
    )
    assert "rings again" not in screening_text(options("A"), "", rings_again=False)


# -- the LiveKit side, against a fake API --------------------------------------------------


class FakeRoom:
    name = "call-1-consult-1"

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}
        self.disconnected = False

    def on(self, event: str, handler: Any) -> None:
        self.handlers[event] = handler

    def off(self, event: str, handler: Any) -> None:
        self.handlers.pop(event, None)

    async def disconnect(self) -> None:
        self.disconnected = True


class FakeLiveKit:
    def __init__(self, dial_errors: list[Exception | None], move_error: Exception | None) -> None:
        self.requests: list[Any] = []
        self.calls: list[str] = []
        self.dial_errors = dial_errors
        self.move_error = move_error
        self.sip = self
        self.room = self

    async def create_sip_participant(self, req: Any) -> None:
        self.requests.append(req)
        error = self.dial_errors.pop(0)
        if error is not None:
            raise error

    async def move_participant(self, req: Any) -> None:
        self.calls.append(f"move {req.room}->{req.destination_room}")
        if self.move_error is not None:
            raise self.move_error

    async def remove_participant(self, req: Any) -> None:
        self.calls.append(f"remove {req.identity}")

    async def delete_room(self, req: Any) -> None:
        self.calls.append(f"delete {req.room}")


def busy_error() -> api.ServerError:
    return api.ServerError(
        "unavailable",
        "twirp error",
        status=503,
        metadata={"sip_status_code": "486", "sip_status": "Busy Here"},
    )


def not_implemented() -> api.ServerError:
    return api.ServerError("unknown", "not implemented", status=500)


def dialer(lk: FakeLiveKit, rooms: list[FakeRoom]) -> LiveKitDialer:
    async def join(room_name: str, identity: str) -> Any:
        room = FakeRoom()
        room.name = room_name
        rooms.append(room)
        return room

    warm = WarmTransferOptions(
        destinations=(WarmDestination("desk", "Desk", "ST_1"),),
        from_number="+15550100000",
        ringing_timeout=12,
    )
    return LiveKitDialer(lk, caller_room="call-1", options=warm, tts=None, join=join)  # type: ignore[arg-type]


async def test_a_busy_consultation_leg_fails_with_its_sip_status_and_cleans_up() -> None:
    lk, rooms = FakeLiveKit([busy_error()], None), []
    dial = dialer(lk, rooms)
    with pytest.raises(DialFailed) as err:
        await dial(dial.options.destinations[0], 0)
    assert (err.value.outcome, err.value.sip_status_code) == (TransferOutcome.BUSY, 486)
    (req,) = lk.requests
    assert (req.sip_trunk_id, req.sip_call_to, req.room_name) == (
        "ST_1",
        "desk",
        "call-1-consult-1",
    )
    assert req.wait_until_answered and req.sip_number == "+15550100000"
    assert req.ringing_timeout.seconds == 12
    assert rooms[0].disconnected and lk.calls == ["delete call-1-consult-1"]


async def test_ringing_timeout_and_a_dead_room_are_failed_legs() -> None:
    timeout = api.ServerError("deadline_exceeded", "context deadline exceeded", status=504)
    lk, rooms = FakeLiveKit([timeout], None), []
    dial = dialer(lk, rooms)
    with pytest.raises(DialFailed) as err:
        await dial(dial.options.destinations[0], 0)
    assert err.value.outcome is TransferOutcome.NO_ANSWER

    async def unreachable(room_name: str, identity: str) -> Any:
        raise ConnectionError("LiveKit down")

    dial.join = unreachable
    with pytest.raises(DialFailed) as err:
        await dial(dial.options.destinations[0], 0)
    assert err.value.outcome is TransferOutcome.FAILED and len(lk.requests) == 1


async def test_bridge_moves_the_leg_or_dials_the_destination_into_the_caller_room() -> None:
    lk, rooms = FakeLiveKit([None], None), []
    dial = dialer(lk, rooms)
    leg = await dial(dial.options.destinations[0], 0)
    await leg.bridge()
    assert lk.calls == ["move call-1-consult-1->call-1"] and len(lk.requests) == 1

    lk, rooms = FakeLiveKit([None, None], not_implemented()), []
    dial = dialer(lk, rooms)
    leg = await dial(dial.options.destinations[0], 0)
    await leg.bridge()
    await leg.close()
    assert lk.calls == [
        "move call-1-consult-1->call-1",
        "remove consult-1",
        "delete call-1-consult-1",
    ]
    assert [r.room_name for r in lk.requests] == ["call-1-consult-1", "call-1"]
    assert lk.requests[1].participant_identity == "transfer-target"


async def test_the_destination_decides_by_key_or_by_hanging_up() -> None:
    lk, rooms = FakeLiveKit([None, None, None], None), []
    dial = dialer(lk, rooms)
    dest = dial.options.destinations[0]
    keys = {"1": Decision.ACCEPT, "2": Decision.DECLINE}
    for digit, expected in keys.items():
        leg = await dial(dest, 0)
        me = SimpleNamespace(identity="consult-1")
        rooms[-1].handlers["sip_dtmf_received"](SimpleNamespace(digit="5", participant=me))
        rooms[-1].handlers["sip_dtmf_received"](SimpleNamespace(digit=digit, participant=me))
        assert await leg.decision(0.1) is expected
    leg = await dial(dest, 0)
    assert await leg.decision(0.01) is Decision.NO_REPLY
    rooms[-1].handlers["participant_disconnected"](SimpleNamespace(identity="consult-1"))
    assert await leg.decision(0.1) is Decision.HUNG_UP


async def test_move_support_is_probed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import worker.call.telephony.warm_session as warm_session

    monkeypatch.setattr(warm_session, "_move_supported", None)
    lk = FakeLiveKit([], not_implemented())
    assert await move_supported(lk) is False  # type: ignore[arg-type]
    lk.move_error = None
    assert await move_supported(lk) is False  # type: ignore[arg-type]
    assert len(lk.calls) == 1


# -- the built-in tool ---------------------------------------------------------------------

WARM = parse_tools(
    [
        {
            "type": "warm_transfer",
            "options": {"trunkId": "ST_1", "destinations": [{"to": "+12015551234"}]},
        }
    ],
    tool_url=None,
)


async def invoke(tool: RawFunctionTool[Any, Any], arguments: dict[str, Any]) -> Any:
    args, kwargs = prepare_function_arguments(fnc=tool, json_arguments=json.dumps(arguments))
    return await tool(*args, **kwargs)


async def test_warm_transfer_tool_bridges_falls_back_or_fails() -> None:
    replies: list[str | Exception | None] = [None, "Nobody could take the call.", RuntimeError()]
    seen: list[tuple[str, str]] = []

    async def warm(opts: WarmTransferOptions, summary: str) -> str | None:
        seen.append((opts.destinations[0].to, summary))
        reply = replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    recorder = CallRecorder(call_id="c")
    async with httpx.AsyncClient() as http:
        (none,) = [
            build_function_tools(
                WARM,
                call_context=ToolCallContext(call_id="c", agent_id="a"),
                http=http,
                secret=None,
            )
        ]
        assert none == []  # no way to transfer on this call: not offered
        ctx = ToolCallContext(
            call_id="c", agent_id="a", warm_transfer=warm, record_event=recorder.add_event
        )
        (tool,) = build_function_tools(WARM, call_context=ctx, http=http, secret=None)
    with pytest.raises(StopResponse):
        await invoke(tool, {"summary": "Billing"})
    assert await invoke(tool, {}) == "Nobody could take the call."
    with pytest.raises(ToolError, match="did not go through"):
        await invoke(tool, {})
    assert seen == [("+12015551234", "Billing"), ("+12015551234", ""), ("+12015551234", "")]
    assert [e.data["ok"] for e in recorder.finish("x").events] == [True, True, False]


# -- the job's watch over a bridged call -----------------------------------------------------


class BridgedRoom:
    name = "call-1"

    def __init__(self) -> None:
        from livekit import rtc

        sip = rtc.ParticipantKind.PARTICIPANT_KIND_SIP
        self.remote_participants: dict[str, Any] = {
            i: SimpleNamespace(identity=i, kind=sip) for i in ("callee", "transfer-target")
        }
        self.connected = True

    def isconnected(self) -> bool:
        return self.connected


async def test_the_bridge_ends_when_one_side_hangs_up_unless_the_job_goes_first() -> None:
    import asyncio

    from worker.call.telephony import WarmTransferTool

    for job_goes_first in (False, True):
        room, lk = BridgedRoom(), FakeLiveKit([], None)
        life = SimpleNamespace(recorder=CallRecorder(call_id="c"))
        tool = WarmTransferTool(
            life,  # type: ignore[arg-type]
            lkapi=lk,  # type: ignore[arg-type]
            room=room,  # type: ignore[arg-type]
            sender=None,  # type: ignore[arg-type]
            join=None,  # type: ignore[arg-type]
        )
        await tool.until_bridge_ends()  # nobody bridged: returns at once
        tool.bridged_to = "Overflow"
        watch = asyncio.create_task(tool.until_bridge_ends(every=0.01))
        await asyncio.sleep(0.05)
        assert not watch.done()
        if job_goes_first:
            room.connected = False
        else:
            del room.remote_participants["callee"]
        await asyncio.wait_for(watch, 1.0)
        (event,) = [e.data for e in life.recorder.finish("transferred").events]
        assert event["destination"] == "Overflow"
        assert lk.calls == ([] if job_goes_first else ["delete call-1"])
