"""The phone side of a call, on a SIP participant bridged by livekit-sip: the call status
from ``sip.callStatus`` and the disconnect reason, hanging up (the phone sees a BYE), DTMF
both ways, transfers and inbound calls."""

from worker.call.telephony.inbound import (
    fill_from_sip,
    inbound_caller,
    sip_call_info,
    until_answered,
)

__all__ = ["fill_from_sip", "inbound_caller", "sip_call_info", "until_answered"]
