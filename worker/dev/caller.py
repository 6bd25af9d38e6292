"""The caller side of a real call in a local LiveKit room: dispatch an agent into a new
room, join as the caller with the LiveKit rtc SDK, play a recording in real time (as is, or
turn by turn like a person), and record everything the agent publishes on one clock
(``CallRecording``). ``voice-worker replay``, the call tests and the call benchmarks call
in through ``run_caller``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import api, rtc

from pipelines.audio import Audio, Float32Array, Int16Array, float_to_int16, int16_to_float
from worker.call import EVENTS_TOPIC
from worker.dev.services import LiveKitEndpoint

FRAME_MS = 10
AGENT_RATE = 24000
SPEECH_RMS = 0.03
"""RMS (full scale 1.0) above which a received 10 ms frame counts as agent speech: above
a quiet noise bed (``office`` at volume 0.08 peaks at 0.027), below most espeak-ng speech
frames (0.05-0.15)."""


@dataclass
class CallRecording:
    """What the caller side saw, on one clock: seconds since the caller's audio started.
    Wall-clock fields (``*_at``) are ``time.time()`` values; ``rel()`` maps them."""

    room_name: str = ""
    t0: float = 0.0
    agent_frames: list[tuple[float, Float32Array]] = field(default_factory=list)
    transcripts: list[dict[str, Any]] = field(default_factory=list)
    turn_events: list[dict[str, Any]] = field(default_factory=list)
    agent_identity: str | None = None
    agent_joined_at: float | None = None
    agent_left_at: float | None = None
    """When the agent was seen leaving: its disconnect event while the caller was in the
    room, else the first poll of the server's participant list without it."""
    caller_left_at: float | None = None
    caller_turns: list[tuple[float, float]] = field(default_factory=list)
    """Caller-timeline ``(start, end)`` of each turn as played (``run_caller(turns=...)``)."""

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

    def speech_seconds(self, start: float, end: float | None = None) -> float:
        """Seconds of agent speech (frames above ``SPEECH_RMS``) received between two
        caller-timeline times."""
        total = 0.0
        for at, samples in self.agent_frames:
            t = at - self.t0
            inside = t >= start and (end is None or t < end)
            if inside and float(np.sqrt(np.mean(np.square(samples)))) > SPEECH_RMS:
                total += len(samples) / AGENT_RATE
        return round(total, 3)

    def agent_audio_between(self, start: float, end: float | None = None) -> Audio:
        """The received agent frames between two caller-timeline times, back to back."""
        frames = [
            samples
            for at, samples in self.agent_frames
            if at - self.t0 >= start and (end is None or at - self.t0 < end)
        ]
        data = np.concatenate(frames) if frames else np.zeros(0, dtype=np.float32)
        return Audio(data.astype(np.float32), AGENT_RATE)

    def agent_turns(self) -> list[dict[str, Any]]:
        return [e for e in self.turn_events if e.get("role") == "assistant"]

    def agent_spoke_since(self, wall: float) -> Callable[[], bool]:
        """Whether an agent turn finished playing after ``wall`` (a turn event is
        published once its audio has played out)."""
        return lambda: any(e["at"] > wall for e in self.agent_turns())


def _is_agent(kind: int) -> bool:
    return kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT


