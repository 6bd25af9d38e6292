"""Answering machine detection on real outbound calls: a worker process takes the job, the
callee is a room participant playing a labelled recording from ``fixtures/amd`` (in
production a SIP participant, listened to once ``sip.callStatus`` is ``active``), and
the worker's AMD verdict routes the call: voicemail after the beep, greet a human, press
keys in an IVR, hang up on a carrier announcement.

The four calls run one after the other on a worker of this module. What the callee
heard is judged on the audio it received (speech onsets on the caller timeline, which
is the recording's own); why the call went that way comes from the post-call report
(delivered to a local webhook receiver) and the worker's log. The agent's LLM is a
scripted OpenAI-compatible server (``custom`` endpoint), so navigation presses a known
key.

Fixture choice: the offline session STT (open-vocabulary pocketsphinx) turns 8 kHz
telephone speech into nonsense, so the voicemail, human and hangup calls use recordings
whose verdict the audio alone decides (a beep after a long greeting, a short greeting
then silence, the special information tone). An IVR menu can only be told apart from a
voicemail by its words ("press one"): that call's STT is the OpenAI transcription
endpoint of the local server, backed by the AMD phrase transcriber (``pipelines.amd.phrase_lm``),
as a cloud STT would give the words.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from livekit import rtc

from pipelines.amd import phrase_transcriber
from pipelines.audio import Float32Array, read_wav, rms_dbfs
from pipelines.loopback import OpenAIServer, ScriptedReply, ToolCall
from tests.fakes.phone_agent import assert_greeted_with
from worker.dev import CallRecording, run_caller
from worker.dev.services import LiveKitEndpoint, WorkerProcess
from worker.settings import REPO_ROOT

pytestmark = pytest.mark.integration

FIXTURES = REPO_ROOT / "fixtures"
AMD_AUDIO = FIXTURES / "amd"
MANIFEST: dict[str, dict[str, Any]] = {
    e["file"].removesuffix(".wav"): e for e in json.loads((AMD_AUDIO / "manifest.json").read_text())
}
CONTROL_PLANE_DIR = FIXTURES / "control_plane"
SETTER: dict[str, Any] = json.loads(
    (CONTROL_PLANE_DIR / "agents" / "agent_01JC0APPTSETTER00000000000.json").read_text()
)
VARIABLES = {"patientName": "Jordan", "appointmentDate": "Friday"}
FIRST_MESSAGE = "Hi Jordan, this is Ava from Acme Dental. Is now a good time?"
VOICEMAIL_MESSAGE: str = SETTER["amd"]["voicemailMessage"]
DIGITS = "2"
"""What the scripted navigator presses."""
WEBHOOK_SECRET = "amd-calls-test-secret"

VOICEMAIL = "vm_beep_00"
"""A voicemail greeting, then a beep (times from the manifest; the beep end is measured).
vm_beep_01 is a hard case the offline classifier calls human: see the AMD benchmark."""
HUMAN = "human_short_01"
"""'Hello.' 0.39-0.82 s, then silence."""
IVR = "ivr_02"
"""'Thanks for calling City Dental.' (2.1 s: longer than any human answer) then menu
options with short gaps. ivr_00's 1.8 s opening sentence followed by a 0.5 s gap can be
heard as a short human greeting when the line adds a little more silence."""
UNAVAILABLE = "not_available_00"
"""Special information tone, then 'The person you are calling is not available.'"""

GREETING_WITHIN = 1.5
"""Seconds after the end of a human's greeting by which the first message must start."""
EARLY_MARGIN = 0.2
"""Seconds of agent speech a machine may be heard to receive beyond what the report says
played of a first message started on a provisional ``human`` and stopped (frame edges)."""


def early_played(amd: dict[str, Any]) -> float:
    """Seconds of the first message played on a provisional ``human`` the verdict (or the
    greeting going on) overturned; 0 without one."""
    early = amd.get("provisional")
    if early is None:
        return 0.0
    assert early["overturned"] and (early["withdrawn_at"] is not None or early["cut"]), amd
    return float(early["played_seconds"])


REPORT_WAIT = 15.0
CONCURRENT_CALLS = 1
"""Calls placed at once. One at a time (~80 s for the four): on a shared 2-core box,
concurrent calls starve the job processes and the received audio degrades (speech read
longer than it is, a beep read as speech), which changes verdicts."""


