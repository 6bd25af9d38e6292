"""Warm transfer with screening (reference ``002_*``, "Transfer callers"): the caller waits on
hold while each destination is dialled on a consultation leg, hears the screening prompt and
the call's summary, and accepts (key 1) or declines (key 2, hanging up, or no key in time).
On accept the destination is bridged into the caller's room and the agent leaves; a decline,
no answer or busy goes on to the next destination (``tryNext``); after the last one the
``take_message`` fallback hands the call back to the agent to take a message.

:func:`run_warm_transfer` is the order of things, over a :class:`LegDialer`;
:class:`LiveKitDialer` is the real one:

- the consultation leg is ``CreateSIPParticipant`` through the destination's outbound trunk
  into a room of its own (``<caller room>-consult-<n>``), where a screening participant of the
  job speaks the prompt with the call's TTS. A separate room, not the caller's with
  subscriptions turned off: livekit-sip v1.0.0 subscribes a SIP participant to every audio
  track of its room by itself as soon as the call is answered, so in the caller's room the
  destination would hear the caller (and the caller the destination) before any server-side
  ``UpdateSubscriptions`` could stop it.
- the bridge is ``RoomService.MoveParticipant`` (the consultation leg itself moves) where the
  server implements it (LiveKit Cloud); the open-source server v1.13.5 answers "not
  implemented", so there the consultation leg is hung up and the destination is dialled again
  into the caller's room (the screening prompt tells them it will ring again).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from worker.config import WarmDestination, WarmTransferOptions

if TYPE_CHECKING:
    from livekit import api, rtc
    from livekit.agents import tts

logger = logging.getLogger(__name__)

ACCEPT_KEY = "1"
DECLINE_KEY = "2"
SCREENING_IDENTITY = "screening-agent"
TRANSFER_IDENTITY = "transfer-target"
"""The destination's identity in the caller's room once bridged."""
TRACK_WAIT_SECONDS = 5.0
"""How long the screening waits for the destination's audio before it speaks anyway
(livekit-sip publishes the phone's track once it has subscribed to the room's)."""


class TransferOutcome(enum.StrEnum):
    """How one destination ended; the status webhook's ``metadata.stage`` uses the same words."""

    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"
    DECLINED = "declined"
    NO_REPLY = "no_reply"
    HUNG_UP = "hung_up"
    BRIDGED = "bridged"


class Decision(enum.Enum):
    ACCEPT = "accept"
    DECLINE = "decline"
    NO_REPLY = "no_reply"
    HUNG_UP = "hung_up"


class DialFailed(Exception):
    """A leg that did not connect, with the SIP response when there was one."""

    def __init__(
        self,
        outcome: TransferOutcome,
        sip_status_code: int | None = None,
        sip_status: str | None = None,
    ) -> None:
        super().__init__(f"{outcome.value} (SIP {sip_status_code} {sip_status or ''})".strip())
        self.outcome = outcome
        self.sip_status_code = sip_status_code
        self.sip_status = sip_status


def outcome_for_sip(code: int | None) -> TransferOutcome:
    """What a final SIP response means for a transfer: 486/600 busy, 603 a decline, 408/480/
    487 nobody answered (487 is livekit-sip cancelling at the ringing timeout)."""
    if code in (486, 600):
        return TransferOutcome.BUSY
    if code == 603:
        return TransferOutcome.DECLINED
    if code in (408, 480, 487):
        return TransferOutcome.NO_ANSWER
    return TransferOutcome.FAILED


class ConsultationLeg(Protocol):
    """One answered destination, not yet bridged."""

    async def screen(self, text: str) -> None: ...

    async def decision(self, timeout: float) -> Decision: ...

    async def bridge(self) -> None:
        """Connects the destination to the caller; raises :class:`DialFailed`."""
        ...

    async def close(self) -> None: ...


LegDialer = Callable[[WarmDestination, int], Awaitable[ConsultationLeg]]
"""Dials destination ``n`` on a consultation leg; raises :class:`DialFailed`."""
StageSink = Callable[..., Awaitable[object]]
"""``sink(stage, destination=label, **fields)``: the status webhook and the report."""


@dataclass(frozen=True, slots=True)
class TransferAttempt:
    destination: str
    outcome: TransferOutcome
    sip_status_code: int | None = None
    sip_status: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class WarmTransferResult:
    attempts: tuple[TransferAttempt, ...]
    bridged_to: str | None = None
    """The destination's label when the caller was bridged."""
    fallback: str | None = None
    """The fallback strategy used when nobody took the call."""

    def to_event(self) -> dict[str, Any]:
        """The report's ``transfer`` event."""
        return {
            "kind": "warm",
            "bridged_to": self.bridged_to,
            "fallback": self.fallback,
            "attempts": [
                {
                    "destination": a.destination,
                    "outcome": a.outcome.value,
                    "sip_status_code": a.sip_status_code,
                    "sip_status": a.sip_status,
                    "seconds": round(a.seconds, 2),
                }
                for a in self.attempts
            ],
        }


