"""DTMF both ways on real phone calls: the worker (the session's ``voice_worker``) places an
outbound call through livekit-sip to a baresip phone, which sends and receives RFC 2833
digits. The agent's LLM is a scripted OpenAI-compatible server, so what it does with the
keys it is shown is known; what the phone received is read from the phone itself.

- The caller's keys reach the agent as one turn ("The caller pressed 5 #"), then a
  ``collect_digits`` call takes the next four, and the agent presses them back with
  ``send_dtmf``: the phone receives exactly those.
- An IVR menu (``fixtures/amd/ivr_02``: "... To speak to the operator, press 0.") answers
  the call: the AMD verdict navigates, and the navigator's key reaches the phone.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from pipelines.loopback import OpenAIServer, ScriptedReply, ToolCall
from tests.fakes.phone_agent import (
    PHONE_AGENT_SECRET,
    call_started,
    chat_messages,
    phone_agent,
    report_events,
    texts,
    until,
)
from tests.fakes.webhooks import Receiver
from worker.dev.phone_call import place_outbound_call
from worker.dev.services import LiveKitEndpoint, WorkerProcess
from worker.dev.services.phone import SIPPhone
from worker.dev.services.sip import LiveKitSIP
from worker.settings import REPO_ROOT

pytestmark = pytest.mark.integration

IVR_MENU = REPO_ROOT / "fixtures" / "amd" / "ivr_02.wav"
FIRST_KEYS = "5#"
PIN = "4321"
OPERATOR = "0"

MEDIA_SETTLE_SECONDS = 2.0
"""After the answer, before the phone presses keys: the first RTP reaches the worker
about 0.75 s after the answer (measured), later on a busy machine."""


def pin_script(body: dict[str, Any]) -> str | ScriptedReply:
    """Keys pressed -> collect four digits; collected -> press them back; pressed -> end."""
    messages = body["messages"]
    last = messages[-1]
    if last.get("role") == "tool":
        result = str(last.get("content") or "")
        typed = re.search(r"typed ([0-9*#A-D]+)", result)
        if typed and "Pressed" not in result:
            return ScriptedReply(tool_calls=(ToolCall("send_dtmf", {"digits": typed.group(1)}),))
        return ScriptedReply(tool_calls=(ToolCall("end_call", {"goodbye": "Bye."}),))
    if last.get("role") == "user" and "pressed" in str(last.get("content")):
        return ScriptedReply(
            tool_calls=(ToolCall("collect_digits", {"max_digits": 4, "timeout_seconds": 20}),)
        )
    return ""


def navigator_script(body: dict[str, Any]) -> str | ScriptedReply:
    """Presses the operator's key once when ``send_dtmf`` is offered, then stays quiet."""
    offered = {t.get("function", {}).get("name") for t in body.get("tools") or []}
    pressed = any(m.get("role") == "tool" for m in body["messages"])
    if "send_dtmf" in offered and not pressed:
        return ScriptedReply(tool_calls=(ToolCall("send_dtmf", {"digits": OPERATOR}),))
    return ""


async def dial(
    worker: WorkerProcess, livekit: LiveKitEndpoint, phone: SIPPhone, agent: dict[str, Any]
) -> str:
    placed = await place_outbound_call(
        livekit,
        agent_name=worker.agent_name,
        phone_address=phone.address,
        to_user=phone.user,
        metadata={"agent": agent, "direction": "outbound", "to": "+15550100001"},
    )
    await asyncio.to_thread(phone.wait_for, "CALL_ESTABLISHED", 20)
    return placed.room_name


