"""The Go caller (``worker/dev/loadgen``, built into ``.cache/bin/voice-worker-loadgen``):
a load generator for ``bench capacity`` whose CPU per call is a small share of the worker's.

One process runs N callers in N rooms. Each dispatches the agent, joins with a token,
publishes its fixture as pre-encoded Opus (written here with libsndfile) turn by turn like
``worker.dev.caller.run_caller`` (lead-in, greeting awaited, pause, turn, answer awaited),
silence packets in between, and timestamps the agent's RTP packets: it decodes them only
while a reply is awaited, to find the first one above the speech level. Its results come
back as ``PacketRecording`` (a ``CallRecording`` without decoded frames), so the latency
bench's ``turn_rows`` reads them as it reads the Python caller's.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.call import EVENTS_TOPIC
from worker.dev.caller import SPEECH_RMS, CallRecording
from worker.dev.services import CACHE_BIN, LiveKitEndpoint, ServiceError
from worker.settings import REPO_ROOT

if TYPE_CHECKING:
    from worker.dev.bench.stack import CallScript

LOADGEN_SOURCE = REPO_ROOT / "worker" / "dev" / "loadgen"
LOADGEN_BINARY = CACHE_BIN / "voice-worker-loadgen"
LOADGEN_ENV = "VOICE_WORKER_LOADGEN"
"""Path of a loadgen binary to use instead of ``.cache/bin``'s (built there if missing)."""


@dataclass
class PacketRecording(CallRecording):
    """A Go caller's call: agent audio as packets (arrival gaps, first loud packet per
    turn), not decoded frames."""

    onsets: list[float] = field(default_factory=list)
    """Caller-timeline arrival of each turn's first agent packet above ``SPEECH_RMS``."""
    packet_gaps_ms: list[float] = field(default_factory=list)
    """Arrival gaps of consecutive agent RTP packets (20 ms of audio each)."""
    agent_packets: int = 0
    decoded_packets: int = 0

    def speech_onsets(self) -> list[float]:
        return list(self.onsets)


@dataclass
class LoadgenRun:
    """One loadgen process: its calls (a failed call as its error) and its own cost."""

    calls: list[PacketRecording | RuntimeError]
    cpu_seconds: float
    wall_seconds: float
    max_rss_mb: float

    @property
    def cpu_percent(self) -> float:
        """Mean CPU over the run, % of one core."""
        return 100.0 * self.cpu_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0


def _field(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in obj or not isinstance(obj[key], kind):
        raise ValueError(f"loadgen output: {where}.{key} missing or not {kind}")
    return obj[key]


def parse_loadgen_output(text: str) -> LoadgenRun:
    """The loadgen's stdout (one JSON object) as recordings; a clear error naming the
    field when it is not what the loadgen writes."""
    try:
        out = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"loadgen output is not JSON: {exc}") from None
    if not isinstance(out, dict):
        raise ValueError("loadgen output: expected a JSON object")
    num = (int, float)
    calls: list[PacketRecording | RuntimeError] = []
    for i, c in enumerate(_field(out, "calls", list, "output")):
        where = f"calls[{i}]"
        if not isinstance(c, dict):
            raise ValueError(f"loadgen output: {where} is not an object")
        room = _field(c, "room", str, where)
        if c.get("error"):
            calls.append(RuntimeError(f"{room or where}: {c['error']}"))
            continue
        turns = _field(c, "caller_turns", (list, type(None)), where) or []
        if not all(isinstance(t, list) and len(t) == 2 for t in turns):
            raise ValueError(f"loadgen output: {where}.caller_turns must be [start, end] pairs")
        rec = PacketRecording(
            room_name=room,
            t0=float(_field(c, "t0", num, where)),
            turn_events=list(_field(c, "turn_events", (list, type(None)), where) or []),
            agent_identity=c.get("agent_identity") or None,
            agent_joined_at=c.get("agent_joined_at") or None,
            agent_left_at=c.get("agent_left_at") or None,
            caller_turns=[(float(a), float(b)) for a, b in turns],
            onsets=[float(t) for t in _field(c, "onsets", (list, type(None)), where) or []],
            packet_gaps_ms=[float(g) for g in _field(c, "packet_gaps_ms", list, where)],
            agent_packets=int(_field(c, "agent_packets", int, where)),
            decoded_packets=int(_field(c, "decoded_packets", int, where)),
        )
        calls.append(rec)
    return LoadgenRun(
        calls=calls,
        cpu_seconds=float(_field(out, "cpu_seconds", num, "output")),
        wall_seconds=float(_field(out, "wall_seconds", num, "output")),
        max_rss_mb=float(_field(out, "max_rss_mb", num, "output")),
    )


