"""SIPCall on a room that emits what a LiveKit room emits for a SIP participant (attribute
changes, the disconnect), without sockets: which statuses go out and in what order, when the
job is ended, and that the session's close removes the participant (the phone's BYE)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from livekit import api, rtc

from worker.call.telephony import SIPCall
from worker.call.telephony import leg as leg_module

R = rtc.DisconnectReason


@dataclass
class Participant:
    identity: str = "callee"
    kind: int = rtc.ParticipantKind.PARTICIPANT_KIND_SIP
    attributes: dict[str, str] = field(default_factory=dict)
    disconnect_reason: int | None = None
    joined_at: datetime | None = field(default_factory=lambda: datetime.now(UTC))


class Room(rtc.EventEmitter[str]):
    name = "call-room"

    def __init__(self) -> None:
        super().__init__()
        self.remote_participants: dict[str, Participant] = {}

    def join(self, p: Participant) -> None:
        self.remote_participants[p.identity] = p
        self.emit("participant_connected", p)

    def set_status(self, p: Participant, status: str) -> None:
        p.attributes["sip.callStatus"] = status
        self.emit("participant_attributes_changed", {"sip.callStatus": status}, p)

    def leave(self, p: Participant, reason: int) -> None:
        p.disconnect_reason = reason
        self.remote_participants.pop(p.identity, None)
        self.emit("participant_disconnected", p)


class Session(rtc.EventEmitter[str]):
    def __init__(self) -> None:
        super().__init__()
        self.shutdowns: list[bool] = []

    def shutdown(self, *, drain: bool = True) -> None:
        self.shutdowns.append(drain)


class Recorder:
    def __init__(self) -> None:
        self.phone: dict[str, Any] | None = None

    def set_phone(self, info: dict[str, Any]) -> None:
        self.phone = info


class Life:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        self.final_status: dict[str, Any] | None = None
        self.end_reason: str | None = None
        self.recorder = Recorder()

    async def send_status(self, _sender: object, event_type: str, status: str, **f: Any) -> bool:
        self.sent.append((event_type, status, f))
        return True


class RoomService:
    def __init__(self, room: Room, *, leaves: bool = True) -> None:
        self.room = room
        self.leaves = leaves
        self.removed: list[tuple[str, str]] = []

    async def remove_participant(self, req: api.RoomParticipantIdentity) -> None:
        self.removed.append((req.room, req.identity))
        if self.leaves:
            # what LiveKit reports for a participant the API removed
            self.room.leave(self.room.remote_participants[req.identity], R.UNKNOWN_REASON)


class LKAPI:
    def __init__(self, room: Room, **kw: Any) -> None:
        self.room = RoomService(room, **kw)


def make(direction: str = "outbound", **kw: Any) -> tuple[SIPCall, Room, Session, Life, LKAPI]:
    room, session, life = Room(), Session(), Life()
    lkapi = LKAPI(room, **kw)
    call = SIPCall(
        room,  # type: ignore[arg-type]
        life,  # type: ignore[arg-type]
        object(),  # type: ignore[arg-type]
        lkapi=lkapi,  # type: ignore[arg-type]
        ringing_timeout=20,
        direction=direction,
        numbers=("+15550001111", "+15550002222"),
    )
    call.start(session)  # type: ignore[arg-type]
    return call, room, session, life, lkapi


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_progress_statuses_go_out_in_order_and_the_callee_hangup_ends_ok() -> None:
    call, room, session, life, lkapi = make()
    callee = Participant(
        attributes={
            "sip.callStatus": "dialing",
            "sip.callID": "SCL_abc",
            "sip.phoneNumber": "+15550009999",
            "sip.trunkPhoneNumber": "+15550002222",
        }
    )
    room.join(callee)
    room.set_status(callee, "ringing")
    assert not call.answered.is_set()
    room.set_status(callee, "active")
    assert call.answered.is_set()
    await settle()
    assert [(e, s) for e, s, _ in life.sent] == [
        ("call.ringing", "ringing"),
        ("call.answered", "in_progress"),
    ]
    assert life.sent[1][2]["sip_status_code"] == 200
    room.set_status(callee, "hangup")
    room.leave(callee, R.CLIENT_INITIATED)
    assert life.final_status is not None
    assert (life.final_status["status"], life.final_status["sip_status_code"]) == ("ended", 200)
    assert session.shutdowns == []  # an answered call ends through the session, as any call
    session.emit("close", object())
    await call.aclose(amd={"category": "human", "action": "continue"})
    assert lkapi.room.removed == []  # already gone: nothing to hang up
    phone = life.recorder.phone
    assert phone is not None
    assert (phone["to_number"], phone["from_number"]) == ("+15550009999", "+15550002222")
    assert (phone["sip_call_id"], phone["outcome"]) == ("SCL_abc", "completed")
    assert phone["answered_at"] is not None and phone["amd"]["category"] == "human"


async def test_a_call_that_never_connects_ends_the_job_at_once() -> None:
    call, room, session, life, _ = make()
    callee = Participant(attributes={"sip.callStatus": "dialing"})
    room.join(callee)
    room.set_status(callee, "ringing")
    room.leave(callee, R.USER_UNAVAILABLE)
    assert session.shutdowns == [False]
    assert life.end_reason == "no answer"
    assert life.final_status is not None and life.final_status["sip_status_code"] == 480
    await call.aclose()
    assert [e for e, _, _ in life.sent] == ["call.ringing"]  # the end goes with the report
    assert life.recorder.phone is not None and life.recorder.phone["outcome"] == "no_answer"


async def test_the_sessions_close_removes_the_sip_participant() -> None:
    call, room, session, life, lkapi = make()
    callee = Participant(attributes={"sip.callStatus": "active"})
    room.join(callee)
    session.emit("close", object())
    await settle()
    assert lkapi.room.removed == [("call-room", "callee")]
    await call.aclose()
    assert lkapi.room.removed == [("call-room", "callee")]  # once
    assert life.final_status is not None and life.final_status["status"] == "ended"


async def test_hangup_before_the_answer_is_canceled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leg_module, "GONE_TIMEOUT", 0.05)
    call, room, _session, life, lkapi = make(leaves=False)
    callee = Participant(attributes={"sip.callStatus": "ringing"})
    room.join(callee)
    await call.aclose()  # e.g. the worker drains while the phone rings
    assert lkapi.room.removed == [("call-room", "callee")]
    assert life.final_status is not None
    assert (life.final_status["status"], life.final_status["sip_status_code"]) == ("canceled", 487)


async def test_an_outbound_callee_that_never_joins_fails_the_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(leg_module, "CALLEE_JOIN_TIMEOUT", 0.05)
    call, _room, session, life, _ = make()
    await asyncio.sleep(0.15)
    assert session.shutdowns == [False]
    assert life.end_reason == "failed"
    assert life.final_status is not None and life.final_status["status"] == "failed"
    await call.aclose()
    assert life.recorder.phone is None


async def test_other_participants_are_not_followed_and_web_calls_have_no_watchdog(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(leg_module, "CALLEE_JOIN_TIMEOUT", 0.05)
    call, room, session, life, _ = make(direction="web")
    room.join(Participant(identity="browser", kind=rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD))
    await asyncio.sleep(0.15)
    assert call.participant is None and session.shutdowns == [] and life.final_status is None
    await call.aclose()
    assert life.recorder.phone is None


async def test_an_outbound_greeting_waits_for_the_answer_not_the_ringing() -> None:
    call, room, _session, _life, _lkapi = make()
    waiting = asyncio.create_task(call.until_answered())
    p = Participant(attributes={"sip.callStatus": "dialing"})
    room.join(p)
    room.set_status(p, "ringing")
    await settle()
    assert not waiting.done()  # still ringing: nobody to greet
    room.set_status(p, "active")
    assert await asyncio.wait_for(waiting, 1.0) is True
    await call.aclose()
    # a callee that hangs up while it rings gets no greeting
    call, room, _session, _life, _lkapi = make()
    waiting = asyncio.create_task(call.until_answered())
    p = Participant(attributes={"sip.callStatus": "ringing"})
    room.join(p)
    await settle()
    room.leave(p, R.USER_REJECTED)
    assert await asyncio.wait_for(waiting, 1.0) is False
    await call.aclose()
    # a room participant is not a phone: greeted at once
    call, room, _session, _life, _lkapi = make()
    waiting = asyncio.create_task(call.until_answered())
    room.join(Participant(identity="web", kind=rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD))
    assert await asyncio.wait_for(waiting, 1.0) is True
    await call.aclose()


async def test_a_hangup_decision_sends_the_bye_at_once_not_at_the_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(leg_module, "BYE_TAIL", 0.05)
    call, room, session, _life, lkapi = make()
    p = Participant(attributes={"sip.callStatus": "active"})
    room.join(p)
    call.hang_up_soon(False)
    await settle()
    assert lkapi.room.removed == [("call-room", "callee")]
    session.emit("close", object())  # the session's close later: no second removal
    await call.aclose()
    assert lkapi.room.removed == [("call-room", "callee")]
    # after the agent spoke, the BYE waits the tail (the last words still on their way)
    call, room, session, _life, lkapi = make()
    room.join(Participant(attributes={"sip.callStatus": "active"}))
    call.hang_up_soon(True)
    await settle()
    assert lkapi.room.removed == []
    await asyncio.sleep(0.1)
    assert lkapi.room.removed == [("call-room", "callee")]
    await call.aclose()