def beep_end(name: str) -> float:
    """Seconds into the recording at which its beep ends: the first 10 ms frame from
    ``beep_at`` on below -30 dBFS (the generator's beeps are -16..-6 dBFS, its line noise
    -44 dBFS)."""
    audio = read_wav(AMD_AUDIO / MANIFEST[name]["file"])
    frame = audio.sample_rate // 100
    i = round(float(MANIFEST[name]["beep_at"]) * audio.sample_rate)
    while i + frame <= len(audio.samples) and rms_dbfs(audio.samples[i : i + frame]) > -30.0:
        i += frame
    return i / audio.sample_rate


def agent_record(*, stt: str, actions: dict[str, str] | None = None) -> dict[str, Any]:
    """The appointment setter with its AMD config, talking to the scripted LLM server
    (``llm_base_url`` filled in per run) and reporting to the local receiver."""
    record: dict[str, Any] = json.loads(json.dumps(SETTER))
    record["amd"]["actions"] = {**record["amd"]["actions"], **(actions or {})}
    record["allowed_providers"] = {"stt": [stt], "llm": ["custom"], "tts": ["local"]}
    record["webhook_secret"] = WEBHOOK_SECRET
    return record


def navigator_script(body: dict[str, Any]) -> str | ScriptedReply:
    """Presses ``DIGITS`` once when the ``send_dtmf`` tool is offered, then stays quiet."""
    offered = {t.get("function", {}).get("name") for t in body.get("tools") or []}
    pressed = any(m.get("role") == "tool" for m in body["messages"])
    if "send_dtmf" in offered and not pressed:
        return ScriptedReply(tool_calls=(ToolCall("send_dtmf", {"digits": DIGITS}),))
    return "" if "send_dtmf" in offered else "Great."


class PhraseSTT:
    """The AMD phrase transcriber behind the server's ``/v1/audio/transcriptions``, in a
    child process: pocketsphinx holds the GIL while it decodes (a 0.15 s segment stalled
    this process's event loop 86 ms), and this process also plays the callee, whose
    audio must not stall: a gap reads as the callee's silence (an IVR menu's first
    sentence then looked like a short human answer on a loaded CI machine)."""

    def __init__(self) -> None:
        self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))

    def transcribe(self, samples: Float32Array, sample_rate: int) -> str:
        return self._pool.submit(phrase_transcriber, samples, sample_rate).result()

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)


@dataclass
class AMDCall:
    """One finished call and everything said about it."""

    fixture: str
    recording: CallRecording | None = None
    error: BaseException | None = None
    report: dict[str, Any] | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)
    dtmf: list[tuple[float, str]] = field(default_factory=list)
    """``(time.time(), digit)`` of every DTMF the callee received (what a SIP callee's
    phone would get)."""

    @property
    def rec(self) -> CallRecording:
        if self.error is not None:
            raise self.error
        assert self.recording is not None
        return self.recording

    @property
    def amd_event(self) -> dict[str, Any]:
        assert self.report is not None, f"{self.rec.room_name}: no call report received"
        events: list[dict[str, Any]] = [
            e["data"] for e in self.report["events"] if e["type"] == "amd"
        ]
        assert len(events) == 1, f"{self.rec.room_name}: amd events {events}"
        return events[0]

    def verdict_logged(self) -> str:
        lines = [str(r["message"]) for r in self.logs if r["message"].startswith("amd verdict")]
        assert len(lines) == 1, f"{self.rec.room_name}: amd log lines {lines}"
        return lines[0]

    def timeline(self) -> str:
        rec = self.rec
        rows = [f"{self.fixture} in {rec.room_name}: onsets {rec.speech_onsets()}"]
        rows += [
            f"  {rec.rel(e['at']):7.2f} {e['role']:>9}: {e['text']!r}" for e in rec.turn_events
        ]
        rows += [f"  {rec.rel(at):7.2f}      dtmf: {digit}" for at, digit in self.dtmf]
        if rec.agent_left_at is not None:
            rows.append(f"  {rec.rel(rec.agent_left_at):7.2f} agent left")
        if rec.caller_left_at is not None:
            rows.append(f"  {rec.rel(rec.caller_left_at):7.2f} caller left")
        if self.report is not None:
            rows.append(f"  report: end_reason {self.report['end_reason']!r}")
            rows += [f"  event {e['type']}: {e['data']}" for e in self.report["events"]]
        return "\n".join(rows)