def _sources_newer(binary: Path) -> bool:
    built = binary.stat().st_mtime
    return any(p.stat().st_mtime > built for p in LOADGEN_SOURCE.iterdir() if p.is_file())


def build_loadgen(target: Path | None = None) -> Path:
    """``go build`` of ``worker/dev/loadgen`` (modules pinned by its go.sum; Go's build
    cache under ``.cache/go-build``), when the binary is missing or older than its source."""
    target = target or Path(os.environ.get(LOADGEN_ENV) or LOADGEN_BINARY)
    if target.exists() and not _sources_newer(target):
        return target
    env = {**os.environ, "GOFLAGS": "-mod=readonly -buildvcs=false"}
    env.setdefault("GOCACHE", str(REPO_ROOT / ".cache" / "go-build"))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            ["go", "build", "-trimpath", "-o", str(target), "."],
            cwd=LOADGEN_SOURCE,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
    except FileNotFoundError:
        raise ServiceError("the Go caller needs Go to build (scripts/setup.sh)") from None
    except subprocess.CalledProcessError as exc:
        raise ServiceError(f"building {LOADGEN_SOURCE} failed:\n{exc.stderr[-2000:]}") from None
    return target


def write_caller_audio(scripts: Sequence[CallScript], directory: Path) -> dict[str, Path]:
    """Each script's fixture as Ogg/Opus (libsndfile), once per fixture."""
    import soundfile as sf

    directory.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for s in scripts:
        if s.fixture not in paths:
            path = directory / f"{s.fixture}.opus.ogg"
            sf.write(path, s.audio.samples, s.audio.sample_rate, format="OGG", subtype="OPUS")
            paths[s.fixture] = path
    return paths


async def run_go_callers(
    livekit: LiveKitEndpoint,
    agent_name: str,
    metadata: Mapping[str, Any],
    scripts: Sequence[CallScript],
    *,
    workdir: Path,
    answer_timeout: float = 20.0,
    pause: float = 0.5,
    tail_seconds: float = 1.0,
    join_timeout: float = 60.0,
) -> LoadgenRun:
    """One loadgen process calling ``len(scripts)`` rooms at once; returns when all
    calls have ended."""
    binary = await asyncio.to_thread(build_loadgen)
    audio = await asyncio.to_thread(write_caller_audio, scripts, workdir / "caller-audio")
    config = {
        "url": livekit.url,
        "http_url": livekit.url.replace("ws://", "http://"),
        "api_key": livekit.api_key,
        "agent_name": agent_name,
        "metadata": json.dumps(dict(metadata)),
        "events_topic": EVENTS_TOPIC,
        "speech_rms": SPEECH_RMS,
        "join_timeout_s": join_timeout,
        "answer_timeout_s": answer_timeout,
        "pause_s": pause,
        "tail_s": tail_seconds,
        "calls": [
            {
                "audio": str(audio[s.fixture]),
                "turns": [list(t) for t in s.turns],
                "speech_ends": list(s.speech_ends),
            }
            for s in scripts
        ],
    }
    workdir.mkdir(parents=True, exist_ok=True)
    cfg_path = workdir / f"loadgen-{len(scripts)}.json"
    cfg_path.write_text(json.dumps(config))
    log = workdir / f"loadgen-{len(scripts)}.log"
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            str(binary),
            str(cfg_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            env={**os.environ, "LIVEKIT_API_SECRET": livekit.api_secret},
        )
        try:
            stdout, _ = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-1500:]
        raise ServiceError(f"loadgen exited {proc.returncode} (log {log}):\n{tail}")
    return parse_loadgen_output(stdout.decode())
