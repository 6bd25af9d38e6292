"""``voice-worker replay``: one real call in a local LiveKit room, caller played from a WAV.

Starts (or connects to) a LiveKit server, the offline LLM if the plan needs it, and a
worker process; creates a room, dispatches the agent, joins as the caller with the
LiveKit rtc SDK, publishes the WAV in real time, records everything the agent publishes
and writes ``agent.wav``, ``transcript.json`` and ``metrics.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from livekit import api, rtc

from pipelines.audio import Audio, Float32Array, float_to_int16, int16_to_float, read_wav, write_wav
from pipelines.vad import detect_segments

from .entrypoint import EVENTS_TOPIC
from .services import LiveKitServer, LlamaServer, _http_ok, free_port
from .settings import Settings

FRAME_MS = 10
AGENT_RATE = 24000
SPEECH_RMS = 0.01
"""RMS (full scale 1.0) above which a received 10 ms frame counts as agent speech."""


@dataclass
class CallRecording:
    """What the caller side saw, on one clock: seconds since the caller's audio started."""

    t0: float = 0.0
    agent_frames: list[tuple[float, Float32Array]] = field(default_factory=list)
    transcripts: list[dict[str, Any]] = field(default_factory=list)
    turn_events: list[dict[str, Any]] = field(default_factory=list)
    agent_joined_at: float | None = None
    agent_left_at: float | None = None

    def rel(self, wall: float) -> float:
        return round(wall - self.t0, 3)

    def agent_audio(self) -> Audio:
        """Received frames laid on the caller's timeline; gaps become silence."""
        out: list[Float32Array] = []
        pos = 0
        for at, samples in self.agent_frames:
            start = int(max(0.0, at - self.t0) * AGENT_RATE) - len(samples)
            if start > pos + AGENT_RATE // 20:
                out.append(np.zeros(start - pos, dtype=np.float32))
                pos = start
            out.append(samples)
            pos += len(samples)
        data = np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
        return Audio(data.astype(np.float32), AGENT_RATE)

    def speech_onsets(self) -> list[float]:
        """Caller-timeline times at which agent speech starts after >= 300 ms of quiet."""
        onsets: list[float] = []
        last_loud = -1e9
        for at, samples in self.agent_frames:
            loud = float(np.sqrt(np.mean(np.square(samples)))) > SPEECH_RMS
            t = at - self.t0
            if loud and t - last_loud > 0.3:
                onsets.append(round(t - len(samples) / AGENT_RATE, 3))
            if loud:
                last_loud = t
        return onsets