async def _run_calls(livekit: LiveKitEndpoint, workdir: Path) -> dict[str, AMDCall]:
    reports: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        reports.append(await request.json())
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/report", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    stt = PhraseSTT()
    async with contextlib.AsyncExitStack() as closing:
        closing.callback(stt.close)
        server = await closing.enter_async_context(
            OpenAIServer(reply=navigator_script, stt_engine=stt)
        )
        worker = WorkerProcess(
            livekit,
            workdir=workdir,
            control_plane_url=f"file://{CONTROL_PLANE_DIR}",
            extra_env={
                "NUM_IDLE_PROCESSES": "4",
                "LOG_JSON": "true",
                "OFFLINE_PROVIDERS": "true",
                "OPENAI_API_KEY": "sk-local",
                "OPENAI_BASE_URL": f"{server.url}/v1",
            },
        )
        await worker.astart()
        try:
            calls = {
                VOICEMAIL: (agent_record(stt="local"), 15.0),
                HUMAN: (agent_record(stt="local"), 5.0),
                IVR: (
                    agent_record(
                        stt="openai:gpt-4o-transcribe",
                        # A menu whose options come without a pause long enough for the
                        # STT to deliver "press 1" before the deadline is classed by its
                        # length (machine-vm); both machine verdicts navigate here, so the
                        # test is about the navigator, not about that race.
                        actions={"machine-ivr": "navigate", "machine-vm": "navigate"},
                    ),
                    4.0,
                ),
                UNAVAILABLE: (agent_record(stt="local"), 6.0),
            }

            async def one(name: str, agent: dict[str, Any], tail: float) -> AMDCall:
                agent["llm_base_url"] = f"{server.url}/v1"
                agent["webhook_url"] = f"http://127.0.0.1:{port}/report"
                metadata = {"agent": agent, "variables": VARIABLES, "direction": "outbound"}
                call = AMDCall(name)

                def on_dtmf(ev: rtc.SipDTMF) -> None:
                    call.dtmf.append((time.time(), ev.digit))

                try:
                    call.recording = await run_caller(
                        livekit,
                        worker.agent_name,
                        metadata,
                        read_wav(AMD_AUDIO / MANIFEST[name]["file"]),
                        tail_seconds=tail,
                        room_events={"sip_dtmf_received": on_dtmf},
                    )
                except Exception as exc:  # each test re-raises its own call's failure
                    call.error = exc
                return call

            gate = asyncio.Semaphore(CONCURRENT_CALLS)

            async def gated(name: str, agent: dict[str, Any], tail: float) -> AMDCall:
                async with gate:
                    return await one(name, agent, tail)

            done = await asyncio.gather(*(gated(n, a, t) for n, (a, t) in calls.items()))
            deadline = time.monotonic() + REPORT_WAIT
            rooms = {c.recording.room_name for c in done if c.recording is not None}
            while {r.get("room_name") for r in reports} < rooms and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
        finally:
            await worker.astop()
    await runner.cleanup()
    records = worker.log_records()
    for call in done:
        if call.recording is None:
            continue
        room = call.recording.room_name
        call.report = next((r for r in reports if r.get("room_name") == room), None)
        call.logs = [r for r in records if r.get("room") == room]
        with contextlib.suppress(AssertionError):
            print(call.timeline())
    return {c.fixture: c for c in done}


@pytest.fixture(scope="module")
def amd_calls(
    livekit: LiveKitEndpoint, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, AMDCall]]:
    """The four calls, on a worker of their own (its STT endpoint is the
    local OpenAI-compatible server); each test judges one."""
    yield asyncio.run(_run_calls(livekit, tmp_path_factory.mktemp("amd-worker")))


