"""The platform's side of a phone call, on the local phone leg: what the control plane does
when it places an outbound call (reference ``002_*``): a room, the agent dispatched into it
with the call's metadata, and a SIP participant dialling the callee through an outbound trunk
(``CreateSIPParticipant``, a ringing timeout, not waiting for the answer).

``PhoneLeg`` starts the real parts once (Redis, a LiveKit server using it, livekit-sip);
``place_outbound_call`` dials a phone (``worker.dev.services.phone.SIPPhone``) into a room
the worker was dispatched to; ``route_inbound`` is a phone number's routing (an inbound trunk
and a dispatch rule sending its calls to the agent), so a phone can dial in. Tests,
``replay --phone`` and the ``--sip`` benchmarks use them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from livekit import api

from worker.dev.services import LiveKitEndpoint, LiveKitServer, RedisServer
from worker.dev.services.sip import LiveKitSIP

CALLER_ID = "+15550100000"
"""The number outbound calls come from (the outbound trunk's number)."""
AGENT_JOIN_TIMEOUT = 30.0
"""Longest wait for the dispatched agent to join before dialling."""
CALLEE_IDENTITY = "callee"
"""The SIP participant's identity in the room on outbound calls."""


class PhoneLeg:
    """Redis, a LiveKit server with ``redis:`` and livekit-sip on loopback, started in order
    and stopped in reverse. ``endpoint`` is where workers register."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self.redis: RedisServer | None = None
        self.livekit: LiveKitServer | None = None
        self.sip: LiveKitSIP | None = None

    @property
    def endpoint(self) -> LiveKitEndpoint:
        assert self.livekit is not None, "PhoneLeg not started"
        return self.livekit.endpoint

    def __enter__(self) -> PhoneLeg:
        try:
            self.redis = self._stack.enter_context(RedisServer())
            self.livekit = self._stack.enter_context(
                LiveKitServer(redis_address=self.redis.address)
            )
            self.sip = self._stack.enter_context(
                LiveKitSIP(self.livekit.endpoint, redis_address=self.redis.address)
            )
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()


@dataclass(frozen=True)
class PlacedCall:
    room_name: str
    participant_identity: str
    trunk_id: str
    dispatch_id: str


async def _agent_joined(lkapi: api.LiveKitAPI, room_name: str, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    request = api.ListParticipantsRequest(room=room_name)
    while True:
        listed = await lkapi.room.list_participants(request)
        if any(p.kind == api.ParticipantInfo.Kind.AGENT for p in listed.participants):
            return
        if loop.time() > deadline:
            raise TimeoutError(f"no agent joined {room_name} within {timeout:.0f} s")
        await asyncio.sleep(0.1)


def _with_ringing_timeout(metadata: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    """The dispatch says how long the phone may ring, as the platform's does (the worker tells
    a missed call from a declined one by it), unless the caller set it."""
    telephony = dict(metadata.get("telephony") or {})
    telephony.setdefault("ringingTimeout", int(seconds))
    return {**metadata, "telephony": telephony}


async def place_outbound_call(
    livekit: LiveKitEndpoint,
    *,
    agent_name: str,
    phone_address: str,
    to_user: str,
    metadata: Mapping[str, Any],
    room_name: str | None = None,
    from_number: str = CALLER_ID,
    ringing_timeout: float = 20.0,
    agent_join_timeout: float | None = AGENT_JOIN_TIMEOUT,
) -> PlacedCall:
    """Creates the room, dispatches ``agent_name`` with ``metadata`` (``direction:
    outbound``, ``to``/``from`` and the call's ``telephony`` are the caller's to set) and
    dials ``to_user`` at ``phone_address`` (``host:port``) without waiting for the answer,
    once the agent is in the room (``agent_join_timeout``; ``None`` dials at once): a phone
    on loopback answers, or refuses, within milliseconds, and the agent must hear all of it."""
    room_name = room_name or f"call-{secrets.token_hex(4)}"
    lkapi = livekit.client()
    try:
        trunk = await lkapi.sip.create_outbound_trunk(
            api.CreateSIPOutboundTrunkRequest(
                trunk=api.SIPOutboundTrunkInfo(
                    name=f"out-{room_name}", address=phone_address, numbers=[from_number]
                )
            )
        )
        await lkapi.room.create_room(api.CreateRoomRequest(name=room_name))
        dispatch = await lkapi.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(
                agent_name=agent_name,
                room=room_name,
                metadata=json.dumps(_with_ringing_timeout(metadata, ringing_timeout)),
            )
        )
        if agent_join_timeout:
            await _agent_joined(lkapi, room_name, agent_join_timeout)
        request = api.CreateSIPParticipantRequest(
            sip_trunk_id=trunk.sip_trunk_id,
            sip_call_to=to_user,
            sip_number=from_number,
            room_name=room_name,
            participant_identity=CALLEE_IDENTITY,
            wait_until_answered=False,
            # Ringing tone into the room until the answer: the callee's track carries packets
            # before the answer, so its path through LiveKit is up when the callee speaks
            # (with a silent track the first 0.75 s after the answer were lost: a "Hello.").
            play_dialtone=True,
        )
        request.ringing_timeout.FromSeconds(int(ringing_timeout))
        await lkapi.sip.create_sip_participant(request)
        return PlacedCall(room_name, CALLEE_IDENTITY, trunk.sip_trunk_id, dispatch.id)
    finally:
        await lkapi.aclose()


INBOUND_ROOM_PREFIX = "inbound-"
"""Rooms of inbound calls: one per call, ``inbound-<random>``."""


@dataclass(frozen=True)
class InboundRoute:
    number: str
    """The number callers dial (the inbound trunk's)."""
    uri: str
    """What a phone dials to reach it: ``sip:<number>@<livekit-sip>``."""
    trunk_id: str
    rule_id: str


async def route_inbound(
    livekit: LiveKitEndpoint,
    *,
    agent_name: str,
    sip_address: str,
    metadata: Mapping[str, Any],
    number: str | None = None,
) -> InboundRoute:
    """What the platform does for a phone number routed to an agent (reference ``002_*``):
    an inbound trunk for ``number`` (fresh if None: trunks of one number would conflict)
    and a dispatch rule putting each call in its own room with ``agent_name`` dispatched
    with ``metadata`` (``direction: inbound`` and the agent are the caller's to set; the
    numbers come from the SIP participant). ``sip_address`` is livekit-sip's ``host:port``."""
    number = number or f"+1555{secrets.randbelow(10**7):07d}"
    lkapi = livekit.client()
    try:
        trunk = await lkapi.sip.create_inbound_trunk(
            api.CreateSIPInboundTrunkRequest(
                trunk=api.SIPInboundTrunkInfo(name=f"in-{number}", numbers=[number])
            )
        )
        rule = await lkapi.sip.create_dispatch_rule(
            api.CreateSIPDispatchRuleRequest(
                name=f"to-{agent_name}",
                trunk_ids=[trunk.sip_trunk_id],
                rule=api.SIPDispatchRule(
                    dispatch_rule_individual=api.SIPDispatchRuleIndividual(
                        room_prefix=INBOUND_ROOM_PREFIX
                    )
                ),
                room_config=api.RoomConfiguration(
                    agents=[
                        api.RoomAgentDispatch(
                            agent_name=agent_name, metadata=json.dumps(dict(metadata))
                        )
                    ]
                ),
            )
        )
        uri = f"sip:{number}@{sip_address}"
        return InboundRoute(number, uri, trunk.sip_trunk_id, rule.sip_dispatch_rule_id)
    finally:
        await lkapi.aclose()
