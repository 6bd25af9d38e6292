"""The call lifecycle on real calls: a worker process in a local LiveKit room, an agent
whose LLM is a scripted OpenAI-compatible server (the ``custom`` endpoint path, so tool
calls are deterministic) and real HTTP receivers on 127.0.0.1 for tools and webhooks,
which verify every Standard Webhooks signature with the ``standardwebhooks`` package.

Most calls run on one worker per module whose environment carries a value for every
secret setting, so the secrets test can scan everything that worker ever wrote. The
kill, restart and drain tests run their own workers."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from pipelines.audio import Audio, read_wav
from pipelines.loopback import OpenAIServer, ScriptedReply, ToolCall, WireServer
from tests.fakes import Delivery, Receiver
from worker.dev import CallRecording, run_caller
from worker.dev.services import LiveKitEndpoint, WorkerProcess
from worker.plan import DEFAULT_IDLE_REPROMPTS, GOODBYE
from worker.settings import REPO_ROOT

pytestmark = pytest.mark.integration

FIXTURES = REPO_ROOT / "fixtures"
FIRST_MESSAGE = "Hello, you reached the test line."
ANSWER = "Thanks, that is all set."
AGENT_SECRET = f"agent-hook-{secrets.token_hex(12)}"
"""An agent's free-text ``webhook_secret``: its UTF-8 bytes are the HMAC key."""
ORG_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
"""The organization secret (``WEBHOOK_SECRET``), in the spec's ``whsec_`` form."""
LLM_API_KEY = f"sk-custom-{secrets.token_hex(12)}"
WORKER_SECRETS = {
    "DEEPGRAM_API_KEY": f"dg{secrets.token_hex(6)}",
    "OPENAI_API_KEY": f"sk-{secrets.token_hex(12)}",
    "ELEVEN_API_KEY": f"el-{secrets.token_hex(12)}",
    "CONTROL_PLANE_API_KEY": f"cp-{secrets.token_hex(12)}",
    "WEBHOOK_SECRET": ORG_SECRET,
}


# ---------------------------------------------------------------- receivers


def agent_key() -> bytes:
    """What a receiver passes to ``standardwebhooks.Webhook`` for the agent's secret."""
    return AGENT_SECRET.encode()


# ---------------------------------------------------------------- agents and callers

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_agent_id() -> str:
    return "agent_" + "".join(secrets.choice(_CROCKFORD) for _ in range(26))


def agent_record(llm: WireServer, hooks: Receiver | None, **fields: Any) -> dict[str, Any]:
    """An agent on the offline STT/TTS with the scripted server as its ``custom`` LLM;
    ``hooks`` receives its status and post-call webhooks."""
    record: dict[str, Any] = {
        "id": new_agent_id(),
        "name": "Lifecycle test",
        "systemPrompt": "You are a test agent. Answer in one short sentence.",
        "firstMessage": FIRST_MESSAGE,
        "llm_provider": "custom",
        "llm_model": "scripted",
        "llm_base_url": f"{llm.url}/v1",
        "stackPreferences": {
            "allowedProviders": {"stt": ["local"], "llm": ["custom"], "tts": ["local"]}
        },
        "inactivity_timeout_seconds": 60,
        "webhook_secret": AGENT_SECRET,
        "metadata": {"clinic": "Test Clinic"},
    }
    if hooks is not None:
        record["webhooks"] = {
            "status": {"url": hooks.url("/status")},
            "postCall": {"url": hooks.url("/post-call")},
        }
    record.update(fields)
    return record


def tool_then_answer(
    tool: str, arguments: dict[str, Any], answer: str = ANSWER
) -> Callable[[dict[str, Any]], ScriptedReply]:
    """LLM script: call ``tool`` once, say ``answer`` once a tool result is in the
    conversation."""

    def script(body: dict[str, Any]) -> ScriptedReply:
        messages = body["messages"]
        offered = {t["function"]["name"] for t in body.get("tools") or []}
        if any(m.get("role") == "tool" for m in messages) or tool not in offered:
            return ScriptedReply(text=answer)
        return ScriptedReply(tool_calls=(ToolCall(tool, arguments),))

    return script


