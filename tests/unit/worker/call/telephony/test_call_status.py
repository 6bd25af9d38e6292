"""The call status machine fed what livekit-sip v1.0.0 tells the room: ``sip.callStatus``
values and the SIP participant's disconnect reason."""

from __future__ import annotations

import pytest
from livekit import rtc

from worker.call.telephony import CallPhase, CallStatusMachine, Outcome, StatusChange

R = rtc.DisconnectReason


def answered_call(ringing_timeout: float = 20.0) -> CallStatusMachine:
    machine = CallStatusMachine(dialed_at=100.0, ringing_timeout=ringing_timeout)
    machine.observe("dialing", at=100.0)
    machine.observe("ringing", at=100.4)
    machine.observe("active", at=103.0)
    return machine


def test_ringing_then_answer_send_one_status_each() -> None:
    machine = CallStatusMachine(dialed_at=100.0, ringing_timeout=20)
    assert machine.observe("dialing", at=100.0) == []
    ringing = machine.observe("ringing", at=100.5)
    assert [(c.event_type, c.status) for c in ringing] == [("call.ringing", "ringing")]
    answered = machine.observe("active", at=104.0)
    assert [(c.event_type, c.status, c.sip_status_code) for c in answered] == [
        ("call.answered", "in_progress", 200)
    ]
    assert machine.phase is CallPhase.ACTIVE
    assert (machine.ringing_at, machine.answered_at) == (100.5, 104.0)


def test_repeats_unknown_values_and_steps_back_change_nothing() -> None:
    machine = answered_call()
    assert machine.observe("active", at=105.0) == []
    assert machine.observe("ringing", at=106.0) == []
    assert machine.observe("on-hold", at=106.0) == []
    assert machine.observe(None, at=106.0) == []
    assert machine.answered_at == 103.0


def test_automation_is_answered_and_active_after_it_adds_nothing() -> None:
    machine = CallStatusMachine(dialed_at=0.0)
    machine.observe("ringing", at=1.0)
    changes = machine.observe("automation", at=2.0)
    assert [c.event_type for c in changes] == ["call.answered"]
    assert machine.observe("active", at=3.0) == []
    assert machine.phase is CallPhase.ACTIVE


def test_an_answer_without_ringing_first_is_answered_only() -> None:
    machine = CallStatusMachine(dialed_at=0.0)
    changes = machine.observe("active", at=0.3)
    assert [c.event_type for c in changes] == ["call.answered"]
    assert machine.ringing_at is None


def test_callee_hangup_after_answer_ends_ok() -> None:
    machine = answered_call()
    assert machine.observe("hangup", at=130.0) == []
    final = machine.disconnected(R.CLIENT_INITIATED, at=130.1)
    assert (final.event_type, final.status, final.sip_status_code, final.sip_status) == (
        "call.hangup",
        "ended",
        200,
        "OK",
    )
    assert final.failure_cause is None
    assert machine.outcome is Outcome.COMPLETED
    assert machine.end_reason is None  # who hung up is the lifecycle's to say
    assert machine.ended


def test_worker_hangup_after_answer_ends_ok() -> None:
    machine = answered_call()
    final = machine.disconnected(R.UNKNOWN_REASON, at=140.0, by_worker=True)
    assert (final.status, final.sip_status_code, final.failure_cause) == ("ended", 200, None)


def test_a_dropped_answered_call_says_so() -> None:
    machine = answered_call()
    final = machine.disconnected(R.UNKNOWN_REASON, at=150.0)
    assert final.status == "ended"
    assert final.failure_cause == "call dropped (UNKNOWN_REASON)"


