"""``voice-worker replay --phone``: an outbound call over the session's SIP leg to a baresip
phone that says "Hello?" after the agent's greeting. The artifacts are the call as the phone
had it: the greeting and the answer in ``phone_heard.wav`` from the answer on, the response
latency measured there, the report as delivered, and the SIP side's log."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines.audio import Audio, read_wav, write_wav
from pipelines.loopback import OpenAIServer
from worker.dev.phone_replay import PHONE_NUMBER, replay_phone_call
from worker.dev.services import LiveKitEndpoint
from worker.dev.services.sip import LiveKitSIP
from worker.settings import REPO_ROOT

pytestmark = pytest.mark.integration

HELLO = REPO_ROOT / "fixtures" / "audio" / "short_hello.wav"
"""4 s of lead-in, "Hello?" at 4.0-4.5 s, then quiet: 10.8 s."""
LEAD = 4.0
"""Seconds of silence added before it: the phone answers at once, and the agent's job may
take a few seconds to join on a busy machine; "Hello?" comes after the greeting."""
FIRST_MESSAGE = "Hi, this is the test line."
ANSWER = "Thanks, that is all set."
TAIL = 3.0


async def test_phone_replay_writes_the_call_as_the_phone_had_it(
    livekit: LiveKitEndpoint,
    livekit_sip: LiveKitSIP,
    llama_base_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOCAL_LLM_BASE_URL", llama_base_url)
    out = tmp_path / "out"
    hello = read_wav(HELLO)
    caller = tmp_path / "caller.wav"
    lead = np.zeros(round(LEAD * hello.sample_rate), np.float32)
    write_wav(caller, Audio(np.concatenate([lead, hello.samples]), hello.sample_rate))
    async with OpenAIServer(reply=ANSWER) as llm:
        agent = tmp_path / "agent.json"
        agent.write_text(
            json.dumps(
                {
                    "name": "Phone replay",
                    "systemPrompt": "You are a test agent calling {{dialedNumber}}.",
                    "firstMessage": FIRST_MESSAGE,
                    "llm_provider": "custom",
                    "llm_model": "scripted",
                    "llm_base_url": f"{llm.url}/v1",
                    "stackPreferences": {
                        "allowedProviders": {"stt": ["local"], "llm": ["custom"], "tts": ["local"]}
                    },
                }
            )
        )
        result = await replay_phone_call(
            str(agent),
            caller,
            out,
            direction="outbound",
            tail_seconds=TAIL,
            livekit=livekit,
            sip=livekit_sip,
        )
    print(json.dumps(result, indent=2))
    report = json.loads((out / "report.json").read_text())
    assert report["direction"] == "outbound" and report["end_reason"] == result["end_reason"]
    said = [e["text"] for e in report["transcript"] if e["role"] == "assistant"]
    assert said[:1] == [FIRST_MESSAGE], report["transcript"]

    heard = read_wav(out / "phone_heard.wav")
    assert heard.sample_rate == 8000
    # the phone played the WAV from the answer, then TAIL seconds of silence, then hung up
    assert abs(heard.duration - (LEAD + hello.duration + TAIL)) < 1.5, heard.duration
    metrics = json.loads((out / "metrics.json").read_text())
    (turn,) = metrics["turns"]
    assert LEAD + 4.3 < turn["caller_end_of_speech"] < LEAD + 4.8, turn
    # heard at the phone: after "Hello?" ended, before the phone hung up
    assert 0.0 < turn["response_latency"] < heard.duration - turn["caller_end_of_speech"], turn
    assert metrics["answer_seconds"] >= 0

    transcript = json.loads((out / "transcript.json").read_text())
    assert [e["role"] for e in transcript][:1] == ["agent"], transcript
    assert any(e["role"] == "agent" and e["text"] == ANSWER for e in transcript), transcript
    assert all(0 <= e["at"] <= heard.duration + 1 for e in transcript), transcript

    sip_log = (out / "sip.log").read_text()
    assert "CALL_ESTABLISHED" in sip_log and "CALL_CLOSED" in sip_log
    assert report["room_name"] in sip_log  # livekit-sip's own lines for this call
    assert PHONE_NUMBER in sip_log
    assert livekit.api_secret not in sip_log
