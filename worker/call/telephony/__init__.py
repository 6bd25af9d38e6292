"""The phone side of a call, on a SIP participant bridged by livekit-sip: the call status
from ``sip.callStatus`` and the disconnect reason, hanging up (the phone sees a BYE), DTMF
both ways, transfers and inbound calls."""

from worker.call.telephony.leg import SIPCall
from worker.call.telephony.status import (
    DEFAULT_RINGING_TIMEOUT,
    CallPhase,
    CallStatusMachine,
    Outcome,
    StatusChange,
)

__all__: list[str] = [
    "DEFAULT_RINGING_TIMEOUT",
    "CallPhase",
    "CallStatusMachine",
    "Outcome",
    "SIPCall",
    "StatusChange",
]
