"""Call recording: both sides as the caller heard them, streamed to an OGG/Opus file in the
spool (``writer``), uploaded to ``RECORDINGS_URL`` (``store``: S3 or a directory) at the
job's end (``job``) or by the worker's sweep after a crash or a bucket outage.
"""

from worker.call.recording.job import (
    ARTIFACT_SEND_BUDGET,
    UPLOAD_BUDGET,
    call_recording,
    finish_recording,
)
from worker.call.recording.store import (
    MULTIPART_BYTES,
    DirectoryStore,
    RecordingStore,
    S3Store,
    recording_store,
    spool_dir,
    sweep,
    upload,
)
from worker.call.recording.writer import (
    FORMAT,
    ChannelLayout,
    Recording,
    Sidecar,
    mixdown,
    object_key,
    repair,
)

__all__ = [
    "ARTIFACT_SEND_BUDGET",
    "FORMAT",
    "MULTIPART_BYTES",
    "UPLOAD_BUDGET",
    "ChannelLayout",
    "DirectoryStore",
    "Recording",
    "RecordingStore",
    "S3Store",
    "Sidecar",
    "call_recording",
    "finish_recording",
    "mixdown",
    "object_key",
    "recording_store",
    "repair",
    "spool_dir",
    "sweep",
    "upload",
]
