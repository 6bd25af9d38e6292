"""The phone side of a call, on a SIP participant bridged by livekit-sip: the call status
from ``sip.callStatus`` and the disconnect reason, hanging up (the phone sees a BYE), DTMF
both ways, transfers and inbound calls."""

from worker.call.telephony.hold import CallerHold
from worker.call.telephony.warm_session import WarmTransferTool, move_supported, room_joiner
from worker.call.telephony.warm_transfer import (
    ConsultationLeg,
    Decision,
    DialFailed,
    LiveKitDialer,
    Outcome,
    TransferAttempt,
    WarmTransferResult,
    outcome_for_sip,
    run_warm_transfer,
    screening_text,
)

__all__ = [
    "CallerHold",
    "ConsultationLeg",
    "Decision",
    "DialFailed",
    "LiveKitDialer",
    "Outcome",
    "TransferAttempt",
    "WarmTransferResult",
    "WarmTransferTool",
    "move_supported",
    "outcome_for_sip",
    "room_joiner",
    "run_warm_transfer",
    "screening_text",
]