async def _wait_agents_gone(lkapi: api.LiveKitAPI, room_name: str, timeout: float) -> bool:
    """Polls the server's view of the room until no agent participant is left in it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room_name))
        except api.TwirpError as exc:
            if exc.code == api.TwirpErrorCode.NOT_FOUND:
                return True  # the room itself is gone
            raise
        if not any(p.kind == api.ParticipantInfo.Kind.AGENT for p in listed.participants):
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)


class _Mic:
    """Publishes 10 ms frames paced on the wall clock from ``t0``, so silences are real
    whatever ``capture_frame`` buffers; silence is sent as frames, as a phone line does."""

    def __init__(self, source: rtc.AudioSource, sample_rate: int, t0: float) -> None:
        self.source = source
        self.rate = sample_rate
        self.n = sample_rate * FRAME_MS // 1000
        self.t0 = t0
        self.sent = 0
        self._silence = np.zeros(self.n, dtype=np.int16)

    @property
    def position(self) -> float:
        """Caller-timeline seconds published so far."""
        return self.sent * self.n / self.rate

    async def send(self, frame: Int16Array) -> None:
        await self.source.capture_frame(rtc.AudioFrame(frame.tobytes(), self.rate, 1, self.n))
        self.sent += 1
        delay = self.t0 + self.position - time.time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def play(self, pcm: Int16Array, stop: asyncio.Event) -> None:
        for i in range(0, len(pcm) - self.n + 1, self.n):
            if stop.is_set():
                return
            await self.send(pcm[i : i + self.n])

    async def silence_until(
        self, done: Callable[[], bool], timeout: float, stop: asyncio.Event
    ) -> None:
        deadline = time.monotonic() + timeout
        while not done() and not stop.is_set() and time.monotonic() < deadline:
            await self.send(self._silence)


async def run_caller(
    livekit: LiveKitEndpoint,
    agent_name: str,
    metadata: Mapping[str, Any],
    caller: Audio,
    *,
    tail_seconds: float = 12.0,
    join_timeout: float = 30.0,
    leave_timeout: float = 10.0,
    turns: Sequence[tuple[float, float]] | None = None,
    answer_timeout: float = 30.0,
    pause: float = 0.5,
    caller_queue_ms: int = 50,
    room_events: Mapping[str, Callable[..., Any]] | None = None,
) -> CallRecording:
    """Dispatches the agent into a new room, plays ``caller`` in real time and records.

    Without ``turns`` the recording plays as is: its silences are the caller's patience,
    which is what latency measurements need. With ``turns`` (``(start, end)`` seconds in
    ``caller``) the caller takes turns like a person: lead-in, then before each turn it
    waits in silence until the agent finished speaking (the greeting, then the answer
    to its previous turn; at most ``answer_timeout`` s each) and ``pause`` s more, so a
    slow agent is judged on what it says, not on overlapping the caller. The actual
    turn times land in ``rec.caller_turns``.

    The caller hangs up after ``tail_seconds`` more listening, or as soon as the agent
    leaves (the last agent: one that took the call over from a lost worker keeps it up);
    then the server's participant list is watched for up to ``leave_timeout`` seconds to
    time the agent's own departure."""
    room_name = f"call-{secrets.token_hex(4)}"
    rec = CallRecording(room_name=room_name)
    lkapi = livekit.client()
    room = rtc.Room()
    agent_ready = asyncio.Event()
    agent_gone = asyncio.Event()
    tasks: set[asyncio.Task[Any]] = set()

    async def record(track: rtc.Track) -> None:
        stream = rtc.AudioStream(track, sample_rate=AGENT_RATE, num_channels=1)
        try:
            async for ev in stream:
                pcm = np.frombuffer(ev.frame.data, dtype=np.int16)
                rec.agent_frames.append((time.time(), int16_to_float(pcm.copy())))
        finally:
            await stream.aclose()

    def spawn(coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def on_track(track: rtc.Track, _pub: Any, participant: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            rec.agent_joined_at = time.time()
            rec.agent_identity = participant.identity
            spawn(record(track))
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
        # An agent that took the call over from a lost one keeps the call up.
        others = [
            p
            for p in room.remote_participants.values()
            if _is_agent(p.kind) and p.identity != participant.identity
        ]
        if _is_agent(participant.kind) and not others:
            rec.agent_left_at = time.time()
            agent_gone.set()

    caller_tracks: set[str] = set()
    room.on("track_subscribed", on_track)
    for event, handler in (room_events or {}).items():
        room.on(event, handler)  # type: ignore[arg-type]  # e.g. "sip_dtmf_received"
    room.on("data_received", on_data)
    room.on("participant_disconnected", on_left)
    room.register_text_stream_handler("lk.transcription", lambda r, who: spawn(on_text(r, who)))
    try:
        await lkapi.room.create_room(api.CreateRoomRequest(name=room_name))
        await lkapi.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(
                agent_name=agent_name, room=room_name, metadata=json.dumps(dict(metadata))
            )
        )
        token = (
            api.AccessToken(livekit.api_key, livekit.api_secret)
            .with_identity("caller")
            .with_name("Caller")
            .with_grants(api.VideoGrants(room_join=True, room=room_name))
            .to_jwt()
        )
        await room.connect(livekit.url, token)
        # A short send queue: the default second of buffering puts the caller ~150 ms
        # behind its own clock, which latency figures would blame on the agent.
        source = rtc.AudioSource(caller.sample_rate, 1, queue_size_ms=caller_queue_ms)
        track = rtc.LocalAudioTrack.create_audio_track("caller-mic", source)
        pub = await room.local_participant.publish_track(
            # No DTX: a phone leg sends audio continuously, and the receiver's comfort
            # noise during DTX gaps reads as speech to a VAD.
            track,
            rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE, dtx=False),
        )
        caller_tracks.add(pub.sid)
        try:
            await asyncio.wait_for(agent_ready.wait(), join_timeout)
        except TimeoutError:
            raise TimeoutError(
                f"no agent audio track in room {room_name} within {join_timeout:.0f} s of dispatch"
            ) from None

        pcm = float_to_int16(caller.samples)
        rec.t0 = time.time()
        mic = _Mic(source, caller.sample_rate, rec.t0)
        if turns is None:
            await mic.play(pcm, agent_gone)
        else:
            for i, (start, end) in enumerate(turns):
                if i == 0:  # the lead-in plays as recorded, then the greeting is awaited
                    await mic.play(pcm[: int(start * mic.rate)], agent_gone)
                    await mic.silence_until(rec.agent_spoke_since(0.0), answer_timeout, agent_gone)
                await mic.silence_until(lambda: False, pause, agent_gone)
                began = mic.position
                await mic.play(pcm[int(start * mic.rate) : int(end * mic.rate)], agent_gone)
                rec.caller_turns.append((round(began, 3), round(mic.position, 3)))
                answer = rec.agent_spoke_since(rec.t0 + mic.position)
                await mic.silence_until(answer, answer_timeout, agent_gone)
        await mic.silence_until(lambda: False, tail_seconds, agent_gone)
    finally:
        await room.disconnect()
        rec.caller_left_at = time.time()
        try:
            if not agent_gone.is_set() and await _wait_agents_gone(lkapi, room_name, leave_timeout):
                rec.agent_left_at = time.time()
        finally:
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await lkapi.aclose()
    return rec


def turn_metrics(
    rec: CallRecording, caller_segments: list[tuple[float, float]]
) -> list[dict[str, Any]]:
    """Per caller turn: when it ended (caller clock), and when each stage answered."""
    users = [e for e in rec.turn_events if e["role"] == "user"]
    agents = [e for e in rec.turn_events if e["role"] == "assistant"]
    onsets = rec.speech_onsets()
    rows = []
    for i, (_start, end) in enumerate(caller_segments):
        row: dict[str, Any] = {"turn": i + 1, "caller_end_of_speech": end}
        user = next(
            (
                u
                for u in users
                if rec.rel(u["at"]) >= end - 0.5
                and all(rec.rel(u["at"]) < s for s, _ in caller_segments[i + 1 :])
            ),
            None,
        )
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
                        row["tts_first_byte"] = rec.rel(
                            eot + m2["llm_node_ttft"] + m2["tts_node_ttfb"]
                        )
                if "started_speaking_at" in m2:
                    row["agent_started_speaking"] = rec.rel(m2["started_speaking_at"])
        heard = next((t for t in onsets if t > end), None)
        if heard is not None:
            row["first_agent_audio"] = heard
            row["response_latency"] = round(heard - end, 3)
        rows.append(row)
    return rows