def tool_messages(llm: WireServer) -> list[tuple[float, dict[str, Any]]]:
    """Tool result messages in the chat requests the LLM received, with request times."""
    return [
        (r.time, m)
        for r in llm.records("/chat/completions")
        if isinstance(r.body, dict)
        for m in r.body["messages"]
        if m.get("role") == "tool"
    ]


def short_hello() -> tuple[Audio, list[tuple[float, float]]]:
    """The "Hello?" fixture with its lead-in cut to half a second."""
    entry = json.loads((FIXTURES / "audio" / "manifest.json").read_text())["short_hello"]
    audio = read_wav(FIXTURES / "audio" / entry["file"])
    (turn,) = entry["turns"]
    cut = float(turn["start"]) - 0.5
    samples = audio.samples[int(cut * audio.sample_rate) :]
    return Audio(samples, audio.sample_rate), [(0.5, float(turn["end"]) - cut)]


def silence(seconds: float = 0.2) -> Audio:
    return Audio(np.zeros(int(seconds * 16000), dtype=np.float32), 16000)


async def hello_call(
    livekit: LiveKitEndpoint, worker: WorkerProcess, metadata: dict[str, Any]
) -> CallRecording:
    """The caller says "Hello?" after the greeting, waits for the answer, hangs up."""
    caller, turns = short_hello()
    rec = await run_caller(
        livekit,
        worker.agent_name,
        metadata,
        caller,
        turns=turns,
        answer_timeout=20.0,
        tail_seconds=0.5,
    )
    print(timeline(rec))
    assert rec.caller_turns, f"{rec.room_name}: the caller never spoke"
    return rec


async def silent_call(
    livekit: LiveKitEndpoint, worker: WorkerProcess, metadata: dict[str, Any], tail: float
) -> CallRecording:
    """The caller stays on the line in silence until the agent leaves (or ``tail`` s)."""
    rec = await run_caller(livekit, worker.agent_name, metadata, silence(), tail_seconds=tail)
    print(timeline(rec))
    return rec


def timeline(rec: CallRecording) -> str:
    rows = [f"{rec.room_name}: caller turns {rec.caller_turns}"]
    rows += [f"  {rec.rel(e['at']):7.2f} {e['role']:>9}: {e['text']!r}" for e in rec.turn_events]
    for label, at in (("caller left", rec.caller_left_at), ("agent left", rec.agent_left_at)):
        if at is not None:
            rows.append(f"  {rec.rel(at):7.2f} {label}")
    return "\n".join(rows)


def agent_texts(rec: CallRecording) -> list[str]:
    return [e["text"] for e in rec.agent_turns()]


def assert_verified(*deliveries: Delivery) -> None:
    for d in deliveries:
        assert d.signature_error is None, f"{d.path}: signature: {d.signature_error}"


def report_events(report: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["data"] for e in report["events"] if e["type"] == kind]


# ---------------------------------------------------------------- workers


class TestWorker(WorkerProcess):
    __test__ = False

    def kill_tree(self) -> None:
        """SIGKILL the worker and every job process at once, as a node loss would: no
        shutdown callback runs anywhere."""
        proc = self._proc
        assert proc is not None, "worker not running"
        tree = psutil.Process(proc.pid)
        victims = [tree, *tree.children(recursive=True)]
        for p in victims:
            p.kill()
        psutil.wait_procs(victims, timeout=10)
        proc.wait()
        self._proc = None


def new_worker(
    livekit: LiveKitEndpoint, workdir: Path, control_plane_dir: Path, **env: str
) -> TestWorker:
    return TestWorker(
        livekit,
        workdir=workdir,
        control_plane_url=f"file://{control_plane_dir}",
        extra_env={"LOG_JSON": "true", "OFFLINE_PROVIDERS": "true", **env},
    )


@pytest.fixture(scope="module")
def control_plane_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``file://`` control plane the tests add agents to (catalog from the fixtures)."""
    root = tmp_path_factory.mktemp("control-plane")
    (root / "agents").mkdir()
    shutil.copy(FIXTURES / "control_plane" / "providers.json", root / "providers.json")
    return root


@pytest.fixture(scope="module")
def lifecycle_worker(
    livekit: LiveKitEndpoint, control_plane_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestWorker]:
    """The module's worker: two warm job processes, every secret setting configured."""
    worker = new_worker(
        livekit,
        tmp_path_factory.mktemp("lifecycle-worker"),
        control_plane_dir,
        NUM_IDLE_PROCESSES="2",
        PRE_CALL_WEBHOOK_TIMEOUT="1.0",
        **WORKER_SECRETS,
    )
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


