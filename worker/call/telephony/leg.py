"""Follows the room's SIP participant for one job (reference ``002_*``): progress status
webhooks as they happen, a prompt end with a report for a call that never connected, and
the hangup: when the session closes for any reason the worker decided (``end_call``, an AMD
hangup, the voicemail message done, inactivity, drain), the SIP participant is removed from
the room so livekit-sip sends the phone a BYE at once. The agent leaving the room does not:
livekit-sip keeps the leg up until the phone hangs up itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from livekit import api, rtc

from worker.call.telephony.status import DEFAULT_RINGING_TIMEOUT, CallStatusMachine, StatusChange
from worker.call.telephony.transfer import TRANSFERRED

if TYPE_CHECKING:
    from livekit.agents import AgentSession

    from worker.call.lifecycle import CallLifecycle
    from worker.webhooks import WebhookSender

logger = logging.getLogger(__name__)

CALL_STATUS: Final = "sip.callStatus"
REMOVE_TIMEOUT: Final = 3.0
"""Longest wait for LiveKit to remove the SIP participant (the BYE follows at once)."""
GONE_TIMEOUT: Final = 2.0
"""Longest wait, after removing it, for the room to report the participant gone."""
CALLEE_JOIN_TIMEOUT: Final = 20.0
"""Longest wait on an outbound call for the callee to join the room: the platform dials
right after the dispatch, so a callee that never shows up was refused (or failed) before
the agent was in the room to see it leave."""
BYE_TAIL: Final = 0.4
"""Seconds from the last agent frame played to the BYE: the room, livekit-sip, RTP and the
phone's jitter buffer still carry ~0.2 s of it (a BYE at once would cut the last word)."""
ANSWER_WAIT_MARGIN: Final = 5.0
"""Added to the join and ringing timeouts: the longest a greeting waits for the answer."""
STATUS_FLUSH_TIMEOUT: Final = 5.0
"""Longest wait at the end for progress statuses still being sent."""


def _utc(at: float | None) -> datetime | None:
    return None if at is None else datetime.fromtimestamp(at, UTC)


