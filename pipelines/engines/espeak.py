"""The Debian ``espeak-ng`` CLI as a synchronous TTS engine (``EspeakEngine``) and its voices.

espeak-ng is formant synthesis: robotic, but instant (tens of milliseconds for a
sentence), deterministic and dependency-free, which is what the embedded default and the
tests need. It writes a 22.05 kHz mono 16-bit WAV to stdout; the header's sizes are
placeholders (``0x7ffff000``) because it streams, so the parser takes whatever follows
the ``data`` tag.

Voices: any espeak language voice (``en-us``, ``en-gb``) optionally with a variant
(``en-us+f3``), plus a few product-style friendly ids (``ember``, ``alloy``...) mapped to
espeak voices so an agent config written for a cloud vendor still speaks offline.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import struct
import subprocess
from collections.abc import Iterator

from pipelines.audio import Audio, int16_to_float

ESPEAK_BINARY = "espeak-ng"
ESPEAK_SAMPLE_RATE = 22050
"""espeak-ng's native output rate; the LiveKit adapter publishes at this rate."""
BASE_WPM = 175
"""espeak-ng's default words per minute, the speed at ``speaking_rate=1.0``."""
MIN_WPM, MAX_WPM = 80, 450
DEFAULT_VOICE = "en-us"

FRIENDLY_VOICES: dict[str, str] = {
    "ember": "en-us+f2",
    "alloy": "en-us",
    "echo": "en-us+m3",
    "nova": "en-us+f3",
    "shimmer": "en-gb+f4",
    "onyx": "en-gb+m7",
    "fable": "en-gb-x-rp",
    "sage": "en-us+f5",
}
"""Product voice ids (OpenAI/Ember-style names) mapped to espeak voices."""


class EspeakError(RuntimeError):
    """espeak-ng is missing, failed, or produced output that is not a 16-bit mono WAV."""


@functools.cache
def _espeak_path() -> str:
    path = shutil.which(ESPEAK_BINARY)
    if path is None:
        raise EspeakError(f"{ESPEAK_BINARY} not found on PATH (Debian package espeak-ng)")
    return path