# ---------------------------------------------------------------- tests


async def test_tool_webhook_round_trip(
    livekit: LiveKitEndpoint, lifecycle_worker: TestWorker
) -> None:
    arguments = {"party_size": 2, "time": "19:00"}
    async with (
        Receiver(agent_key()) as hooks,
        OpenAIServer(reply=tool_then_answer("book_table", arguments)) as llm,
    ):
        hooks.reply("/tool", {"confirmation": "BK-4471", "status": "booked"})
        tool = {
            "name": "book_table",
            "description": "Book a table.",
            "parameters": {
                "type": "object",
                "properties": {"party_size": {"type": "integer"}, "time": {"type": "string"}},
            },
            "url": hooks.url("/tool"),
        }
        agent = agent_record(llm, hooks, tools=[tool])
        rec = await hello_call(livekit, lifecycle_worker, {"agent": agent})
        (report_delivery,) = await hooks.wait_for("/post-call")

    calls = hooks.to("/tool")
    assert len(calls) == 1, [d.payload for d in calls]
    assert_verified(calls[0], report_delivery)
    payload = calls[0].payload
    assert set(payload) == {"call_id", "agent_id", "tool", "arguments", "metadata"}
    assert payload["tool"] == "book_table"
    assert payload["arguments"] == arguments
    assert payload["agent_id"] == agent["id"]
    assert payload["metadata"] == {"clinic": "Test Clinic"}
    report = report_delivery.payload
    assert payload["call_id"] == report["call_id"] and payload["call_id"]

    # The receiver's JSON went back to the LLM as the tool result, then the agent spoke.
    results = tool_messages(llm)
    assert results, "no chat request carried a tool result"
    asked_at, message = results[0]
    assert asked_at > calls[0].at
    assert json.loads(message["content"]) == {"confirmation": "BK-4471", "status": "booked"}
    assert ANSWER in agent_texts(rec), agent_texts(rec)
    assert report_events(report, "tool_call")[0]["ok"] is True


async def test_tool_timeout_returns_an_error_and_the_call_goes_on(
    livekit: LiveKitEndpoint, lifecycle_worker: TestWorker
) -> None:
    async with (
        Receiver(agent_key()) as hooks,
        OpenAIServer(reply=tool_then_answer("check_stock", {"item": "bolts"})) as llm,
    ):
        hooks.reply("/tool", {"in_stock": True}, delay=6.0)
        tool = {
            "name": "check_stock",
            "description": "Check stock.",
            "parameters": {"type": "object", "properties": {"item": {"type": "string"}}},
            "url": hooks.url("/tool"),
            "timeoutSeconds": 1,
        }
        rec = await hello_call(
            livekit, lifecycle_worker, {"agent": agent_record(llm, hooks, tools=[tool])}
        )
        (report_delivery,) = await hooks.wait_for("/post-call")

    (call,) = hooks.to("/tool")
    results = tool_messages(llm)
    assert results, "no chat request carried the tool error"
    asked_at, message = results[0]
    assert "did not answer within 1 seconds" in message["content"], message
    # The error came at the tool's deadline, not when the slow receiver would have answered.
    assert 0.9 <= asked_at - call.at < 4.0, asked_at - call.at
    answers = [e for e in rec.agent_turns() if e["text"] == ANSWER]
    assert answers and answers[0]["at"] > asked_at, agent_texts(rec)
    (event,) = report_events(report_delivery.payload, "tool_call")
    assert event["ok"] is False and event["error"] == "timeout", event


