"""The phone side of a call, on a SIP participant bridged by livekit-sip: the call status
from ``sip.callStatus`` and the disconnect reason, hanging up (the phone sees a BYE), DTMF
both ways, transfers and inbound calls."""

from worker.call.telephony.dtmf import (
    COLLECT_TIMEOUT_SECONDS,
    DTMF_CODES,
    MAX_COLLECT_SECONDS,
    MAX_DIGITS,
    CallerDigits,
    turn_text,
)
from worker.call.telephony.hold import CallerHold
from worker.call.telephony.inbound import (
    fill_from_sip,
    inbound_caller,
    sip_call_info,
    until_answered,
)
from worker.call.telephony.leg import SIPCall
from worker.call.telephony.status import (
    DEFAULT_RINGING_TIMEOUT,
    CallPhase,
    CallStatusMachine,
    Outcome,
    StatusChange,
)
from worker.call.telephony.transfer import TRANSFERRED, TransferFailed, blind_transfer
from worker.call.telephony.warm_session import WarmTransferTool, move_supported, room_joiner
from worker.call.telephony.warm_transfer import (
    ConsultationLeg,
    Decision,
    DialFailed,
    LiveKitDialer,
    TransferAttempt,
    TransferOutcome,
    WarmTransferResult,
    outcome_for_sip,
    run_warm_transfer,
    screening_text,
)

__all__ = [
    "COLLECT_TIMEOUT_SECONDS",
    "DEFAULT_RINGING_TIMEOUT",
    "DTMF_CODES",
    "MAX_COLLECT_SECONDS",
    "MAX_DIGITS",
    "TRANSFERRED",
    "CallPhase",
    "CallStatusMachine",
    "CallerDigits",
    "CallerHold",
    "ConsultationLeg",
    "Decision",
    "DialFailed",
    "LiveKitDialer",
    "Outcome",
    "SIPCall",
    "StatusChange",
    "TransferAttempt",
    "TransferFailed",
    "TransferOutcome",
    "WarmTransferResult",
    "WarmTransferTool",
    "blind_transfer",
    "fill_from_sip",
    "inbound_caller",
    "move_supported",
    "outcome_for_sip",
    "room_joiner",
    "run_warm_transfer",
    "screening_text",
    "sip_call_info",
    "turn_text",
    "until_answered",
]
