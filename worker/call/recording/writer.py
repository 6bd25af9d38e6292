"""The call recording as it is made: the taps' frames through a queue to a writer thread
that lays them on a ``CallTimeline`` and streams OGG/Opus to the spool.

The taps run on the call's real-time path and only copy a frame into a queue; placing,
resampling and encoding happen in the writer thread, so the event loop never waits for
them. The file is flushed every ``FLUSH_SECONDS`` and a sidecar JSON beside it says whose
recording it is and where it goes: a job that dies mid-call leaves a file decodable up to
about its last flush, which the next sweep repairs (re-encodes what decodes) and uploads.
Nothing is written before the caller's first frame (the timeline starts there), so a call
that never connects leaves no file.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path
from typing import Any, Literal

import numpy as np
from livekit import rtc

from pipelines.audio import AGENT, CALLER, RECORDING_RATE, CallTimeline, Float32Array, frame_samples

logger = logging.getLogger(__name__)

ChannelLayout = Literal["stereo", "mix"]
"""``stereo``: caller left, agent right (what QA tools expect); ``mix``: one composite channel."""

FORMAT = "ogg/opus"
SUFFIX = ".ogg"
SIDECAR_SUFFIX = ".json"
FLUSH_SECONDS = 1.0
"""How often the encoder's pages reach the disk: what a crash can lose at most, roughly."""
TAKE_EVERY = 0.2
"""How often the writer hands settled audio to the encoder."""
BLOCK_FRAMES = 24000
"""Frames per block when a crashed recording is re-encoded."""

_Item = tuple[int, bytes, int, int, float]
"""(side, int16 PCM, sample rate, channels, loop time heard)"""


@dataclass
class Sidecar:
    """What the spool knows about one recording (``<name>.json`` beside ``<name>.ogg``)."""

    call_id: str
    key: str
    """Object key in the store (no caller number in it: see ``object_key``)."""
    url: str
    channels: int
    sample_rate: int
    started_at: float
    pid: int
    """The job process writing it; a ``recording`` sidecar whose process is gone is a crash."""
    state: Literal["recording", "closed"] = "recording"
    duration_s: float | None = None
    bytes: int | None = None

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self)) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Sidecar:
        return cls(**json.loads(path.read_text()))

    def info(self) -> dict[str, Any]:
        """The report's ``recording`` field."""
        return {
            "url": self.url,
            "duration_s": self.duration_s,
            "format": FORMAT,
            "channels": self.channels,
            "bytes": self.bytes,
        }


