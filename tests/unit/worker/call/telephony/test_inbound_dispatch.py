"""The SIP participant's attributes fill the numbers an inbound dispatch leaves unset, and
the plan's placeholders see them."""

from __future__ import annotations

from worker.call.telephony import fill_from_sip, sip_call_info
from worker.config import parse_agent, parse_dispatch
from worker.plan.resolve import call_context

ATTRIBUTES = {
    "sip.phoneNumber": "+14155550142",
    "sip.trunkPhoneNumber": "+15550100001",
    "sip.callID": "SCL_abc123",
    "sip.callStatus": "active",
}


def test_numbers_come_from_the_participant_where_the_dispatch_has_none() -> None:
    dispatch = fill_from_sip(parse_dispatch({"direction": "inbound"}), ATTRIBUTES)
    assert dispatch.caller_number == "+14155550142"
    assert dispatch.dialed_number == "+15550100001"
    agent = parse_agent({"name": "Line", "firstMessage": "Hi {{callerNumber}}"}, source="test")
    values = call_context(agent, dispatch)
    assert (values["callerNumber"], values["dialedNumber"]) == ("+14155550142", "+15550100001")


def test_the_dispatch_wins_and_empty_values_count_as_unset() -> None:
    dispatch = parse_dispatch({"direction": "inbound", "from": "+12015551234", "to": ""})
    filled = fill_from_sip(dispatch, ATTRIBUTES)
    assert filled.caller_number == "+12015551234"
    assert filled.dialed_number == "+15550100001"
    unchanged = fill_from_sip(dispatch, {"sip.phoneNumber": ""})
    assert unchanged is dispatch


def test_the_report_keeps_the_call_id_and_numbers_only() -> None:
    assert sip_call_info(ATTRIBUTES) == {
        "sip_call_id": "SCL_abc123",
        "caller_number": "+14155550142",
        "dialed_number": "+15550100001",
    }
    assert sip_call_info({"sip.callID": "SCL_x"}) == {"sip_call_id": "SCL_x"}
