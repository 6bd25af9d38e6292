"""A real SIP phone on loopback: baresip (Debian, v1.0.0) with G.711 only, so every call is
8 kHz telephone audio as on a real line.

The phone answers, rings without answering, or refuses (``486 Busy Here``) as told; it plays
a WAV (then silence, until the other side hangs up or ``hold_seconds`` pass), records both
directions of every call (the ``sndfile`` module: ``*-dec.wav`` is what it heard), sends RFC
2833 digits (keys typed into its ``cons`` console), and reports what happens as events over
``ctrl_tcp`` (JSON netstrings): incoming, established, DTMF received, REFER followed, closed.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipelines.audio import Audio, read_wav, resample, write_wav
from worker.dev.services.process import LOOPBACK, ManagedProcess, ServiceError, free_port

PHONE_RATE = 8000
"""G.711's rate: what the phone plays and records."""
HOLD_SECONDS = 90.0
"""How long the phone stays on the line in silence after its WAV, unless hung up on."""

Answer = Literal["auto", "busy", "ring"]
"""``auto`` answers at once; ``busy`` refuses with 486; ``ring`` rings until the caller gives up."""


@dataclass(frozen=True, slots=True)
class PhoneEvent:
    """One ``ctrl_tcp`` event: ``type`` as baresip names it (``CALL_INCOMING``,
    ``CALL_ESTABLISHED``, ``CALL_DTMF_START``, ``CALL_TRANSFER``, ``CALL_CLOSED`` ...)."""

    type: str
    param: str
    peer: str
    at: float
    """``time.monotonic()`` when the event was read."""
    raw: dict[str, Any] = field(default_factory=dict)


def _netstrings(buffer: bytearray) -> list[bytes]:
    """Takes every complete ``len:payload,`` off the front of ``buffer``."""
    out: list[bytes] = []
    while True:
        colon = buffer.find(b":")
        if colon < 0:
            return out
        size = int(buffer[:colon])
        end = colon + 1 + size
        if len(buffer) < end + 1:
            return out
        out.append(bytes(buffer[colon + 1 : end]))
        del buffer[: end + 1]


def phone_wav(source: Path | None, target: Path, hold_seconds: float) -> float:
    """Writes ``source`` as 8 kHz mono 16-bit followed by ``hold_seconds`` of silence (baresip
    hangs up when its source file ends); returns the speech's duration in seconds."""
    speech = np.zeros(0, dtype=np.float32)
    if source is not None:
        audio = read_wav(source)
        speech = resample(audio.samples, audio.sample_rate, PHONE_RATE)
    silence = np.zeros(int(hold_seconds * PHONE_RATE), dtype=np.float32)
    write_wav(target, Audio(np.concatenate([speech, silence]), PHONE_RATE))
    return len(speech) / PHONE_RATE