async def test_caller_keys_reach_the_agent_and_its_keys_reach_the_phone(
    livekit: LiveKitEndpoint, livekit_sip: LiveKitSIP, voice_worker: WorkerProcess
) -> None:
    async with (
        Receiver(PHONE_AGENT_SECRET.encode()) as hooks,
        OpenAIServer(reply=pin_script) as llm,
    ):
        agent = phone_agent(llm, hooks, tools=[{"type": "collect_digits"}, {"type": "send_dtmf"}])
        with SIPPhone(user="pin-caller", hold_seconds=40) as phone:
            room = await dial(voice_worker, livekit, phone, agent)
            await until(lambda: call_started(voice_worker, room), 15, "the agent's session started")
            # keys pressed before the answer go nowhere: the phone may still be ringing; and
            # the leg's media (RFC 2833 rides on it) reaches the room only ~1 s after the
            # answer on a livekit-sip just started (this is the session's first SIP call)
            await asyncio.to_thread(phone.wait_for, "CALL_ESTABLISHED", 15)
            await asyncio.sleep(MEDIA_SETTLE_SECONDS)
            await asyncio.to_thread(phone.press, FIRST_KEYS)
            # the turn reached the LLM, which asked for the PIN: type it while it waits
            await until(
                lambda: any(
                    "The caller pressed 5 #" in texts(m, "user") for m in chat_messages(llm)
                ),
                20,
                "the caller's keys as a user turn",
            )
            await asyncio.sleep(0.5)
            await asyncio.to_thread(phone.press, PIN)
            await until(lambda: phone.received_dtmf() == PIN, 15, f"the phone received {PIN}")
            (delivery,) = await hooks.wait_for("/post-call")
        report = delivery.payload
    assert delivery.signature_error is None
    requests = chat_messages(llm)
    tool_results = [t for m in requests for t in texts(m, "tool")]
    assert f"The caller typed {PIN}." in tool_results, tool_results
    assert phone.received_dtmf() == PIN  # nothing else was pressed towards the phone
    dtmf = report_events(report, "dtmf")
    assert [d["digit"] for d in dtmf if d["direction"] == "received"] == list(FIRST_KEYS + PIN)
    assert [d["digit"] for d in dtmf if d["direction"] == "sent"] == list(PIN)
    tools = report_events(report, "tool_call")
    assert {"tool": "collect_digits", "ok": True, "digits": PIN, "ended_by": "max_digits"} in tools
    assert {"tool": "send_dtmf", "ok": True, "digits": PIN} in tools
    said = [(t["role"], t["text"]) for t in report["transcript"]]
    assert ("user", "The caller pressed 5 #") in said, said


async def test_ivr_menu_is_navigated_with_dtmf_over_sip(
    livekit: LiveKitEndpoint, livekit_sip: LiveKitSIP, voice_worker: WorkerProcess
) -> None:
    async with (
        Receiver(PHONE_AGENT_SECRET.encode()) as hooks,
        OpenAIServer(reply=navigator_script) as llm,
    ):
        agent = phone_agent(
            llm,
            hooks,
            amd={
                "mode": "agent",
                "timeoutSeconds": 8,
                # the menu's first sentence alone is longer than a human answer; without
                # its words (offline STT over G.711) it may read as a voicemail greeting:
                # both machine verdicts navigate here, the test is about the keys
                "actions": {"machine-ivr": "navigate", "machine-vm": "navigate"},
            },
        )
        with SIPPhone(user="ivr", audio=IVR_MENU, hold_seconds=15) as phone:
            await dial(voice_worker, livekit, phone, agent)
            await until(lambda: phone.received_dtmf() != "", 20, "the navigator's key")
            await asyncio.sleep(0.5)
            received = phone.received_dtmf()
            await asyncio.to_thread(phone.hangup)
            (delivery,) = await hooks.wait_for("/post-call")
        report = delivery.payload
    assert received == OPERATOR
    (amd,) = report_events(report, "amd")
    assert amd["category"] in ("machine-ivr", "machine-vm") and amd["action"] == "navigate", amd
    assert {"tool": "send_dtmf", "ok": True, "digits": OPERATOR} in report_events(
        report, "tool_call"
    )
    assert report_events(report, "dtmf") == [{"direction": "sent", "digit": OPERATOR}]
    # the navigator presses keys; it said nothing to the machine
    assert not [t for t in report["transcript"] if t["role"] == "assistant"], report["transcript"]