@pytest.mark.parametrize(
    ("reason", "status", "code", "text"),
    [
        (R.USER_REJECTED, "busy", 486, "Busy Here"),
        (R.USER_UNAVAILABLE, "no_answer", 480, "Temporarily Unavailable"),
    ],
)
def test_codes_the_room_reports(reason: int, status: str, code: int, text: str) -> None:
    machine = CallStatusMachine(dialed_at=10.0, ringing_timeout=20)
    machine.observe("ringing", at=10.2)
    final = machine.disconnected(reason, at=10.9)
    assert (final.event_type, final.status, final.sip_status_code, final.sip_status) == (
        "call.hangup",
        status,
        code,
        text,
    )
    assert machine.end_reason == status.replace("_", " ")
    assert final.metadata["ring_seconds"] == pytest.approx(0.9)


def test_unexplained_end_at_the_ringing_timeout_is_no_answer() -> None:
    machine = CallStatusMachine(dialed_at=0.0, ringing_timeout=8)
    machine.observe("ringing", at=0.3)
    final = machine.disconnected(R.UNKNOWN_REASON, at=7.9)
    assert (final.status, final.sip_status_code) == ("no_answer", 487)
    assert final.failure_cause is not None and "ringing timeout (8 s)" in final.failure_cause
    assert machine.end_reason == "no answer"


def test_unexplained_end_while_ringing_before_the_timeout_is_a_decline_said_inferred() -> None:
    machine = CallStatusMachine(dialed_at=0.0, ringing_timeout=20)
    machine.observe("ringing", at=0.3)
    final = machine.disconnected(R.UNKNOWN_REASON, at=4.0)
    assert (final.status, final.sip_status_code, final.sip_status) == ("declined", 603, "Decline")
    assert final.failure_cause is not None and "inferred" in final.failure_cause
    assert machine.outcome is Outcome.DECLINED


def test_unexplained_end_before_ringing_is_a_failure_without_a_code() -> None:
    machine = CallStatusMachine(dialed_at=0.0, ringing_timeout=20)
    final = machine.disconnected(R.UNKNOWN_REASON, at=0.5)
    assert (final.status, final.sip_status_code, final.sip_status) == ("failed", None, None)
    assert final.failure_cause is not None and "before ringing" in final.failure_cause
    assert machine.end_reason == "failed"


def test_the_default_ringing_timeout_is_livekit_sips() -> None:
    machine = CallStatusMachine(dialed_at=0.0)
    machine.observe("ringing", at=1.0)
    assert machine.disconnected(R.UNKNOWN_REASON, at=60.0).status == "declined"
    machine = CallStatusMachine(dialed_at=0.0)
    machine.observe("ringing", at=1.0)
    assert machine.disconnected(R.UNKNOWN_REASON, at=180.0).status == "no_answer"


def test_worker_giving_up_before_the_answer_is_canceled() -> None:
    machine = CallStatusMachine(dialed_at=0.0, ringing_timeout=20)
    machine.observe("ringing", at=0.2)
    final = machine.disconnected(R.UNKNOWN_REASON, at=3.0, by_worker=True)
    assert (final.status, final.sip_status_code) == ("canceled", 487)


def test_the_end_is_final() -> None:
    machine = CallStatusMachine(dialed_at=0.0)
    first = machine.disconnected(R.USER_REJECTED, at=1.0)
    assert machine.disconnected(R.CLIENT_INITIATED, at=2.0) is first
    assert machine.observe("active", at=2.0) == []
    assert not machine.answered


def test_inbound_calls_do_not_report_ringing() -> None:
    machine = CallStatusMachine(dialed_at=0.0, inbound=True)
    assert machine.observe("ringing", at=0.1) == []
    assert [c.event_type for c in machine.observe("active", at=0.2)] == ["call.answered"]


def test_fields_are_send_status_keywords() -> None:
    change = StatusChange("call.hangup", "busy", 486, "Busy Here", "busy", {"ring_seconds": 1.0})
    assert change.fields() == {
        "sip_status_code": 486,
        "sip_status": "Busy Here",
        "failure_cause": "busy",
        "metadata": {"ring_seconds": 1.0},
    }
