"""One job = one call: the entrypoint (job glue), session assembly, lifecycle (pre-call,
idle, hangup, report), AMD routing, tools, webhooks, the report and metrics.
"""

from worker.call.entrypoint import DRAIN_FILE_ENV, GOODBYE_MARGIN, entrypoint
from worker.call.lifecycle import CallLifecycle, webhook_sender
from worker.call.metrics import WorkerMetrics, add_metrics_route, default_metrics
from worker.call.report import REDACTED, CallRecorder, CallReport, CallStatusEvent
from worker.call.session import EVENTS_TOPIC, Call, assemble_call, build_session, start_call
from worker.call.tools import ToolCallContext, build_function_tools, room_dtmf, sip_transfer
from worker.call.webhooks import (
    SpoolEntry,
    WebhookSender,
    WebhookSignatureError,
    post_signed,
    sign,
    signed_headers,
    verify,
)

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
    "SpoolEntry",
    "ToolCallContext",
    "WebhookSender",
    "WebhookSignatureError",
    "WorkerMetrics",
    "add_metrics_route",
    "assemble_call",
    "build_function_tools",
    "build_session",
    "default_metrics",
    "entrypoint",
    "post_signed",
    "room_dtmf",
    "sign",
    "signed_headers",
    "sip_transfer",
    "start_call",
    "verify",
    "webhook_sender",
]
