"""The phone side of a call, on a SIP participant bridged by livekit-sip: the call status
from ``sip.callStatus`` and the disconnect reason, hanging up (the phone sees a BYE), DTMF
both ways, transfers and inbound calls."""

__all__: list[str] = []
