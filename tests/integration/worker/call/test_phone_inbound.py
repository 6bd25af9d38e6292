"""Inbound phone calls over the real SIP leg: a baresip phone dials a number routed to the
agent (an inbound trunk and a dispatch rule whose metadata, like a phone number's, is the
same for every call and carries no numbers). The worker takes the caller's and the dialled
number from the SIP participant, greets as soon as livekit-sip answers, and runs no AMD
although the agent has it on."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipelines.audio import read_wav
from pipelines.loopback import OpenAIServer
from tests.fakes import Receiver
from worker.dev.phone_call import route_inbound
from worker.dev.services import LiveKitEndpoint, WorkerProcess
from worker.dev.services.phone import SIPPhone
from worker.dev.services.sip import LiveKitSIP

pytestmark = pytest.mark.integration

CALLER_NUMBER = "+14155550142"
SECRET = f"inbound-hook-{secrets.token_hex(8)}"
FIRST_MESSAGE = "Thanks for calling from {{callerNumber}} on the {{dialedNumber}} line."
HOLD_SECONDS = 15.0
"""The phone's silence after answering, then it hangs up."""
GREETING_WITHIN = 2.0
"""Seconds from the answer to the first agent audio the phone hears."""
SPEECH_RMS = 0.02


def inbound_agent(llm: OpenAIServer, hooks: Receiver) -> dict[str, Any]:
    return {
        "id": "agent_01JC0CA11ER000000000000000",
        "name": "Inbound line",
        "systemPrompt": "You answer calls from {{callerNumber}}. One short sentence.",
        "firstMessage": FIRST_MESSAGE,
        "llm_provider": "custom",
        "llm_model": "scripted",
        "llm_base_url": f"{llm.url}/v1",
        "stackPreferences": {
            "allowedProviders": {"stt": ["local"], "llm": ["custom"], "tts": ["local"]}
        },
        # on, and still not run: AMD is for outbound calls only
        "amd": {"mode": "agent", "timeoutSeconds": 8},
        "webhook_secret": SECRET,
        "webhooks": {"postCall": {"url": hooks.url("/post-call")}},
    }


def first_speech(path: Path, window: float = 0.05) -> float | None:
    """Seconds into ``path`` of the first ``window`` louder than ``SPEECH_RMS``."""
    audio = read_wav(path)
    n = int(audio.sample_rate * window)
    for i in range(0, len(audio.samples) - n, n):
        if float(np.sqrt(np.mean(np.square(audio.samples[i : i + n])))) > SPEECH_RMS:
            return i / audio.sample_rate
    return None


async def test_inbound_call_greets_the_caller_by_number_without_amd(
    livekit: LiveKitEndpoint, livekit_sip: LiveKitSIP, voice_worker: WorkerProcess
) -> None:
    async with Receiver(SECRET.encode()) as hooks, OpenAIServer(reply="Sure.") as llm:
        route = await route_inbound(
            livekit,
            agent_name=voice_worker.agent_name,
            sip_address=livekit_sip.address,
            metadata={"agent": inbound_agent(llm, hooks), "direction": "inbound"},
        )
        with SIPPhone(user=CALLER_NUMBER, hold_seconds=HOLD_SECONDS) as phone:
            await asyncio.to_thread(phone.dial, route.uri)
            await asyncio.to_thread(phone.wait_for, "CALL_ESTABLISHED", 20)
            await asyncio.to_thread(phone.wait_for, "CALL_CLOSED", HOLD_SECONDS + 10)
            heard = phone.heard_wav()
            onset = first_speech(heard) if heard is not None else None
        (delivered,) = await hooks.wait_for("/post-call")
    report = delivered.payload
    assert report["direction"] == "inbound"
    assert report["room_name"].startswith("inbound-")
    agent_lines = [e["text"] for e in report["transcript"] if e["role"] in ("agent", "assistant")]
    expected = f"Thanks for calling from {CALLER_NUMBER} on the {route.number} line."
    assert agent_lines[:1] == [expected], report["transcript"]
    assert report["metadata"]["caller_number"] == CALLER_NUMBER
    assert report["metadata"]["dialed_number"] == route.number
    assert report["metadata"]["sip_call_id"]
    assert not [e for e in report["events"] if e["type"] == "amd"], report["events"]
    # the greeting reached the phone, starting right after the answer
    assert heard is not None
    print(f"{report['room_name']}: greeting heard {onset} s after the answer")
    assert onset is not None and onset < GREETING_WITHIN, onset
