"""The call status of one phone call, from what livekit-sip tells the room (reference
``002_*``, "Track lifecycle").

livekit-sip (v1.0.0) sets the SIP participant's ``sip.callStatus`` attribute to
``dialing`` when it joins the room, ``ringing`` on the first 18x, ``automation`` while it
sends the dispatch's DTMF, ``active`` once the callee answered and ``hangup`` when the
callee sent a BYE. A call that never connects only leaves the room, and its disconnect
reason is all the room learns: a 486 is ``USER_REJECTED``, a 480 ``USER_UNAVAILABLE``,
anything else (a 603 decline, the ringing timeout's CANCEL, a 404, a media failure) is
``UNKNOWN_REASON``. So a decline and a missed call differ only in when they ended: at the
ringing timeout it was not answered, before it the callee refused. The machine says so in
``failure_cause`` when it infers the outcome rather than reads it.

``CallStatusMachine`` is pure (no I/O, times passed in): fed the attribute values and the
disconnect, it returns the ``call.status`` changes to send as they happen and, at the end,
the final one with ``sip_status_code``/``sip_status``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from livekit import rtc

DEFAULT_RINGING_TIMEOUT: Final = 180.0
"""livekit-sip's own ringing timeout when ``CreateSIPParticipant`` sets none (3 minutes)."""
RINGING_TIMEOUT_SLACK: Final = 1.5
"""Seconds before the ringing timeout at which an unexplained end still counts as no answer:
the worker dates the dial from the participant's join, which lags the INVITE a little."""


class CallPhase(StrEnum):
    """Where the call is: ``sip.callStatus`` values, plus ``ended``."""

    DIALING = "dialing"
    RINGING = "ringing"
    AUTOMATION = "automation"
    """Answered; livekit-sip is sending the dispatch's DTMF before bridging audio."""
    ACTIVE = "active"
    HANGUP = "hangup"
    """The callee sent a BYE (livekit-sip sets it just before it leaves the room)."""
    ENDED = "ended"


class Outcome(StrEnum):
    """How a call ended: ``completed`` once answered, else why it never connected."""

    COMPLETED = "completed"
    BUSY = "busy"
    DECLINED = "declined"
    NO_ANSWER = "no_answer"
    FAILED = "failed"
    CANCELED = "canceled"
    """The worker gave up before the callee answered (drain, shutdown)."""


_CONNECTED: Final = (CallPhase.AUTOMATION, CallPhase.ACTIVE, CallPhase.HANGUP)
_PHASE_ORDER: Final = {
    CallPhase.DIALING: 0,
    CallPhase.RINGING: 1,
    CallPhase.AUTOMATION: 2,
    CallPhase.ACTIVE: 3,
    CallPhase.HANGUP: 4,
    CallPhase.ENDED: 5,
}

_HANGUPS: Final = (rtc.DisconnectReason.CLIENT_INITIATED, rtc.DisconnectReason.ROOM_DELETED)
"""Disconnect reasons of a call someone hung up, as opposed to one that dropped."""

SIP_OK: Final = (200, "OK")
SIP_BUSY: Final = (486, "Busy Here")
SIP_UNAVAILABLE: Final = (480, "Temporarily Unavailable")
SIP_CANCELED: Final = (487, "Request Terminated")
"""What the callee answers to the CANCEL livekit-sip sends at the ringing timeout."""
SIP_DECLINE: Final = (603, "Decline")


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One ``call.status`` webhook's worth: ``CallLifecycle.send_status`` arguments."""

    event_type: str
    """``call.ringing``, ``call.answered`` or ``call.hangup``."""
    status: str
    """``ringing``, ``in_progress``, ``ended``, or for a call that never connected its
    :class:`Outcome` (``busy``, ``declined``, ``no_answer``, ``failed``, ``canceled``)."""
    sip_status_code: int | None = None
    sip_status: str | None = None
    failure_cause: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def fields(self) -> dict[str, Any]:
        """Keyword arguments for ``send_status``/``status_event`` after the two positionals."""
        return {
            "sip_status_code": self.sip_status_code,
            "sip_status": self.sip_status,
            "failure_cause": self.failure_cause,
            "metadata": dict(self.metadata),
        }