def screening_text(options: WarmTransferOptions, summary: str, *, rings_again: bool) -> str:
    parts = [options.screening_prompt.strip()]
    if summary.strip():
        parts.append(summary.strip())
    parts.append(f"Press {ACCEPT_KEY} to take the call, or {DECLINE_KEY} to decline.")
    if rings_again:
        parts.append("If you take it, your phone rings again with the caller.")
    return " ".join(p if re.search(r"[.!?]$", p) else p + "." for p in parts)


async def run_warm_transfer(
    options: WarmTransferOptions,
    summary: str,
    *,
    dial: LegDialer,
    stage: StageSink,
    rings_again: bool = True,
    clock: Callable[[], float] = time.monotonic,
) -> WarmTransferResult:
    """Tries ``options.destinations`` in order until one accepts and is bridged."""
    attempts: list[TransferAttempt] = []
    text = screening_text(options, summary, rings_again=rings_again)
    for index, dest in enumerate(options.destinations):
        started = clock()
        await stage("dialing", destination=dest.label)
        try:
            leg = await dial(dest, index)
        except DialFailed as e:
            attempts.append(
                TransferAttempt(
                    dest.label, e.outcome, e.sip_status_code, e.sip_status, clock() - started
                )
            )
            await stage(
                e.outcome.value,
                destination=dest.label,
                sip_status_code=e.sip_status_code,
                sip_status=e.sip_status,
            )
            continue
        outcome: TransferOutcome
        code: int | None = None
        reason: str | None = None
        try:
            await stage("answered", destination=dest.label)
            await leg.screen(text)
            await stage("screened", destination=dest.label)
            decision = await leg.decision(options.accept_timeout)
            if decision is Decision.ACCEPT:
                await stage("accepted", destination=dest.label)
                await leg.bridge()
                outcome = TransferOutcome.BRIDGED
            else:
                outcome = {
                    Decision.DECLINE: TransferOutcome.DECLINED,
                    Decision.HUNG_UP: TransferOutcome.HUNG_UP,
                }.get(decision, TransferOutcome.NO_REPLY)
        except DialFailed as e:
            outcome, code, reason = e.outcome, e.sip_status_code, e.sip_status
        except Exception:
            # e.g. the screening TTS failed: this destination is lost, the next may not be
            logger.exception("warm transfer to %s failed", dest.label)
            outcome = TransferOutcome.FAILED
        finally:
            await leg.close()
        attempts.append(TransferAttempt(dest.label, outcome, code, reason, clock() - started))
        await stage(outcome.value, destination=dest.label, sip_status_code=code, sip_status=reason)
        if outcome is TransferOutcome.BRIDGED:
            return WarmTransferResult(tuple(attempts), bridged_to=dest.label)
    fallback = None if options.fallback == "none" else options.fallback
    await stage("fallback", destination=None, strategy=options.fallback)
    return WarmTransferResult(tuple(attempts), fallback=fallback)


def fallback_instruction(result: WarmTransferResult) -> str:
    """What the LLM is told when nobody took the call."""
    tried = ", ".join(
        f"{a.destination} ({a.outcome.value.replace('_', ' ')})" for a in result.attempts
    )
    if result.fallback == "take_message":
        return (
            f"Nobody could take the call ({tried}). Tell the caller, then offer to take a "
            "message: ask for their name, a callback number and the message, and read it back."
        )
    return f"Nobody could take the call ({tried}). Tell the caller and ask how else you can help."


# ---------------------------------------------------------------- LiveKit


def _sip_failure(exc: Exception) -> DialFailed:
    from livekit import api

    code: int | None = None
    status: str | None = None
    if isinstance(exc, api.ServerError):
        err = api.SipCallError.from_server_error(exc)
        code, status = err.sip_status_code, err.sip_status
        if code is None and exc.code == "deadline_exceeded":
            # livekit-sip gives up at the ringing timeout without a SIP response
            return DialFailed(TransferOutcome.NO_ANSWER)
    return DialFailed(outcome_for_sip(code), code, status)


