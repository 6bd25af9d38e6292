"""The recording's part in one job: made when the plan says record, fed by the taps that
``start_call`` installs, closed and uploaded at the job's shutdown.

LiveKit allows a job's shutdown about ten seconds, and the report comes after this: closing
waits at most two for the writer, the upload gets ``UPLOAD_BUDGET`` and the artifact event
``ARTIFACT_SEND_BUDGET``. A slow or unreachable bucket leaves the file in the spool, where the
worker's periodic sweep uploads it, so the report's URL is where the object will be either way.
"""

from __future__ import annotations

import asyncio
import logging
import time

from pipelines.errors import ConfigError
from worker.call.lifecycle import CallLifecycle
from worker.call.recording.store import recording_store, spool_dir, upload
from worker.call.recording.writer import Recording, object_key
from worker.webhooks import WebhookSender

logger = logging.getLogger(__name__)

UPLOAD_BUDGET = 3.0
"""Seconds the job spends uploading before it leaves the file to the sweep."""
ARTIFACT_SEND_BUDGET = 1.0
"""Seconds the job waits for the artifact status webhook (it is spooled before sending)."""


def call_recording(life: CallLifecycle) -> Recording | None:
    """The call's recording if its plan says record (the agent's flag or the per-call
    override), else None. No I/O: the file appears with the caller's first frame."""
    if not life.plan.save_audio_recording:
        return None
    settings = life.settings
    key = object_key(life.recorder.call_id, life.plan.agent_id, time.time())
    try:
        url = recording_store(settings).url_for(key)
    except ConfigError as exc:
        # a deployment mistake: the call goes on, unrecorded, and its report says why
        logger.error("call not recorded: %s", exc)
        life.recorder.add_event("error", error=f"call not recorded: {exc}")
        return None
    return Recording(
        spool_dir(settings),
        call_id=life.recorder.call_id,
        key=key,
        url=url,
        layout=settings.recording_channels,
    )


async def finish_recording(
    recording: Recording, life: CallLifecycle, sender: WebhookSender
) -> None:
    """Closes the file, links it from the report, uploads it within the budget and sends
    the ``call.artifact`` status event. Never raises: the report goes out regardless."""
    try:
        sidecar = await asyncio.to_thread(recording.close)
        if sidecar is None:
            logger.info("nothing to upload now: no caller audio, or the writer is still closing")
            return
        info = sidecar.info()
        life.recorder.set_recording(info)
        store = recording_store(life.settings)
        deadline = time.monotonic() + UPLOAD_BUDGET
        uploaded = await asyncio.to_thread(
            upload, store, recording.path, sidecar.key, deadline=deadline
        )
        if uploaded:
            recording.path.unlink(missing_ok=True)
            recording.sidecar_path.unlink(missing_ok=True)
        else:
            logger.warning("recording left in the spool for the next sweep")
        send = life.send_status(
            sender,
            "call.artifact",
            "uploaded" if uploaded else "pending",
            metadata={"artifact": "recording", "recording": info},
        )
        await asyncio.wait_for(send, ARTIFACT_SEND_BUDGET)
    except TimeoutError:
        logger.info("artifact event still sending: left to the spool's redelivery")
    except Exception:
        logger.exception("finishing the call recording failed")