class CallStatusMachine:
    """Follows one SIP participant from dialing to the end. Times are seconds on any one
    clock (the caller's choice), ``dialed_at`` when the participant joined the room."""

    def __init__(
        self, *, dialed_at: float, ringing_timeout: float | None = None, inbound: bool = False
    ) -> None:
        self.ringing_timeout = ringing_timeout or DEFAULT_RINGING_TIMEOUT
        self.inbound = inbound
        """An inbound call is answered when its participant joins; ringing is not ours."""
        self.phase = CallPhase.DIALING
        self.dialed_at = dialed_at
        self.ringing_at: float | None = None
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.outcome: Outcome | None = None
        self.final: StatusChange | None = None
        """The end's ``call.hangup`` change, once the call ended."""

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    @property
    def ended(self) -> bool:
        return self.phase is CallPhase.ENDED

    @property
    def end_reason(self) -> str | None:
        """For a call that never connected, why (the report's ``end_reason``); an answered
        call's reason is whoever hung up, which the lifecycle knows."""
        if self.outcome is None or self.outcome is Outcome.COMPLETED:
            return None
        return self.outcome.value.replace("_", " ")

    def observe(self, call_status: str | None, *, at: float) -> list[StatusChange]:
        """A new ``sip.callStatus`` value; returns the progress changes it makes (none for
        a repeat, an unknown value or a step back)."""
        try:
            phase = CallPhase(call_status or "")
        except ValueError:
            return []
        if self.ended or _PHASE_ORDER[phase] <= _PHASE_ORDER[self.phase]:
            return []
        changes: list[StatusChange] = []
        if phase is CallPhase.RINGING and not self.inbound:
            self.ringing_at = at
            changes.append(StatusChange("call.ringing", "ringing"))
        if phase in _CONNECTED and self.answered_at is None:
            self.answered_at = at
            changes.append(StatusChange("call.answered", "in_progress", *SIP_OK))
        self.phase = phase
        return changes

    def disconnected(
        self, reason: rtc.DisconnectReason.ValueType | int, *, at: float, by_worker: bool = False
    ) -> StatusChange:
        """The SIP participant left the room (``reason`` is its disconnect reason);
        ``by_worker`` when the worker removed it. Returns the final change (once: later
        calls return the first)."""
        if self.final is not None:
            return self.final
        self.ended_at = at
        if self.answered:
            self.outcome = Outcome.COMPLETED
            cause = None
            hung_up = by_worker or self.phase is CallPhase.HANGUP or reason in _HANGUPS
            if not hung_up:
                cause = f"call dropped ({_reason_name(reason)})"
            self.final = StatusChange("call.hangup", "ended", *SIP_OK, failure_cause=cause)
        else:
            self.outcome, code, cause = self._unanswered(reason, at, by_worker)
            self.final = StatusChange(
                "call.hangup",
                self.outcome.value,
                code[0] if code else None,
                code[1] if code else None,
                failure_cause=cause,
                metadata={"ring_seconds": round(at - self.dialed_at, 3)},
            )
        self.phase = CallPhase.ENDED
        return self.final

    def _unanswered(
        self, reason: int, at: float, by_worker: bool
    ) -> tuple[Outcome, tuple[int, str] | None, str]:
        if by_worker:
            return Outcome.CANCELED, SIP_CANCELED, "the worker ended the call before an answer"
        if reason == rtc.DisconnectReason.USER_REJECTED:
            return Outcome.BUSY, SIP_BUSY, "busy"
        if reason == rtc.DisconnectReason.USER_UNAVAILABLE:
            return Outcome.NO_ANSWER, SIP_UNAVAILABLE, "callee unavailable"
        waited = at - self.dialed_at
        if waited >= self.ringing_timeout - RINGING_TIMEOUT_SLACK:
            return (
                Outcome.NO_ANSWER,
                SIP_CANCELED,
                f"no answer within the ringing timeout ({self.ringing_timeout:g} s)",
            )
        if self.ringing_at is not None:
            return (
                Outcome.DECLINED,
                SIP_DECLINE,
                f"refused while ringing after {waited:.1f} s, before the ringing timeout "
                "(inferred: livekit-sip reports no SIP code for it)",
            )
        return (
            Outcome.FAILED,
            None,
            f"the call failed before ringing ({_reason_name(reason)}; livekit-sip reports "
            "no SIP code for it)",
        )


def _reason_name(reason: int) -> str:
    try:
        return rtc.DisconnectReason.Name(reason)  # type: ignore[arg-type]
    except ValueError:
        return f"disconnect reason {reason}"