def test_voicemail_message_after_the_beep_then_hangup(amd_calls: dict[str, AMDCall]) -> None:
    call = amd_calls[VOICEMAIL]
    rec, truth = call.rec, MANIFEST[VOICEMAIL]
    print(call.timeline())
    amd = call.amd_event
    assert (amd["category"], amd["action"]) == ("machine-vm", "voicemail"), amd
    # The verdict's times run on the AMD stream's clock, which starts at subscription,
    # before the callee's first packet: compare them with each other, not with the manifest.
    assert amd["beep_at"] is not None and amd["reason"].startswith("beep at"), amd
    assert call.verdict_logged().startswith("amd verdict machine-vm -> voicemail"), call.logs

    # Silent through the greeting and the whole beep but for the start of a first message
    # on a provisional "human" at a pause, stopped as the greeting went on; the message
    # starts after the beep ended.
    beep_ended = beep_end(VOICEMAIL)
    assert 0.25 <= beep_ended - truth["beep_at"] <= 1.2, beep_ended  # the generator's range
    early = early_played(amd)
    assert rec.speech_seconds(-60.0, beep_ended) <= early + EARLY_MARGIN, call.timeline()
    onsets = rec.speech_onsets()
    before = [t for t in onsets if t <= beep_ended]
    assert len(before) <= (1 if early else 0), f"beep ended at {beep_ended} s\n{call.timeline()}"
    assert onsets[len(before) :], call.timeline()
    said = [t["text"] for t in rec.agent_turns()]
    assert said[-1:] == [VOICEMAIL_MESSAGE], said
    assert all(FIRST_MESSAGE.startswith(t) and t != FIRST_MESSAGE for t in said[:-1]), said
    assert rec.speech_seconds(beep_ended) >= 3.0, call.timeline()

    # Then the agent hung up by itself, the callee still on the line.
    assert rec.agent_left_at is not None and rec.caller_left_at is not None
    assert rec.agent_left_at < rec.caller_left_at, call.timeline()
    assert call.report is not None and call.report["end_reason"] == "amd: voicemail left"


def test_human_is_greeted_with_the_first_message(amd_calls: dict[str, AMDCall]) -> None:
    call = amd_calls[HUMAN]
    rec, truth = call.rec, MANIFEST[HUMAN]
    print(call.timeline())
    amd = call.amd_event
    assert (amd["category"], amd["action"]) == ("human", "continue"), amd
    assert call.verdict_logged().startswith("amd verdict human -> continue")

    onsets = rec.speech_onsets()
    assert onsets, call.timeline()
    assert truth["greeting_end"] <= onsets[0] <= truth["greeting_end"] + GREETING_WITHIN, (
        f"first message at {onsets[0]:.2f} s, greeting ended at {truth['greeting_end']} s"
    )
    said = [t["text"] for t in rec.agent_turns()]
    assert call.report is not None
    assert_greeted_with(said, call.report, FIRST_MESSAGE)


def test_ivr_menu_is_navigated_with_dtmf(amd_calls: dict[str, AMDCall]) -> None:
    call = amd_calls[IVR]
    rec = call.rec
    print(call.timeline())
    amd = call.amd_event
    # Never "human": the opening sentence alone is longer than any human answer.
    assert amd["category"] in ("machine-ivr", "machine-vm") and amd["action"] == "navigate", amd
    assert call.verdict_logged().startswith(f"amd verdict {amd['category']} -> navigate")

    assert [digit for _, digit in call.dtmf] == list(DIGITS), call.timeline()
    assert call.report is not None
    tools = [e["data"] for e in call.report["events"] if e["type"] == "tool_call"]
    assert tools == [{"tool": "send_dtmf", "ok": True, "digits": DIGITS}], tools
    # The navigator presses keys; it does not talk to the machine (but for the start of a
    # first message on a provisional "human" at a pause, stopped as the menu went on).
    assert rec.speech_seconds(-60.0) <= early_played(amd) + EARLY_MARGIN, call.timeline()


def test_unavailable_line_is_hung_up_without_a_word(amd_calls: dict[str, AMDCall]) -> None:
    call = amd_calls[UNAVAILABLE]
    rec = call.rec
    print(call.timeline())
    amd = call.amd_event
    assert (amd["category"], amd["action"]) == ("machine-unavailable", "hangup"), amd
    assert call.verdict_logged().startswith("amd verdict machine-unavailable -> hangup")

    assert rec.speech_seconds(-60.0) == 0.0, call.timeline()
    assert not rec.agent_turns(), rec.agent_turns()
    assert rec.agent_left_at is not None and rec.caller_left_at is not None
    assert rec.agent_left_at < rec.caller_left_at, call.timeline()
    # The tones end 1.0 s into the recording: hung up within seconds, mid-announcement.
    assert rec.rel(rec.agent_left_at) <= 4.0, call.timeline()
    assert call.report is not None and call.report["end_reason"] == "amd: machine-unavailable"
