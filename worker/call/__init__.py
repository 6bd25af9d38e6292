"""One job = one call: the entrypoint (job glue), session assembly, lifecycle (pre-call,
idle, hangup, report), AMD routing, tools and the report.
"""

from worker.call.entrypoint import DRAIN_FILE_ENV, GOODBYE_MARGIN, entrypoint
from worker.call.lifecycle import CallLifecycle, webhook_sender
from worker.call.report import REDACTED, CallRecorder, CallReport, CallStatusEvent, RecordingInfo
from worker.call.session import EVENTS_TOPIC, Call, assemble_call, build_session, start_call
from worker.call.tools import ToolCallContext, build_function_tools, room_dtmf, sip_transfer

__all__ = [
    "DRAIN_FILE_ENV",
    "EVENTS_TOPIC",
    "GOODBYE_MARGIN",
    "REDACTED",
    "Call",
    "CallLifecycle",
    "CallRecorder",
    "CallReport",
    "CallStatusEvent",
    "RecordingInfo",
    "ToolCallContext",
    "assemble_call",
    "build_function_tools",
    "build_session",
    "entrypoint",
    "room_dtmf",
    "sip_transfer",
    "start_call",
    "webhook_sender",
]
