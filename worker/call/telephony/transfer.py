"""Blind transfer of the caller (``transfer_call``): a SIP REFER through livekit-sip
(``TransferSIPParticipant``), recorded as it happens.

The REFER's outcome comes back from livekit-sip once the phone's NOTIFY says how the new
leg went (200: the target answered; anything else: failed, livekit-sip v1.0.0 drops the
NOTIFY's status code and reports only "call transfer failed"; a refused REFER keeps its
code). Each step is a ``transfer`` event in the report and a ``call.transfer`` status
webhook (``transferring``, then ``transferred`` or ``failed``); a transfer that went
through ends the call with ``end_reason`` ``transferred`` (livekit-sip hangs the agent's
leg up). A failure raises :class:`TransferFailed`, whose text the agent may say.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.call.lifecycle import CallLifecycle
    from worker.webhooks import WebhookSender

logger = logging.getLogger(__name__)

TRANSFERRED = "transferred"
"""The call's ``end_reason`` after a transfer that went through."""
_SIP_CODE = re.compile(r"\b(?:code|SIP/2\.0|SIP status)\s+([3-6]\d\d)\b")
"""A SIP code in an error's text (``SIP REFER failed with code 486``); not the HTTP status
the API client adds (``status=408`` for livekit-sip's "call transfer failed")."""
_SAYABLE = {
    403: "the transfer was refused",
    404: "that number does not exist",
    408: "nobody answered",
    480: "nobody answered",
    486: "the line is busy",
    487: "nobody answered",
    603: "the call was declined",
}


class TransferFailed(Exception):
    """A transfer that did not go through. ``reason`` is why in words a caller may hear
    (never the SIP stack's message), ``None`` when livekit-sip did not say."""

    def __init__(self, reason: str | None, sip_status_code: int | None = None) -> None:
        super().__init__(reason or "the transfer did not go through")
        self.reason = reason
        self.sip_status_code = sip_status_code


def sip_status_code(error: BaseException) -> int | None:
    """The SIP status code an error message carries (``SIP REFER failed with code 486``)."""
    found = _SIP_CODE.search(str(error))
    return int(found.group(1)) if found else None


def blind_transfer(
    life: CallLifecycle,
    sender: WebhookSender,
    refer: Callable[[str], Awaitable[None]],
) -> Callable[[str], Awaitable[None]]:
    """A ``ToolCallContext.transfer``: ``refer(uri)`` (e.g. ``sip_transfer``) with the
    report's events, the status webhooks and the end reason around it."""
    pending: set[asyncio.Task[Any]] = set()

    def status(state: str, to: str, **fields: Any) -> None:
        # Delivered as it happens but never awaited: the REFER must not wait on a webhook.
        task = asyncio.ensure_future(
            life.send_status(
                sender,
                "call.transfer",
                state,
                metadata={"kind": "blind", "to": to},
                **fields,
            )
        )
        pending.add(task)
        task.add_done_callback(pending.discard)

    async def transfer(to: str) -> None:
        life.recorder.add_event("transfer", kind="blind", to=to, outcome="started")
        status("transferring", to)
        try:
            await refer(to)
        except Exception as exc:
            # livekit.api's ServerError carries the server's words in ``message``
            cause = str(getattr(exc, "message", None) or exc)
            code = sip_status_code(exc)
            reason = _SAYABLE.get(code or 0)
            logger.warning("transfer to %s failed: %s", to, exc)
            life.recorder.add_event(
                "transfer",
                kind="blind",
                to=to,
                outcome="failed",
                error=cause,
                sip_status_code=code,
            )
            status("failed", to, failure_cause=cause, sip_status_code=code)
            raise TransferFailed(reason, code) from None
        life.end_reason = TRANSFERRED
        life.recorder.add_event("transfer", kind="blind", to=to, outcome=TRANSFERRED)
        status(TRANSFERRED, to)

    return transfer