class LiveKitDialer:
    """Consultation legs on LiveKit: ``join(room_name, identity)`` connects a participant of
    this job to another room (the entrypoint mints its token)."""

    def __init__(
        self,
        lkapi: api.LiveKitAPI,
        *,
        caller_room: str,
        options: WarmTransferOptions,
        tts: tts.TTS[Any],
        join: Callable[[str, str], Awaitable[rtc.Room]],
    ) -> None:
        self.lkapi = lkapi
        self.caller_room = caller_room
        self.options = options
        self.tts = tts
        self.join = join

    def request(
        self, dest: WarmDestination, room_name: str, identity: str
    ) -> api.CreateSIPParticipantRequest:
        from livekit import api

        request = api.CreateSIPParticipantRequest(
            sip_trunk_id=dest.trunk_id,
            sip_call_to=dest.to,
            room_name=room_name,
            participant_identity=identity,
            participant_name=dest.label,
            wait_until_answered=True,
        )
        if self.options.from_number:
            request.sip_number = self.options.from_number
        request.ringing_timeout.FromSeconds(int(self.options.ringing_timeout))
        return request

    async def dial_into(self, dest: WarmDestination, room_name: str, identity: str) -> None:
        try:
            await self.lkapi.sip.create_sip_participant(self.request(dest, room_name, identity))
        except Exception as exc:
            failure = _sip_failure(exc)
            logger.info("transfer leg to %s: %s (%s)", dest.label, failure, exc)
            raise failure from None

    async def __call__(self, dest: WarmDestination, index: int) -> ConsultationLeg:
        room_name = f"{self.caller_room}-consult-{index + 1}"
        identity = f"consult-{index + 1}"
        try:
            room = await self.join(room_name, SCREENING_IDENTITY)
        except Exception as exc:
            logger.warning("consultation room %s: %r", room_name, exc)
            raise DialFailed(TransferOutcome.FAILED) from None
        leg = _LiveKitLeg(self, dest, room, identity)
        try:
            await self.dial_into(dest, room_name, identity)
        except BaseException:
            await leg.close()
            raise
        return leg


class _LiveKitLeg:
    def __init__(
        self, dialer: LiveKitDialer, dest: WarmDestination, room: rtc.Room, identity: str
    ) -> None:
        self.dialer = dialer
        self.dest = dest
        self.room = room
        self.identity = identity
        self._decided: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._bridged = False
        room.on("sip_dtmf_received", self._on_dtmf)
        room.on("participant_disconnected", self._on_left)

    def _decide(self, decision: Decision) -> None:
        if not self._decided.done():
            self._decided.set_result(decision)

    def _on_dtmf(self, dtmf: rtc.SipDTMF) -> None:
        if dtmf.participant is not None and dtmf.participant.identity != self.identity:
            return
        if dtmf.digit == ACCEPT_KEY:
            self._decide(Decision.ACCEPT)
        elif dtmf.digit == DECLINE_KEY:
            self._decide(Decision.DECLINE)

    def _on_left(self, participant: rtc.RemoteParticipant) -> None:
        if participant.identity == self.identity and not self._bridged:
            self._decide(Decision.HUNG_UP)

    async def _wait_for_audio(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TRACK_WAIT_SECONDS
        while loop.time() < deadline and not self._decided.done():
            target = self.room.remote_participants.get(self.identity)
            if target is not None and target.track_publications:
                return
            await asyncio.sleep(0.05)

    async def screen(self, text: str) -> None:
        from livekit import rtc

        await self._wait_for_audio()
        if self._decided.done():
            return
        tts = self.dialer.tts
        source = rtc.AudioSource(tts.sample_rate, tts.num_channels)
        track = rtc.LocalAudioTrack.create_audio_track("screening", source)
        await self.room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
        try:
            async with tts.synthesize(text) as stream:
                async for audio in stream:
                    if self._decided.done():
                        break
                    await source.capture_frame(audio.frame)
            if not self._decided.done():
                await source.wait_for_playout()
        finally:
            await source.aclose()

    async def decision(self, timeout: float) -> Decision:
        try:
            return await asyncio.wait_for(asyncio.shield(self._decided), timeout)
        except TimeoutError:
            return Decision.NO_REPLY

    async def bridge(self) -> None:
        from livekit import api

        lkapi = self.dialer.lkapi
        try:
            await lkapi.room.move_participant(
                api.MoveParticipantRequest(
                    room=self.room.name,
                    identity=self.identity,
                    destination_room=self.dialer.caller_room,
                )
            )
            self._bridged = True
            return
        except api.ServerError as exc:
            logger.info("MoveParticipant unavailable (%s): dialling the destination again", exc)
        await self._hang_up()
        await self.dialer.dial_into(self.dest, self.dialer.caller_room, TRANSFER_IDENTITY)
        self._bridged = True

    async def _hang_up(self) -> None:
        from livekit import api

        with contextlib.suppress(api.ServerError):
            await self.dialer.lkapi.room.remove_participant(
                api.RoomParticipantIdentity(room=self.room.name, identity=self.identity)
            )

    async def close(self) -> None:
        from livekit import api

        self.room.off("sip_dtmf_received", self._on_dtmf)
        self.room.off("participant_disconnected", self._on_left)
        with contextlib.suppress(Exception):
            await self.room.disconnect()
        # deleting the room hangs up a consultation leg still in it (the phone sees a BYE)
        with contextlib.suppress(api.ServerError):
            await self.dialer.lkapi.room.delete_room(api.DeleteRoomRequest(room=self.room.name))


def summary_from_transcript(lines: Sequence[tuple[str, str]], limit: int = 3) -> str:
    """The caller's last ``limit`` lines, when the LLM gave no summary."""
    said = [text.strip() for role, text in lines if role == "user" and text.strip()]
    return ("The caller said: " + " ".join(said[-limit:])) if said else ""
