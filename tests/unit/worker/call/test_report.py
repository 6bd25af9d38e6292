from __future__ import annotations

import json

from worker.call import REDACTED, CallRecorder, CallStatusEvent

T0 = 1_700_000_000.0
SECRETS = ("sk-live-0123456789abcdef", "whsec_c2VjcmV0LXNpZ25pbmcta2V5", "lk-api-secret-xyz")


def build_report_recorder(redact: tuple[str, ...] = SECRETS) -> CallRecorder:
    rec = CallRecorder(
        call_id="session_123",
        agent_id="agent_1",
        session_id="session_123",
        room_name="room-abc",
        direction="inbound",
        metadata={"campaignId": "renewal-q2", "llm_api_key": SECRETS[0]},
        redact=redact,
        started_at=T0,
    )
    rec.add_transcript("assistant", "Hi, this is Ava.", T0 + 0.5, ended_at=T0 + 1.5)
    rec.add_transcript("user", f"my key is {SECRETS[0]}", T0 + 2.0)
    rec.add_event("pre_call", at=T0, outcome="ok", status_code=200, latency_ms=87)
    rec.add_event(
        "failover",
        at=T0 + 3,
        layer="tts",
        from_provider="elevenlabs",
        to_provider="local",
        reason="timeout",
    )
    rec.add_event(
        "tool_call",
        at=T0 + 4,
        tool="lookup_user",
        ok=False,
        error=f"401 from https://tools.example.com?token={SECRETS[2]}",
        arguments={"nested": [SECRETS[1], {"deep": SECRETS[1]}]},
    )
    rec.add_turn_metrics(
        at=T0 + 2.5, eou=0.2, stt=0.15, llm_ttft=0.3, tts_ttfb=0.12, first_audio=0.8
    )
    rec.add_usage("deepgram", stt_seconds=1.5)
    rec.add_usage("deepgram", stt_seconds=2.0)
    rec.add_usage("openai:gpt-4o-mini", llm_prompt_tokens=120, llm_completion_tokens=30)
    rec.add_usage("elevenlabs", tts_characters=42)
    rec.update_metadata({"customerId": "cus_123", SECRETS[2]: "as a key"})
    return rec


def test_report_json_shape() -> None:
    report = build_report_recorder().finish("caller_hangup", at=T0 + 30)
    payload = json.loads(json.dumps(report.to_payload()))
    assert payload["type"] == "call.report"
    assert payload["call_id"] == "session_123" and payload["agent_id"] == "agent_1"
    assert payload["room_name"] == "room-abc" and payload["direction"] == "inbound"
    assert payload["started_at"] == "2023-11-14T22:13:20Z"
    assert payload["duration_seconds"] == 30.0
    assert payload["end_reason"] == "caller_hangup"
    assert [e["role"] for e in payload["transcript"]] == ["assistant", "user"]
    assert payload["transcript"][0]["ended_at"] == "2023-11-14T22:13:21.500000Z"
    assert [e["type"] for e in payload["events"]] == ["pre_call", "failover", "tool_call"]
    assert payload["events"][1]["data"] == {
        "layer": "tts",
        "from_provider": "elevenlabs",
        "to_provider": "local",
        "reason": "timeout",
    }
    assert payload["turns"] == [
        {
            "turn": 1,
            "at": "2023-11-14T22:13:22.500000Z",
            "eou": 0.2,
            "stt": 0.15,
            "llm_ttft": 0.3,
            "tts_ttfb": 0.12,
            "first_audio": 0.8,
            "worker": None,
        }
    ]
    assert payload["usage"]["deepgram"]["stt_seconds"] == 3.5
    assert payload["usage"]["openai:gpt-4o-mini"] == {
        "stt_seconds": 0.0,
        "llm_prompt_tokens": 120,
        "llm_completion_tokens": 30,
        "tts_characters": 0,
    }
    assert payload["metadata"]["campaignId"] == "renewal-q2"


def test_report_never_carries_configured_secrets() -> None:
    report = build_report_recorder().finish(f"error: bad key {SECRETS[0]}", at=T0 + 30)
    text = json.dumps(report.to_payload())
    for secret in SECRETS:
        assert secret not in text
    assert text.count(REDACTED) >= 6
    assert report.metadata["llm_api_key"] == REDACTED
    assert report.transcript[1].text == f"my key is {REDACTED}"


def test_without_redaction_the_same_report_would_leak() -> None:
    # guards the test above: the fixture really routes secrets into the report
    text = json.dumps(build_report_recorder(redact=()).finish("done").to_payload())
    assert all(secret in text for secret in SECRETS)


def test_finish_is_idempotent() -> None:
    rec = build_report_recorder()
    first = rec.finish("agent_hangup", at=T0 + 10)
    rec.add_event("late", at=T0 + 20)
    assert rec.finish("shutdown") is first and rec.finished


def test_status_event_shape_and_recording() -> None:
    rec = CallRecorder(call_id="session_123", redact=["topsecret"], started_at=T0)
    event = rec.status_event(
        "call.hangup",
        "ended",
        provider="livekit",
        sip_status_code=200,
        sip_status="OK",
        failure_cause="auth topsecret failed",
        metadata={"x": "topsecret"},
        at=T0 + 5,
    )
    assert isinstance(event, CallStatusEvent)
    assert event.to_payload() == {
        "type": "call.status",
        "call_id": "session_123",
        "event_type": "call.hangup",
        "provider": "livekit",
        "status": "ended",
        "failure_cause": f"auth {REDACTED} failed",
        "sip_status_code": 200,
        "sip_status": "OK",
        "metadata": {"x": REDACTED},
    }
    (recorded,) = rec.finish("caller_hangup", at=T0 + 6).events
    assert recorded.type == "status" and recorded.data["event_type"] == "call.hangup"


def test_every_secret_setting_is_redacted() -> None:
    """A vendor key added to the settings is redacted without a list to keep up."""
    from worker.call.lifecycle import settings_secrets
    from worker.settings import Settings

    s = Settings(
        _env_file=None,  # type: ignore[call-arg]
        baseten_api_key="bt-1",
        assemblyai_api_key="aai-1",
        deepgram_api_key="dg-1",
    )
    assert {"bt-1", "aai-1", "dg-1", "secret"} <= set(settings_secrets(s))


def test_phone_leg_in_the_report_redacted() -> None:
    rec = CallRecorder(call_id="c1", direction="outbound", redact=["s3cr3t-value"])
    assert rec.finish("ended").phone is None
    rec = CallRecorder(call_id="c2", direction="outbound", redact=["s3cr3t-value"])
    rec.set_phone(
        {
            "to_number": "+15550001111",
            "sip_call_id": "SCL_x",
            "outcome": "busy",
            "sip_status_code": 486,
            "failure_cause": "busy (s3cr3t-value)",
            "dialed_at": 1_700_000_000.0,
            "amd": None,
        }
    )
    phone = rec.finish("busy").to_payload()["phone"]
    assert (phone["to_number"], phone["sip_status_code"], phone["outcome"]) == (
        "+15550001111",
        486,
        "busy",
    )
    assert phone["failure_cause"] == f"busy ({REDACTED})"
    assert phone["dialed_at"].startswith("2023-11-14T")
    assert phone["answered_at"] is None
