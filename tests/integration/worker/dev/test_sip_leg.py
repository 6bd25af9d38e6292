"""The phone leg's real parts: Redis, a LiveKit server using it, livekit-sip v1.0.0 and a
baresip phone. An outbound SIP participant rings the phone, carries its audio and the RFC 2833
digits both ways; a busy phone's 486 reaches the room as the participant's disconnect reason."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

from livekit import api, rtc

from tests.fakes import until
from worker.dev.services import LiveKitEndpoint
from worker.dev.services.phone import SIPPhone
from worker.dev.services.sip import LiveKitSIP

CALLER = Path(__file__).parents[4] / "fixtures" / "audio" / "booking_two_turns.wav"


async def _dial(lk: LiveKitEndpoint, phone: SIPPhone) -> tuple[rtc.Room, list[object]]:
    """Joins a fresh room as the agent would and dials the phone into it."""
    lkapi = lk.client()
    room_name = f"sip-{secrets.token_hex(3)}"
    try:
        trunk = await lkapi.sip.create_outbound_trunk(
            api.CreateSIPOutboundTrunkRequest(
                trunk=api.SIPOutboundTrunkInfo(
                    name="test", address=phone.address, numbers=["+15550000001"]
                )
            )
        )
        room = rtc.Room()
        seen: list[object] = []
        room.on("participant_disconnected", lambda p: seen.append(p.disconnect_reason))
        room.on("sip_dtmf_received", lambda d: seen.append(d.digit))
        token = (
            api.AccessToken(lk.api_key, lk.api_secret)
            .with_identity("agent")
            .with_grants(api.VideoGrants(room_join=True, room=room_name))
            .to_jwt()
        )
        await room.connect(lk.url, token)
        await lkapi.sip.create_sip_participant(
            api.CreateSIPParticipantRequest(
                sip_trunk_id=trunk.sip_trunk_id,
                sip_call_to=phone.user,
                room_name=room_name,
                participant_identity="callee",
                wait_until_answered=False,
            )
        )
        return room, seen
    finally:
        await lkapi.aclose()


async def test_answered_call_carries_audio_and_dtmf_both_ways(
    livekit: LiveKitEndpoint, livekit_sip: LiveKitSIP
) -> None:
    lk = livekit
    with SIPPhone(answer="auto", audio=CALLER, hold_seconds=20) as phone:
        room, seen = await _dial(lk, phone)
        try:
            await until(
                lambda: any(
                    p.attributes.get("sip.callStatus") == "active"
                    for p in room.remote_participants.values()
                ),
                15,
            )
            callee = room.remote_participants["callee"]
            assert callee.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP
            assert callee.attributes["sip.phoneNumber"] == phone.user
            await until(lambda: bool(callee.track_publications), 10)
            for code, digit in ((1, "1"), (11, "#")):
                await room.local_participant.publish_dtmf(code=code, digit=digit)
            await asyncio.to_thread(phone.press, "42")
            await until(lambda: phone.received_dtmf() == "1#", 10)
            await until(lambda: seen[-2:] == ["4", "2"], 10)
        finally:
            await room.disconnect()
        # the phone itself saw the call answered (not only LiveKit's attribute)
        await asyncio.to_thread(phone.wait_for, "CALL_ESTABLISHED", 1)


async def test_busy_phone_rejects_with_486(
    livekit: LiveKitEndpoint, livekit_sip: LiveKitSIP
) -> None:
    lk = livekit
    with SIPPhone(answer="busy") as phone:
        room, seen = await _dial(lk, phone)
        try:
            await until(lambda: bool(seen), 15)
            assert seen == [rtc.DisconnectReason.USER_REJECTED]
            assert phone.event_types()[:1] == ["CALL_INCOMING"]
            assert "CALL_ESTABLISHED" not in phone.event_types()
        finally:
            await room.disconnect()