_DIGITS = re.compile(r"\d{7,}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def object_key(call_id: str, agent_id: str | None, at: float) -> str:
    """``<agent>/<YYYY-MM-DD>/<call>.ogg``. A call id with a run of seven or more digits (it
    may carry the caller's number) is replaced by a hash of itself: the key never shows one.
    Agent ids come from the control plane, not from the call."""

    def safe(part: str) -> str:
        return _UNSAFE.sub("_", part).strip("._") or "call"

    call = sha256(call_id.encode()).hexdigest()[:24] if _DIGITS.search(call_id) else call_id
    day = datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%d")
    return f"{safe(agent_id or 'agent')}/{day}/{safe(call)}{SUFFIX}"


def mixdown(block: Float32Array, layout: ChannelLayout) -> Float32Array:
    """A ``(n, 2)`` caller/agent block in the file's layout."""
    if layout == "stereo":
        return block
    mixed: Float32Array = np.clip(block.sum(axis=1, keepdims=True), -1.0, 1.0)
    return mixed


class Recording:
    """One call's recording: ``caller_tap``/``agent_tap`` feed it, ``start()`` starts the
    writer thread (on the event loop, which fixes the clock), ``close()`` ends it."""

    def __init__(
        self,
        spool: Path,
        *,
        call_id: str,
        key: str,
        url: str,
        layout: ChannelLayout = "stereo",
    ) -> None:
        self.spool = spool
        self.layout = layout
        name = Path(key).name.removesuffix(SUFFIX) + f"-{os.getpid()}-{id(self):x}"
        self.path = spool / (name + SUFFIX)
        self.sidecar_path = spool / (name + SIDECAR_SUFFIX)
        self.sidecar = Sidecar(
            call_id=call_id,
            key=key,
            url=url,
            channels=2 if layout == "stereo" else 1,
            sample_rate=RECORDING_RATE,
            started_at=0.0,
            pid=os.getpid(),
        )
        self.timeline = CallTimeline(RECORDING_RATE)
        self.error: str | None = None
        """Why the writer stopped early, if it did (the call goes on regardless)."""
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"recording:{call_id}", daemon=True)
        self._offset = 0.0
        """Loop time minus ``time.monotonic()``: the writer reads the loop's clock."""
        self._closed = False

    # ------------------------------------------------------------ event loop side
    def start(self, loop_time: float) -> None:
        self._offset = loop_time - time.monotonic()
        self._thread.start()

    def caller_tap(self, frame: rtc.AudioFrame, at: float) -> None:
        self._put(CALLER, frame, at)

    def agent_tap(self, frame: rtc.AudioFrame, at: float) -> None:
        self._put(AGENT, frame, at)

    def _put(self, side: int, frame: rtc.AudioFrame, at: float) -> None:
        if not self._closed:
            self._queue.put((side, bytes(frame.data), frame.sample_rate, frame.num_channels, at))

    def close(self, timeout: float = 2.0) -> Sidecar | None:
        """Ends the file (blocking: call it in a thread); the closed sidecar, or None when
        nothing was recorded (the caller never connected) or the writer did not finish
        within ``timeout`` (its file stays in the spool for the sweep)."""
        self._closed = True
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self.sidecar.state != "closed":
            return None
        return self.sidecar

    # ------------------------------------------------------------ writer thread
    def _now(self) -> float:
        return time.monotonic() + self._offset

    def _run(self) -> None:
        import soundfile as sf

        out: sf.SoundFile | None = None
        frames = 0
        next_take = next_flush = time.monotonic()
        try:
            while True:
                end = False
                try:
                    item = self._queue.get(timeout=TAKE_EVERY)
                    if item is None:
                        end = True
                    else:
                        side, data, rate, channels, at = item
                        self.timeline.place(side, frame_samples(data, channels), rate, at)
                except queue.Empty:
                    pass
                if end:
                    block = self.timeline.drain()
                elif time.monotonic() >= next_take:
                    block = self.timeline.take(self._now())
                    next_take = time.monotonic() + TAKE_EVERY
                else:
                    continue
                if len(block):
                    if out is None:
                        out = self._open(sf)
                    out.write(mixdown(block, self.layout))
                    frames += len(block)
                if out is not None and (end or time.monotonic() >= next_flush):
                    out.flush()
                    next_flush = time.monotonic() + FLUSH_SECONDS
                if end:
                    break
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            logger.exception("call recording stopped")
        finally:
            if out is not None:
                out.close()
                self.sidecar.state = "closed"
                self.sidecar.duration_s = round(frames / RECORDING_RATE, 3)
                self.sidecar.bytes = self.path.stat().st_size
                self.sidecar.save(self.sidecar_path)
                tl = self.timeline
                logger.info(
                    "recording closed: %.2f s (caller pauses %.2f s, start moved back %.2f s, "
                    "%.2f s dropped)",
                    self.sidecar.duration_s,
                    tl.paused / tl.sample_rate,
                    tl.moved_back / tl.sample_rate,
                    tl.dropped / tl.sample_rate,
                )

    def _open(self, sf: Any) -> Any:
        self.spool.mkdir(parents=True, exist_ok=True)
        self.sidecar.started_at = time.time()
        self.sidecar.save(self.sidecar_path)
        return sf.SoundFile(
            self.path,
            "w",
            samplerate=RECORDING_RATE,
            channels=self.sidecar.channels,
            format="OGG",
            subtype="OPUS",
        )


def repair(path: Path, sidecar: Sidecar) -> Sidecar:
    """A crashed job's file re-encoded as far as it decodes (its last page may be torn),
    closed properly; the sidecar closed with the new duration and size."""
    import soundfile as sf

    fixed = path.with_name(path.name + ".repaired")
    frames = 0
    with sf.SoundFile(
        fixed,
        "w",
        samplerate=sidecar.sample_rate,
        channels=sidecar.channels,
        format="OGG",
        subtype="OPUS",
    ) as dst:
        try:
            with sf.SoundFile(path) as src:
                while True:
                    block = src.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
                    if not len(block):
                        break
                    dst.write(block)
                    frames += len(block)
        except (sf.LibsndfileError, RuntimeError) as exc:
            logger.info("recording %s decodes to %d frames: %s", path.name, frames, exc)
    fixed.replace(path)
    sidecar.state = "closed"
    sidecar.duration_s = round(frames / sidecar.sample_rate, 3)
    sidecar.bytes = path.stat().st_size
    return sidecar