class SIPPhone(ManagedProcess):
    """One baresip user agent, ``user@127.0.0.1:sip_port``, controlled over loopback."""

    name = "baresip"
    sigterm_shares = (1.0,)

    def __init__(
        self,
        *,
        user: str = "phone",
        answer: Answer = "auto",
        audio: Path | None = None,
        hold_seconds: float = HOLD_SECONDS,
        startup_timeout: float = 10.0,
    ) -> None:
        super().__init__(startup_timeout=startup_timeout)
        self.user = user
        self.answer = answer
        self.audio = audio
        self.hold_seconds = hold_seconds
        # baresip also binds TLS on sip_port + 1
        self.sip_port = self._port_pair()
        self.ctrl_port = free_port()
        self.cons_port = free_port(socket.SOCK_DGRAM)
        self.speech_seconds = 0.0
        self.events: list[PhoneEvent] = []
        self._events_changed = threading.Condition()
        self._ctrl: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._responses: dict[str, dict[str, Any]] = {}
        self._token = 0

    @staticmethod
    def _port_pair() -> int:
        for _ in range(50):
            port = free_port()
            try:
                with socket.socket() as probe:
                    probe.bind((LOOPBACK, port + 1))
                return port
            except OSError:
                continue
        raise ServiceError("no two consecutive free TCP ports for the phone")

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.sip_port}"

    @property
    def uri(self) -> str:
        return f"sip:{self.user}@{self.address}"

    @property
    def recordings_dir(self) -> Path:
        return self.workdir / "calls"

    def config_text(self, source: Path) -> str:
        return "\n".join(
            [
                f"sip_listen {self.address}",
                f"audio_source aufile,{source}",
                "audio_alert aufile,/dev/null",
                "audio_player aufile,/dev/null",
                "module_path /usr/lib/baresip/modules",
                "module g711.so",
                "module aufile.so",
                "module sndfile.so",
                "module account.so",
                "module menu.so",
                "module cons.so",
                "module ctrl_tcp.so",
                f"snd_path {self.recordings_dir}",
                f"ctrl_tcp_listen {LOOPBACK}:{self.ctrl_port}",
                f"cons_listen {LOOPBACK}:{self.cons_port}",
                "",
            ]
        )

    def _command(self) -> list[str]:
        binary = shutil.which("baresip")
        if binary is None:
            raise ServiceError("baresip not found on PATH; apt-get install baresip-core")
        source = self.workdir / "phone.wav"
        self.speech_seconds = phone_wav(self.audio, source, self.hold_seconds)
        self.recordings_dir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "config").write_text(self.config_text(source))
        mode = "auto" if self.answer == "auto" else "manual"
        (self.workdir / "accounts").write_text(
            f"<sip:{self.user}@{self.address}>;regint=0;answermode={mode}\n"
        )
        return [binary, "-f", str(self.workdir)]

    def _ready(self) -> bool:
        if self._ctrl is not None:
            return True
        if "baresip is ready" not in self.log_text():
            return False
        try:
            self._ctrl = socket.create_connection((LOOPBACK, self.ctrl_port), timeout=1.0)
        except OSError:
            return False
        self._ctrl.settimeout(None)
        self._reader = threading.Thread(target=self._read_events, name="baresip-ctrl", daemon=True)
        self._reader.start()
        return True

    def _awaiting(self) -> str:
        return f"for ctrl_tcp on {LOOPBACK}:{self.ctrl_port}"

    def _reach(self) -> dict[str, str]:
        return {"uri": self.uri}

    def _read_events(self) -> None:
        sock, buffer = self._ctrl, bytearray()
        assert sock is not None
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buffer.extend(chunk)
            for payload in _netstrings(buffer):
                self._on_message(json.loads(payload))

    def _on_message(self, message: dict[str, Any]) -> None:
        with self._events_changed:
            if message.get("response"):
                self._responses[str(message.get("token", ""))] = message
            elif message.get("event"):
                event = PhoneEvent(
                    type=str(message.get("type", "")),
                    param=str(message.get("param", "")),
                    peer=str(message.get("peeruri", "")),
                    at=time.monotonic(),
                    raw=message,
                )
                self.events.append(event)
                if event.type == "CALL_INCOMING" and self.answer == "busy":
                    threading.Thread(target=self.hangup, daemon=True).start()
            self._events_changed.notify_all()

    def command(self, name: str, params: str = "", timeout: float = 5.0) -> dict[str, Any]:
        """Runs one long command (``/dial``, ``/hangup``, ``/accept`` ...) and returns the reply."""
        if self._ctrl is None:
            raise ServiceError("the phone is not running")
        with self._events_changed:
            self._token += 1
            token = str(self._token)
        body = json.dumps({"command": name, "params": params, "token": token}).encode()
        self._ctrl.sendall(str(len(body)).encode() + b":" + body + b",")
        deadline = time.monotonic() + timeout
        with self._events_changed:
            while token not in self._responses:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ServiceError(f"baresip did not answer /{name} in {timeout:.0f}s")
                self._events_changed.wait(left)
            return self._responses.pop(token)

    def wait_for(
        self, kind: str | Callable[[PhoneEvent], bool], timeout: float, *, after: int = 0
    ) -> PhoneEvent:
        """The first event (from index ``after``) of type ``kind`` or matching it; raises
        ``TimeoutError``."""

        def match(ev: PhoneEvent) -> bool:
            return ev.type == kind if isinstance(kind, str) else kind(ev)

        deadline = time.monotonic() + timeout
        with self._events_changed:
            while True:
                for ev in self.events[after:]:
                    if match(ev):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0 or not self.running:
                    raise TimeoutError(f"the phone saw no {kind} in {timeout:.1f}s")
                self._events_changed.wait(min(left, 0.5))

    def event_types(self) -> list[str]:
        with self._events_changed:
            return [ev.type for ev in self.events]

    def received_dtmf(self) -> str:
        """The RFC 2833 digits the phone received, in order."""
        with self._events_changed:
            return "".join(ev.param for ev in self.events if ev.type == "CALL_DTMF_START")

    def press(self, digits: str, gap: float = 0.25) -> None:
        """Presses keys during the call: baresip sends each as an RFC 2833 event."""
        if not re.fullmatch(r"[0-9*#A-D]+", digits):
            raise ValueError(f"not DTMF digits: {digits!r}")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for i, digit in enumerate(digits):
                if i:
                    time.sleep(gap)
                sock.sendto(digit.encode(), (LOOPBACK, self.cons_port))

    def dial(self, uri: str) -> None:
        self.command("dial", uri)

    def hangup(self) -> None:
        with contextlib.suppress(ServiceError, OSError):
            self.command("hangup")

    def heard_wav(self) -> Path | None:
        """What the phone heard on its last call (8 kHz mono, t=0 when the call's audio
        started), or None if it never had one."""
        found = sorted(self.recordings_dir.glob("*-dec.wav"), key=lambda p: p.stat().st_mtime)
        return found[-1] if found else None

    def _terminate(self, timeout: float) -> None:
        if self._ctrl is not None:
            with contextlib.suppress(OSError):
                self._ctrl.close()
            self._ctrl = None
        super()._terminate(timeout)
