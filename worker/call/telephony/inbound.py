"""Inbound phone calls: an inbound trunk and dispatch rule put the caller's SIP participant in
a fresh room and dispatch the agent with the phone number's metadata (``direction:
inbound``). The rule's metadata is the same for every call, so the numbers come from the
participant's attributes where the dispatch leaves them unset: ``sip.phoneNumber`` is the
caller, ``sip.trunkPhoneNumber`` the number dialled.

livekit-sip keeps the caller ringing until the agent subscribes to its audio, then answers
and sets ``sip.callStatus`` to ``active``: the first message waits for that, not longer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from livekit import rtc
from livekit.agents import JobContext
from livekit.agents.utils.participant import wait_for_participant_attribute

from worker.config import Dispatch

logger = logging.getLogger(__name__)

SIP_PHONE_NUMBER = "sip.phoneNumber"
"""The number on the far side of livekit-sip: the caller on inbound calls."""
SIP_TRUNK_NUMBER = "sip.trunkPhoneNumber"
"""The trunk's number: the one the caller dialled on inbound calls."""
SIP_CALL_ID = "sip.callID"
SIP_CALL_STATUS = "sip.callStatus"
CALLER_JOIN_TIMEOUT = 10.0
"""Seconds the job waits for the caller's SIP participant (it joins before the dispatch)."""
ANSWER_TIMEOUT = 30.0
"""Seconds the greeting waits for ``active``: livekit-sip's default ringing timeout."""


def fill_from_sip(dispatch: Dispatch, attributes: Mapping[str, str]) -> Dispatch:
    """``dispatch`` with ``caller_number``/``dialed_number`` taken from the SIP participant's
    attributes where the dispatch has none (``{{callerNumber}}``, ``{{dialedNumber}}``, the
    pre-call webhook's ``from``/``to``)."""
    update: dict[str, str] = {}
    for field, attribute in (
        ("caller_number", SIP_PHONE_NUMBER),
        ("dialed_number", SIP_TRUNK_NUMBER),
    ):
        value = attributes.get(attribute)
        if value and not getattr(dispatch, field):
            update[field] = value
    return dispatch.model_copy(update=update) if update else dispatch


def sip_call_info(attributes: Mapping[str, str]) -> dict[str, str]:
    """What the report keeps about the SIP leg: its call id and both numbers."""
    keys = {
        "sip_call_id": SIP_CALL_ID,
        "caller_number": SIP_PHONE_NUMBER,
        "dialed_number": SIP_TRUNK_NUMBER,
    }
    return {name: attributes[key] for name, key in keys.items() if attributes.get(key)}


async def inbound_caller(
    ctx: JobContext, timeout: float = CALLER_JOIN_TIMEOUT
) -> rtc.RemoteParticipant | None:
    """The room's SIP participant (the caller), or None if none joined within ``timeout``
    (an inbound call that is not a phone call). Connects to the room first."""
    try:
        return await asyncio.wait_for(
            ctx.wait_for_participant(kind=rtc.ParticipantKind.PARTICIPANT_KIND_SIP), timeout
        )
    except TimeoutError:
        logger.warning("inbound call without a SIP participant after %.0f s", timeout)
        return None


async def until_answered(
    room: rtc.Room, caller: rtc.RemoteParticipant, timeout: float = ANSWER_TIMEOUT
) -> bool:
    """Waits until livekit-sip has answered the caller (``sip.callStatus`` ``active``);
    False if the caller hung up first or ``timeout`` passed."""
    try:
        await asyncio.wait_for(
            wait_for_participant_attribute(
                room, identity=caller.identity, attribute=SIP_CALL_STATUS, value="active"
            ),
            timeout,
        )
    except (TimeoutError, RuntimeError) as exc:
        logger.info("inbound call not answered: %s", exc or "timeout")
        return False
    return True
