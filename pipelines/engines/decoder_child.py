"""The wire of a speech engine's child process: length-prefixed 16 kHz int16 PCM in on
stdin, one JSON line out on stdout per request (``{"text": ...}`` or ``{"error": ...}``,
with the child's resident memory as ``rss_mb``). A ``{"ready": true}`` line comes first,
once the engine is warm. ``pipelines.providers.local_stt`` runs the parent side.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from typing import BinaryIO, TextIO

import numpy as np

from pipelines.audio import Int16Array

_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 1e6 if hasattr(os, "sysconf") else 0.004096


def rss_mb() -> float:
    """This process's resident memory in MB (Linux ``/proc``; 0.0 where there is none)."""
    try:
        with open("/proc/self/statm") as f:
            return round(int(f.read().split()[1]) * _PAGE_MB, 1)
    except (OSError, ValueError, IndexError):
        return 0.0


def serve_pcm(
    transcribe: Callable[[Int16Array], str],
    stdin: BinaryIO,
    stdout: TextIO,
    *,
    errors: tuple[type[Exception], ...] = (),
) -> int:
    """Answers requests until stdin closes; ``errors`` raised by ``transcribe`` are
    reported to the parent, anything else ends the child (the parent starts a new one)."""
    stdout.write(json.dumps({"ready": True, "rss_mb": rss_mb()}) + "\n")
    stdout.flush()
    while len(header := stdin.read(4)) == 4:
        (size,) = struct.unpack("<I", header)
        pcm = np.frombuffer(stdin.read(size), dtype=np.int16)
        reply: dict[str, str | float]
        try:
            reply = {"text": transcribe(pcm)}
        except errors as exc:
            reply = {"error": str(exc)}
        reply["rss_mb"] = rss_mb()
        stdout.write(json.dumps(reply) + "\n")
        stdout.flush()
    return 0