@contextlib.asynccontextmanager
async def local_stack(
    settings: Settings, *, livekit_url: str | None, need_llm: bool, workdir: Path,
    extra_env: Mapping[str, str] | None = None,
) -> AsyncIterator[tuple[str, str, str, str]]:
    """LiveKit server (unless ``livekit_url``), llama.cpp (if needed and not running)
    and one worker process; yields ``(url, key, secret, agent_name)``."""
    async with contextlib.AsyncExitStack() as stack:
        if livekit_url:
            url, key = livekit_url, settings.livekit_api_key
            secret = settings.livekit_api_secret.get_secret_value()
        else:
            lk = await stack.enter_async_context(LiveKitServer())
            url, key, secret = lk.url, lk.api_key, lk.api_secret
        env = dict(os.environ)
        if need_llm and not _http_ok(settings.local_llm_base_url + "/models"):
            port = int(settings.local_llm_base_url.rsplit(":", 1)[1].split("/")[0])
            llama = await stack.enter_async_context(LlamaServer(port=port))
            env["LOCAL_LLM_BASE_URL"] = llama.base_url
        agent_name = f"replay-{secrets.token_hex(4)}"
        env.update(LIVEKIT_URL=url, LIVEKIT_API_KEY=key, LIVEKIT_API_SECRET=secret,
                   AGENT_NAME=agent_name, WORKER_HTTP_PORT=str(free_port()),
                   METRICS_PORT=str(free_port()), SPOOL_DIR=str(workdir / "spool"),
                   CONTROL_PLANE_URL=settings.control_plane_url, **(extra_env or {}))
        log = (workdir / "worker.log").open("w")
        proc = subprocess.Popen([sys.executable, "-m", "worker", "start"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            await wait_registered(workdir / "worker.log", proc)
            yield url, key, secret, agent_name
        finally:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 15)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()


async def wait_registered(log: Path, proc: subprocess.Popen[bytes], timeout: float = 60.0
                          ) -> None:
    """Dispatching before the worker registered would leave the room without an agent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if '"registered worker"' in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}; see {log}")
        await asyncio.sleep(0.2)
    raise RuntimeError(f"worker did not register within {timeout:.0f} s; see {log}")


async def run_caller(
    url: str, key: str, secret: str, agent_name: str, metadata: dict[str, Any],
    caller: Audio, *, tail_seconds: float = 12.0, join_timeout: float = 30.0,
) -> CallRecording:
    """Dispatches the agent into a new room, plays ``caller`` in real time, records."""
    room_name = f"call-{secrets.token_hex(4)}"
    rec = CallRecording()
    lkapi = api.LiveKitAPI(url.replace("ws://", "http://"), key, secret)
    room = rtc.Room()
    agent_ready = asyncio.Event()
    agent_gone = asyncio.Event()
    tasks: set[asyncio.Task[Any]] = set()

    async def record(track: rtc.Track) -> None:
        stream = rtc.AudioStream(track, sample_rate=AGENT_RATE, num_channels=1)
        async for ev in stream:
            pcm = np.frombuffer(ev.frame.data, dtype=np.int16)
            rec.agent_frames.append((time.time(), int16_to_float(pcm.copy())))

    def on_track(track: rtc.Track, _pub: Any, participant: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            rec.agent_joined_at = time.time()
            tasks.add(asyncio.create_task(record(track)))
            agent_ready.set()

    def on_data(packet: rtc.DataPacket) -> None:
        if packet.topic == EVENTS_TOPIC:
            rec.turn_events.append(json.loads(packet.data))

    async def on_text(reader: rtc.TextStreamReader, identity: str) -> None:
        text = await reader.read_all()
        attrs = reader.info.attributes or {}
        if attrs.get("lk.transcription_final") == "true" and text.strip():
            who = "caller" if attrs.get("lk.transcribed_track_id") in caller_tracks else "agent"
            rec.transcripts.append({"role": who, "text": text.strip(), "at": time.time()})

    def on_left(participant: rtc.RemoteParticipant) -> None:
        rec.agent_left_at = time.time()
        agent_gone.set()

    caller_tracks: set[str] = set()
    room.on("track_subscribed", on_track)
    room.on("data_received", on_data)
    room.on("participant_disconnected", on_left)
    room.register_text_stream_handler(
        "lk.transcription", lambda r, who: tasks.add(asyncio.create_task(on_text(r, who))))
    try:
        await lkapi.room.create_room(api.CreateRoomRequest(name=room_name))
        await lkapi.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(
            agent_name=agent_name, room=room_name, metadata=json.dumps(metadata)))
        token = (api.AccessToken(key, secret).with_identity("caller").with_name("Caller")
                 .with_grants(api.VideoGrants(room_join=True, room=room_name)).to_jwt())
        await room.connect(url, token)
        source = rtc.AudioSource(caller.sample_rate, 1)
        track = rtc.LocalAudioTrack.create_audio_track("caller-mic", source)
        pub = await room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        caller_tracks.add(pub.sid)
        await asyncio.wait_for(agent_ready.wait(), join_timeout)

        n = caller.sample_rate * FRAME_MS // 1000
        pcm = float_to_int16(caller.samples)
        rec.t0 = time.time()
        for i in range(0, len(pcm) - n + 1, n):
            frame = rtc.AudioFrame(pcm[i:i + n].tobytes(), caller.sample_rate, 1, n)
            await source.capture_frame(frame)
            # Pace on the wall clock so turn gaps are real, whatever capture_frame buffers.
            delay = rec.t0 + (i + n) / caller.sample_rate - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
        await asyncio.sleep(tail_seconds)
    finally:
        await room.disconnect()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(agent_gone.wait(), 5.0)
        for t in tasks:
            t.cancel()
        await lkapi.aclose()
    return rec


def turn_metrics(rec: CallRecording, caller_segments: list[tuple[float, float]]
                 ) -> list[dict[str, Any]]:
    """Per caller turn: when it ended (caller clock), and when each stage answered."""
    users = [e for e in rec.turn_events if e["role"] == "user"]
    agents = [e for e in rec.turn_events if e["role"] == "assistant"]
    onsets = rec.speech_onsets()
    rows = []
    for i, (_start, end) in enumerate(caller_segments):
        row: dict[str, Any] = {"turn": i + 1, "caller_end_of_speech": end}
        user = next((u for u in users if rec.rel(u["at"]) >= end - 0.5
                     and all(rec.rel(u["at"]) < s for s, _ in caller_segments[i + 1:])), None)
        if user:
            m = user["metrics"]
            stopped = m.get("stopped_speaking_at")
            row["caller_text_heard"] = user["text"]
            if stopped:
                row["vad_end_of_speech"] = rec.rel(stopped)
                row["stt_final"] = rec.rel(stopped + m.get("transcription_delay", 0.0))
                row["end_of_turn_decided"] = rec.rel(stopped + m.get("end_of_turn_delay", 0.0))
            reply = next((a for a in agents if a["at"] >= user["at"]), None)
            if reply and stopped:
                m2 = reply["metrics"]
                row["agent_text"] = reply["text"]
                eot = stopped + m.get("end_of_turn_delay", 0.0)
                if "llm_node_ttft" in m2:
                    row["llm_first_token"] = rec.rel(eot + m2["llm_node_ttft"])
                    if "tts_node_ttfb" in m2:
                        row["tts_first_byte"] = rec.rel(eot + m2["llm_node_ttft"]
                                                        + m2["tts_node_ttfb"])
                if "started_speaking_at" in m2:
                    row["agent_started_speaking"] = rec.rel(m2["started_speaking_at"])
        heard = next((t for t in onsets if t > end), None)
        if heard is not None:
            row["first_agent_audio"] = heard
            row["response_latency"] = round(heard - end, 3)
        rows.append(row)
    return rows


async def replay(
    agent: str, audio_path: Path, out: Path, *, dispatch: Mapping[str, Any] | None = None,
    livekit_url: str | None = None, tail_seconds: float = 12.0,
    extra_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Runs one call and writes its artifacts; returns the summary."""
    from .dispatch import parse_dispatch
    from .loader import load_call, open_cached, read_json_file

    settings = Settings()
    caller = read_wav(audio_path)
    out.mkdir(parents=True, exist_ok=True)
    metadata: dict[str, Any] = dict(dispatch or {})
    path = Path(agent)
    if path.suffix == ".json" or path.exists():
        metadata["agent"] = read_json_file(path)
    else:
        metadata["agentId"] = agent
    cp = open_cached(settings)
    try:  # Resolve here first: a bad config fails fast, before any server starts.
        loaded = await load_call(cp, parse_dispatch(metadata), settings)
    finally:
        await cp.aclose()
    need_llm = loaded.plan.providers["llm"][0].vendor in ("local", "custom")
    async with local_stack(settings, livekit_url=livekit_url, need_llm=need_llm,
                           workdir=out, extra_env=extra_env) as (url, key, secret, name):
        rec = await run_caller(url, key, secret, name, metadata, caller,
                               tail_seconds=tail_seconds)
    write_wav(out / "agent.wav", rec.agent_audio())
    segments = detect_segments(caller)
    transcript = sorted(
        [{"role": "caller" if e["role"] == "user" else "agent", "text": e["text"],
          "at": rec.rel(e["at"])} for e in rec.turn_events],
        key=lambda e: e["at"])
    (out / "transcript.json").write_text(json.dumps(transcript, indent=2) + "\n")
    turns = turn_metrics(rec, segments)
    (out / "metrics.json").write_text(json.dumps({"turns": turns}, indent=2) + "\n")
    return {"out": str(out), "agent_audio_seconds": round(rec.agent_audio().duration, 2),
            "transcript": transcript, "turns": turns}


def summary_text(result: Mapping[str, Any]) -> str:
    lines = [f"call artifacts in {result['out']}"]
    for e in result["transcript"]:
        lines.append(f"  [{e['at']:6.2f}s] {e['role']:>6}: {e['text']}")
    for t in result["turns"]:
        lat = t.get("response_latency")
        lines.append(f"  turn {t['turn']}: response latency "
                     + (f"{lat:.2f}s" if lat is not None else "n/a (no agent audio heard)"))
    return "\n".join(lines)