class SIPCall:
    """The phone leg of one call: the first SIP participant to join the room."""

    def __init__(
        self,
        room: rtc.Room,
        life: CallLifecycle,
        sender: WebhookSender,
        *,
        lkapi: api.LiveKitAPI | None,
        ringing_timeout: float | None = None,
        direction: str | None = None,
        numbers: tuple[str | None, str | None] = (None, None),
    ) -> None:
        self.room = room
        self.life = life
        self.sender = sender
        self.lkapi = lkapi
        self.ringing_timeout = ringing_timeout
        self.inbound = direction == "inbound"
        self.outbound = direction == "outbound"
        self.numbers = numbers
        """``(to, from)`` from the dispatch: what the report says when the SIP attributes do not."""
        self.participant: rtc.RemoteParticipant | None = None
        self.machine: CallStatusMachine | None = None
        self.answered = asyncio.Event()
        """Set once the callee answered (``sip.callStatus`` ``automation`` or ``active``):
        what a greeting on a phone call waits for."""
        self.gone = asyncio.Event()
        """Set once the SIP participant left the room (the call is over)."""
        self._session: AgentSession[Any] | None = None
        self._removing = False
        self._statuses: asyncio.Queue[StatusChange | None] = asyncio.Queue()
        self._status_task: asyncio.Task[None] | None = None
        self._hangup_task: asyncio.Task[None] | None = None
        self._callee_seen = False
        self._callee = asyncio.Event()
        self._watchdog: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- following
    def start(self, session: AgentSession[Any]) -> None:
        """Starts following the room (and the SIP participant already in it, if any); the
        session's close hangs the phone up."""
        self._session = session
        self._status_task = asyncio.create_task(self._send_statuses())
        self.room.on("participant_connected", self._adopt)
        self.room.on("participant_attributes_changed", self._on_attributes)
        self.room.on("participant_disconnected", self._on_disconnected)
        for participant in list(self.room.remote_participants.values()):
            self._adopt(participant)
        session.on("close", self._on_session_close)
        if self.outbound:
            self._watchdog = asyncio.create_task(self._callee_never_joined(CALLEE_JOIN_TIMEOUT))

    async def _callee_never_joined(self, timeout: float) -> None:
        await asyncio.sleep(timeout)
        if self._callee_seen or self._session is None:
            return
        cause = f"the callee never joined the room within {timeout:.0f} s"
        logger.warning("outbound call failed: %s", cause)
        self.life.final_status = {"status": "failed", "failure_cause": cause}
        self.life.end_reason = self.life.end_reason or "failed"
        self._session.shutdown(drain=False)

    def _adopt(self, participant: rtc.RemoteParticipant) -> None:
        sip = participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP
        adopt = self.participant is None and sip
        if adopt:
            self.participant = participant
        if participant.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            self._callee_seen = True
            self._callee.set()  # after the phone leg is known: a greeting waiting looks at it
        if not adopt:
            return
        joined = participant.joined_at
        self.machine = CallStatusMachine(
            dialed_at=joined.timestamp() if joined is not None else time.time(),
            ringing_timeout=self.ringing_timeout,
            inbound=self.inbound,
        )
        status = participant.attributes.get(CALL_STATUS)
        logger.info("phone leg %s joined: %s", participant.identity, status)
        self._observe(participant)

    def _observe(self, participant: rtc.RemoteParticipant) -> None:
        assert self.machine is not None
        for change in self.machine.observe(participant.attributes.get(CALL_STATUS), at=time.time()):
            self._statuses.put_nowait(change)
        if self.machine.answered:
            self.answered.set()

    def _on_attributes(self, changed: Mapping[str, str], participant: rtc.Participant) -> None:
        if participant is self.participant and CALL_STATUS in changed:
            self._observe(self.participant)

    def _on_disconnected(self, participant: rtc.RemoteParticipant) -> None:
        if participant is not self.participant or self.machine is None or self.gone.is_set():
            return
        reason = participant.disconnect_reason or rtc.DisconnectReason.UNKNOWN_REASON
        self._end(reason)

    def _end(self, reason: int) -> None:
        assert self.machine is not None
        final = self.machine.disconnected(reason, at=time.time(), by_worker=self._removing)
        self.gone.set()
        self.life.final_status = {"status": final.status, **final.fields()}
        logger.info(
            "phone leg ended: %s %s %s", final.status, final.sip_status_code, final.failure_cause
        )
        if self.machine.answered or self._session is None:
            return
        # Never connected: nobody to talk to, so the job ends now, without a word.
        self.life.end_reason = self.life.end_reason or self.machine.end_reason
        self._session.shutdown(drain=False)

    async def _send_statuses(self) -> None:
        while (change := await self._statuses.get()) is not None:
            await self.life.send_status(
                self.sender, change.event_type, change.status, **change.fields()
            )

    async def until_answered(self) -> bool:
        """What an outbound greeting waits for: True once the callee answered (at once for a
        callee that is not a phone), False if the call ended or never connected first."""
        ring = self.ringing_timeout or DEFAULT_RINGING_TIMEOUT
        deadline = time.monotonic() + CALLEE_JOIN_TIMEOUT + ring + ANSWER_WAIT_MARGIN
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._callee.wait(), CALLEE_JOIN_TIMEOUT)
        if not self._callee.is_set():
            return False
        if self.participant is None:
            return True  # a room participant, not a phone: nothing to answer
        answered = asyncio.ensure_future(self.answered.wait())
        gone = asyncio.ensure_future(self.gone.wait())
        try:
            await asyncio.wait(
                (answered, gone),
                timeout=max(0.0, deadline - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            answered.cancel()
            gone.cancel()
        return self.answered.is_set() and not self.gone.is_set()

    # ---------------------------------------------------------------- hangup
    def hang_up_soon(self, tail: bool) -> None:
        """The worker decided to end the call: the BYE goes out now (``BYE_TAIL`` from now when
        the agent has just spoken), not at the session's close."""
        if self._hangup_task is None and self.life.end_reason != TRANSFERRED:
            self._hangup_task = asyncio.create_task(self.hang_up(after=BYE_TAIL if tail else 0.0))

    def _on_session_close(self, _ev: object) -> None:
        if self.life.end_reason == TRANSFERRED:
            return  # the caller is someone else's now (a REFER, or a warm transfer's bridge)
        if self._hangup_task is None:
            self._hangup_task = asyncio.create_task(self.hang_up())

    def leave_line_up(self) -> None:
        """Another job has taken the call over (see ``worker.call.survival``): this one
        leaves the room without hanging up the phone."""
        self._removing = True

    async def hang_up(self, *, after: float = 0.0) -> None:
        """Removes the SIP participant (``after`` seconds from now), so the phone gets a BYE;
        nothing if it is gone."""
        participant = self.participant
        if participant is None or self.gone.is_set() or self._removing:
            return
        self._removing = True
        if self.lkapi is None:
            return
        if after > 0:
            await asyncio.sleep(after)
            if self.gone.is_set():
                return
        try:
            await asyncio.wait_for(
                self.lkapi.room.remove_participant(
                    api.RoomParticipantIdentity(room=self.room.name, identity=participant.identity)
                ),
                REMOVE_TIMEOUT,
            )
            logger.info("phone leg %s removed (BYE)", participant.identity)
        except Exception as exc:
            # Already gone (the phone hung up meanwhile) or LiveKit unreachable.
            logger.warning("removing the phone leg failed: %s", type(exc).__name__)

    async def aclose(self, *, amd: Mapping[str, Any] | None = None) -> None:
        """Hangs up if the call is still up, sends the progress statuses still queued and
        puts the SIP leg (with ``amd``, the verdict acted on) into the report."""
        if self._hangup_task is None:
            self._hangup_task = asyncio.create_task(self.hang_up())
        await self._hangup_task
        if self.machine is not None and not self.gone.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.gone.wait(), GONE_TIMEOUT)
            if not self.gone.is_set():
                self._end(rtc.DisconnectReason.UNKNOWN_REASON)
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._statuses.put_nowait(None)
        if self._status_task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._status_task), STATUS_FLUSH_TIMEOUT)
            self._status_task.cancel()
        self.room.off("participant_connected", self._adopt)
        self.room.off("participant_attributes_changed", self._on_attributes)
        self.room.off("participant_disconnected", self._on_disconnected)
        if self.participant is not None and self.machine is not None:
            self.life.recorder.set_phone(self._phone_info(self.participant, self.machine, amd))

    def _phone_info(
        self,
        participant: rtc.RemoteParticipant,
        machine: CallStatusMachine,
        amd: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        attrs = participant.attributes
        remote, trunk = attrs.get("sip.phoneNumber"), attrs.get("sip.trunkPhoneNumber")
        to_number, from_number = (trunk, remote) if self.inbound else (remote, trunk)
        final = machine.final
        return {
            "to_number": to_number or self.numbers[0],
            "from_number": from_number or self.numbers[1],
            "sip_call_id": attrs.get("sip.callID"),
            "trunk_id": attrs.get("sip.trunkID"),
            "participant_identity": participant.identity,
            "outcome": machine.outcome.value if machine.outcome else None,
            "sip_status_code": final.sip_status_code if final else None,
            "sip_status": final.sip_status if final else None,
            "failure_cause": final.failure_cause if final else None,
            "dialed_at": _utc(machine.dialed_at),
            "ringing_at": _utc(machine.ringing_at),
            "answered_at": _utc(machine.answered_at),
            "ended_at": _utc(machine.ended_at),
            "amd": dict(amd) if amd is not None else None,
        }