def _list_column(args: list[str]) -> list[tuple[str, str]]:
    """(language, file) pairs from ``espeak-ng --voices[=...]``."""
    out = subprocess.run(
        [_espeak_path(), *args], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    rows: list[tuple[str, str]] = []
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 5:
            rows.append((parts[1], parts[4]))
    return rows


@functools.cache
def _languages() -> frozenset[str]:
    # mbrola voices (mb/...) need separately installed diphone data; leave them out.
    return frozenset(
        lang for lang, file in _list_column(["--voices"]) if not file.startswith("mb/")
    )


@functools.cache
def _variants() -> frozenset[str]:
    names: set[str] = set()
    for _, file in _list_column(["--voices=variant"]):
        match = re.fullmatch(r"!v/(\S+)", file)
        if match:
            names.add(match.group(1))
    return frozenset(names)


def voices() -> tuple[str, ...]:
    """Every accepted voice id: friendly ids first, then espeak language voices.

    A language voice also accepts a ``+variant`` suffix (``en-us+f3``); the variants are
    not enumerated here to keep the list readable."""
    return (*sorted(FRIENDLY_VOICES), *sorted(_languages()))


def resolve_voice(voice_id: str) -> str:
    """The espeak ``-v`` argument for a product voice id or an espeak voice name."""
    if voice_id in FRIENDLY_VOICES:
        return FRIENDLY_VOICES[voice_id]
    language, _, variant = voice_id.partition("+")
    if language in _languages() and (not variant or variant in _variants()):
        return voice_id
    examples = ", ".join([*sorted(FRIENDLY_VOICES)[:4], "en-us", "en-gb", "en-us+f3"])
    raise ValueError(
        f"voice_id {voice_id!r} is not an espeak-ng voice; valid examples: {examples} "
        f"(see pipelines.providers.local_tts.voices())"
    )


def words_per_minute(speaking_rate: float) -> int:
    if not speaking_rate > 0:
        raise ValueError(f"speaking_rate must be > 0, got {speaking_rate}")
    return int(min(MAX_WPM, max(MIN_WPM, round(BASE_WPM * speaking_rate))))


def espeak_command(voice: str, speaking_rate: float) -> list[str]:
    """Text goes on stdin (``--stdin``) so a leading ``-`` is never taken as an option."""
    return [
        _espeak_path(),
        "--stdin",
        "--stdout",
        "-v",
        resolve_voice(voice),
        "-s",
        str(words_per_minute(speaking_rate)),
    ]


def parse_wav_header(data: bytes) -> tuple[int, int] | None:
    """(sample_rate, offset of the first PCM byte) once ``data`` holds the whole header,
    ``None`` while more bytes are needed. Chunk sizes after ``data`` are ignored."""
    if len(data) < 12:
        return None
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise EspeakError("espeak-ng output is not a RIFF/WAVE stream")
    pos, rate = 12, 0
    while len(data) >= pos + 8:
        tag, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if tag == b"data":
            if rate == 0:
                raise EspeakError("espeak-ng WAV has no fmt chunk before data")
            return rate, pos + 8
        if len(data) < pos + 8 + size:
            return None
        if tag == b"fmt ":
            fmt, channels, rate, _, _, bits = struct.unpack("<HHIIHH", data[pos + 8 : pos + 24])
            if fmt != 1 or channels != 1 or bits != 16:
                raise EspeakError(f"espeak-ng WAV is fmt={fmt} channels={channels} bits={bits}")
        pos += 8 + size + (size & 1)
    return None


class EspeakEngine:
    """Synchronous espeak-ng synthesis. Stateless and thread-safe: one process per call."""

    def __init__(self, *, voice: str = DEFAULT_VOICE, speaking_rate: float = 1.0) -> None:
        espeak_command(voice, speaking_rate)  # validates both now, not at first use
        self.voice = voice
        self.speaking_rate = speaking_rate

    def synthesize(
        self, text: str, *, voice: str | None = None, speaking_rate: float | None = None
    ) -> Audio:
        cmd = espeak_command(voice or self.voice, speaking_rate or self.speaking_rate)
        try:
            proc = subprocess.run(cmd, input=text.encode(), capture_output=True, timeout=60)
        except subprocess.TimeoutExpired as exc:
            raise EspeakError(f"espeak-ng timed out on {len(text)} characters") from exc
        if proc.returncode != 0:
            raise EspeakError(f"espeak-ng exited {proc.returncode}: {proc.stderr.decode()[:200]}")
        header = parse_wav_header(proc.stdout)
        if header is None:
            raise EspeakError("espeak-ng output ended inside the WAV header")
        rate, offset = header
        pcm = proc.stdout[offset:]
        return Audio(int16_to_float(pcm[: len(pcm) - len(pcm) % 2]), rate)

    def stream(
        self,
        text: str,
        *,
        voice: str | None = None,
        speaking_rate: float | None = None,
        chunk_bytes: int = 4410,
    ) -> Iterator[Audio]:
        """Yields audio as espeak-ng produces it (it writes clause by clause), so the
        first chunk of a long text arrives before the rest is synthesized."""
        cmd = espeak_command(voice or self.voice, speaking_rate or self.speaking_rate)
        with subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        ) as proc:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(text.encode())
            proc.stdin.close()
            buf, header = b"", None
            while chunk := os.read(proc.stdout.fileno(), chunk_bytes):
                buf += chunk
                if header is None:
                    header = parse_wav_header(buf)
                    if header is None:
                        continue
                    buf = buf[header[1] :]
                usable = len(buf) - len(buf) % 2
                if usable:
                    yield Audio(int16_to_float(buf[:usable]), header[0])
                    buf = buf[usable:]
            if proc.wait() != 0:
                raise EspeakError(f"espeak-ng exited {proc.returncode}")