async def test_report_and_status_are_delivered_signed(
    livekit: LiveKitEndpoint, lifecycle_worker: TestWorker
) -> None:
    async with Receiver(agent_key()) as hooks, OpenAIServer(reply=ANSWER) as llm:
        agent = agent_record(llm, hooks)
        rec = await hello_call(livekit, lifecycle_worker, {"agent": agent})
        (report_delivery,) = await hooks.wait_for("/post-call")
        (status_delivery,) = await hooks.wait_for("/status")

    assert_verified(report_delivery, status_delivery)
    assert report_delivery.msg_id != status_delivery.msg_id
    report = report_delivery.payload
    assert report["type"] == "call.report"
    assert report["agent_id"] == agent["id"] and report["room_name"] == rec.room_name
    assert report["end_reason"] == "caller left"
    said = [(t["role"], t["text"]) for t in report["transcript"]]
    assert ("assistant", FIRST_MESSAGE) in said and ("assistant", ANSWER) in said, said
    assert any(role == "user" and text.strip() for role, text in said), said
    assert report["duration_seconds"] > 1.0
    # usage per provider, as LiveKit's metrics counted it: what the caller said, the
    # tokens of each reply, the characters spoken
    usage = report["usage"]
    assert set(usage) == {"custom:scripted", "local:espeak", "local:moonshine"}, usage
    assert sum(u["stt_seconds"] for u in usage.values()) > 0.5, usage
    assert sum(u["llm_completion_tokens"] for u in usage.values()) > 0, usage
    assert sum(u["llm_prompt_tokens"] for u in usage.values()) > 0, usage
    # counted once each (the chain's own streams are not measured on top of the attempts')
    assert usage["local:espeak"]["tts_characters"] == len(FIRST_MESSAGE) + len(ANSWER), usage
    status = status_delivery.payload
    assert status["type"] == "call.status" and status["call_id"] == report["call_id"]
    assert (status["event_type"], status["status"]) == ("call.hangup", "ended")


async def test_inactivity_reprompts_once_then_says_goodbye_and_leaves(
    livekit: LiveKitEndpoint, lifecycle_worker: TestWorker
) -> None:
    async with Receiver(agent_key()) as hooks, OpenAIServer(reply=ANSWER) as llm:
        agent = agent_record(llm, hooks, inactivity_timeout_seconds=2)
        rec = await silent_call(livekit, lifecycle_worker, {"agent": agent}, tail=40.0)
        (report_delivery,) = await hooks.wait_for("/post-call")

    assert agent_texts(rec) == [FIRST_MESSAGE, DEFAULT_IDLE_REPROMPTS[0], GOODBYE]
    greeting, reprompt, goodbye = rec.agent_turns()
    # Each after two seconds of silence once the agent had finished speaking.
    assert reprompt["metrics"]["started_speaking_at"] - greeting["at"] >= 1.9
    assert goodbye["metrics"]["started_speaking_at"] - reprompt["at"] >= 1.9
    assert rec.agent_left_at is not None and rec.caller_left_at is not None
    assert rec.agent_left_at <= rec.caller_left_at, "the agent did not hang up by itself"
    assert not llm.records("/chat/completions"), "a silent caller got an LLM answer"
    report = report_delivery.payload
    assert "inactivity" in report["end_reason"], report["end_reason"]
    assert [e["count"] for e in report_events(report, "idle_reprompt")] == [1]


PRE_CALL_GREETING = "Hi Maya, thanks for calling Acme."
PRE_CALL_METADATA = {"customerId": "cus_123", "plan": "enterprise"}


async def test_pre_call_webhook_sets_greeting_and_metadata_or_times_out(
    livekit: LiveKitEndpoint, lifecycle_worker: TestWorker
) -> None:
    async with (
        Receiver(agent_key()) as answering,
        Receiver(agent_key()) as slow,
        OpenAIServer(reply=ANSWER) as llm,
    ):
        answering.reply(
            "/pre-call", {"firstMessage": PRE_CALL_GREETING, "metadata": PRE_CALL_METADATA}
        )
        slow.reply("/pre-call", {"firstMessage": "Too late."}, delay=5.0)
        calls = []
        for hooks in (answering, slow):
            agent = agent_record(llm, hooks)
            agent["webhooks"]["preCall"] = {"url": hooks.url("/pre-call")}
            calls.append(hello_call(livekit, lifecycle_worker, {"agent": agent}))
        greeted, fallback = await asyncio.gather(*calls)
        (report,) = [d.payload for d in await answering.wait_for("/post-call")]
        (slow_report,) = [d.payload for d in await slow.wait_for("/post-call")]

    (pre_call,) = answering.to("/pre-call")
    assert_verified(pre_call, *slow.to("/pre-call"))
    assert pre_call.payload["type"] == "call.pre_call"
    assert pre_call.payload["call_id"] == report["call_id"]
    assert agent_texts(greeted)[0] == PRE_CALL_GREETING
    assert report["metadata"] == {"clinic": "Test Clinic", **PRE_CALL_METADATA}
    assert report_events(report, "pre_call") == [{"outcome": "pre-call webhook overrides applied"}]

    assert len(slow.to("/pre-call")) == 1
    assert agent_texts(fallback)[0] == FIRST_MESSAGE
    assert slow_report["metadata"] == {"clinic": "Test Clinic"}
    (outcome,) = [e["outcome"] for e in report_events(slow_report, "pre_call")]
    assert "timeout" in outcome.lower(), outcome


async def wait_until(done: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(0.05)


def spooled(spool: Path) -> list[Path]:
    return sorted(spool.glob("*.json"))


async def test_report_spooled_by_a_killed_worker_is_delivered_by_the_next_one(
    livekit: LiveKitEndpoint, control_plane_dir: Path, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    env = {
        "SPOOL_DIR": str(spool),
        "WEBHOOK_SECRET": ORG_SECRET,
        "WEBHOOK_MAX_ATTEMPTS": "50",
        "WEBHOOK_MAX_ELAPSED": "600",
    }
    first = new_worker(livekit, tmp_path / "first", control_plane_dir, **env)
    second = new_worker(livekit, tmp_path / "second", control_plane_dir, **env)
    async with Receiver(ORG_SECRET) as hooks, OpenAIServer(reply=ANSWER) as llm:
        hooks.reply("/post-call", status=503)
        hooks.reply("/status", status=503)
        # No agent secret: the organization secret from the environment signs, which a
        # fresh process knows too.
        agent = agent_record(llm, hooks)
        del agent["webhook_secret"]
        await first.astart()
        try:
            rec = await silent_call(livekit, first, {"agent": agent}, tail=3.0)
            await hooks.wait_for("/post-call", status=503, count=2)
            await hooks.wait_for("/status", status=503, count=2)
            assert len(spooled(spool)) == 2
            first.kill_tree()
        finally:
            await first.astop()
        left = spooled(spool)
        assert len(left) == 2, "the killed worker's spool lost a payload"
        assert not any(ORG_SECRET in p.read_text() for p in left), "a secret in the spool"
        hooks.reply("/post-call", {"ok": True})
        hooks.reply("/status", {"ok": True})
        await second.astart()
        try:
            (report,) = await hooks.wait_for("/post-call")
            (status,) = await hooks.wait_for("/status")
        finally:
            await second.astop()

    assert_verified(*hooks.deliveries)
    for path, delivered in (("/post-call", report), ("/status", status)):
        failed = {d.msg_id for d in hooks.to(path, status=503)}
        assert failed == {delivered.msg_id}, f"{path}: webhook-id changed across the restart"
    assert report.payload["type"] == "call.report"
    assert report.payload["room_name"] == rec.room_name
    assert report.payload["transcript"][0]["text"] == FIRST_MESSAGE
    assert spooled(spool) == []
    # Delivered by the second worker's start-up redelivery, not by a survivor of the first.
    assert f"spooled call.report {report.msg_id}: delivered" in second.log_text()


async def test_sigterm_drains_the_call_then_says_goodbye_and_exits(
    livekit: LiveKitEndpoint, control_plane_dir: Path, tmp_path: Path
) -> None:
    drain = 4.0
    worker = new_worker(livekit, tmp_path, control_plane_dir, DRAIN_TIMEOUT=str(int(drain)))
    await worker.astart()
    async with Receiver(agent_key()) as hooks, OpenAIServer(reply=ANSWER) as llm:
        agent = agent_record(llm, hooks)
        times: dict[str, float] = {}

        async def terminate_mid_call() -> None:
            await wait_until(lambda: llm.records("/chat/completions"), 60.0, "caller's turn")
            times["sigterm"] = time.time()
            await worker.astop(timeout=40.0)  # SIGTERM, then waits for the exit
            times["exited"] = time.time()

        caller, turns = short_hello()
        try:
            rec, _ = await asyncio.gather(
                run_caller(
                    livekit,
                    worker.agent_name,
                    {"agent": agent},
                    caller,
                    turns=turns,
                    answer_timeout=20.0,
                    tail_seconds=40.0,
                ),
                terminate_mid_call(),
            )
        finally:
            await worker.astop()
        print(timeline(rec))
        (report_delivery,) = await hooks.wait_for("/post-call")

    sigterm = times["sigterm"]
    report = report_delivery.payload
    print(f"SIGTERM at {rec.rel(sigterm)}, worker exited at {rec.rel(times['exited'])}")
    print(f"end_reason {report['end_reason']!r}, agent said {agent_texts(rec)}")
    assert not worker.running
    # The call went on: the answer in flight was spoken, the agent stayed for the drain.
    assert ANSWER in agent_texts(rec)
    assert rec.agent_left_at is not None and rec.agent_left_at - sigterm >= drain - 0.5
    assert rec.caller_left_at is not None and rec.agent_left_at <= rec.caller_left_at
    # The call ended itself by the deadline: no 15 s wait for LiveKit to cancel it.
    assert times["exited"] - sigterm < drain + 10.0
    assert_verified(report_delivery)
    assert report["transcript"], report
    # Before the deadline the worker tells the call to wind up: a goodbye, then the end.
    assert agent_texts(rec)[-1] == GOODBYE, agent_texts(rec)
    assert rec.agent_turns()[-1]["at"] > sigterm + drain - 0.5
    assert "worker" in report["end_reason"], report["end_reason"]
    assert ("assistant", GOODBYE) in [(t["role"], t["text"]) for t in report["transcript"]]


async def test_secrets_never_leak(
    livekit: LiveKitEndpoint, lifecycle_worker: TestWorker, control_plane_dir: Path
) -> None:
    leaked_by_llm = WORKER_SECRETS["DEEPGRAM_API_KEY"]
    configured = {
        **WORKER_SECRETS,
        "llm_api_key": LLM_API_KEY,
        "webhook_secret": AGENT_SECRET,
        "LIVEKIT_API_SECRET": livekit.api_secret,
    }
    # The LLM repeats a secret it should never have seen: the report must not.
    script = tool_then_answer("lookup", {"account": "A-1"}, f"Your key is {leaked_by_llm}.")
    async with Receiver(agent_key()) as hooks, OpenAIServer(reply=script) as llm:
        hooks.reply("/pre-call", {"metadata": {"tier": "gold"}})
        agent = agent_record(llm, hooks, llm_api_key=LLM_API_KEY)
        agent["webhooks"]["preCall"] = {"url": hooks.url("/pre-call")}
        tools = [{"name": "lookup", "description": "Look up.", "url": hooks.url("/tool")}]
        agents = control_plane_dir / "agents"
        (agents / f"{agent['id']}.json").write_text(json.dumps(agent))
        (agents / f"{agent['id']}.tools.json").write_text(json.dumps(tools))
        rec = await hello_call(livekit, lifecycle_worker, {"agentId": agent["id"]})
        (report,) = await hooks.wait_for("/post-call")
        await hooks.wait_for("/status")
        llm_bodies = [json.dumps(r.body) for r in llm.records("/chat/completions")]

    env = {
        **os.environ,
        "CONTROL_PLANE_URL": f"file://{control_plane_dir}",
        "OFFLINE_PROVIDERS": "true",
        **WORKER_SECRETS,
    }
    planned = subprocess.run(
        [sys.executable, "-m", "worker", "plan", "--agent", agent["id"]],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert plan["providers"]["llm"][0]["api_key_set"] is True
    assert plan["webhook_secret_set"] is True

    # Everything scanned must hold this call, or the scan proves nothing.
    kinds = {d.path for d in hooks.deliveries}
    assert kinds == {"/pre-call", "/tool", "/status", "/post-call"}, kinds
    assert "[redacted]" in json.dumps(report.payload["transcript"]), report.payload
    assert any(t["text"] for t in report.payload["transcript"] if t["role"] == "user")
    log = lifecycle_worker.log_text()
    assert rec.room_name in log
    scanned = {
        "worker log": log,
        "plan output": planned.stdout + planned.stderr,
        "LLM requests": "\n".join(llm_bodies),
        **{
            f"{d.path} #{i}": d.body.decode() + json.dumps(d.headers)
            for i, d in enumerate(hooks.deliveries)
        },
        **{
            f"spool {p.name}": p.read_text()
            for p in lifecycle_worker.workdir.rglob("spool/**/*")
            if p.is_file()
        },
    }
    leaks = [
        f"{name} in {where}"
        for where, text in scanned.items()
        for name, value in configured.items()
        if value in text
    ]
    assert not leaks, leaks
