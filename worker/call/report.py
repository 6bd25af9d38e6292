"""Post-call report (``call.report``) and lifecycle status (``call.status``) payloads.

The entrypoint feeds a :class:`CallRecorder` as the call runs; ``finish()`` freezes it
into a :class:`CallReport`, the body of the agent's ``postCall`` webhook. Every string
in a report or status event (transcript, event data, metadata, even keys) is scrubbed of
the secret values the recorder was given, so a secret that leaks into a tool reply, an
error message or dispatch metadata never leaves the worker.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

REDACTED = "[redacted]"

Role = Literal["user", "assistant", "system", "tool"]

EVENT_TYPES = (
    "failover",
    "amd",
    "tool_call",
    "transfer",
    "dtmf",
    "webhook",
    "pre_call",
    "status",
    "ivr_memory",
    "error",
)
"""Event types the worker emits; others are allowed (the list documents, not restricts)."""

Timestamp = float | datetime


def _utc(at: Timestamp) -> datetime:
    if isinstance(at, datetime):
        return at if at.tzinfo else at.replace(tzinfo=UTC)
    return datetime.fromtimestamp(at, tz=UTC)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TranscriptEntry(_Model):
    role: Role
    text: str
    started_at: datetime
    ended_at: datetime | None = None


class CallEvent(_Model):
    type: str
    """One of :data:`EVENT_TYPES` (``failover``, ``amd``, ``tool_call``, ...)."""
    at: datetime
    data: dict[str, Any] = Field(default_factory=dict)


class TurnMetrics(_Model):
    """Latency of one user turn, seconds; ``None`` when a stage did not run or was unmeasured."""

    turn: int
    at: datetime
    eou: float | None = None
    """End of user speech to end-of-utterance decision."""
    stt: float | None = None
    """End of user speech to final transcript."""
    llm_ttft: float | None = None
    tts_ttfb: float | None = None
    first_audio: float | None = None
    """End of user speech to the first agent audio frame published: what the caller hears."""
    worker: float | None = None
    """Time spent in the worker itself (first_audio minus the provider stages)."""


class ProviderUsage(_Model):
    stt_seconds: float = 0.0
    llm_prompt_tokens: int = 0
    llm_completion_tokens: int = 0
    tts_characters: int = 0


class RecordingInfo(_Model):
    """The call's audio recording (``save_audio_recording``), as the report links it."""

    url: str
    """``s3://bucket/prefix/...`` or ``file:///...``: where the object is (or will be, once
    the worker's sweep has uploaded it after a bucket outage)."""
    duration_s: float
    format: str
    """``ogg/opus``."""
    channels: int
    """2: caller left, agent right; 1: the composite mix."""
    bytes: int


class PhoneInfo(_Model):
    """The SIP leg of a phone call (reference ``002_*``): the numbers, livekit-sip's call
    id, how the call ended with its SIP status, when it rang and was answered, and the AMD
    verdict the worker acted on (outbound)."""

    to_number: str | None = None
    from_number: str | None = None
    sip_call_id: str | None = None
    """livekit-sip's ``sip.callID`` (``SCL_...``)."""
    trunk_id: str | None = None
    participant_identity: str | None = None
    outcome: str | None = None
    """``completed``, or why it never connected: ``busy``, ``declined``, ``no_answer``,
    ``failed``, ``canceled``."""
    sip_status_code: int | None = None
    sip_status: str | None = None
    failure_cause: str | None = None
    dialed_at: datetime | None = None
    ringing_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    amd: dict[str, Any] | None = None
    """The verdict (category, confidence, reason, decided_at, beep_at, evidence), the
    action taken and ``answered_to_verdict_seconds``."""


class CallReport(_Model):
    type: Literal["call.report"] = "call.report"
    call_id: str
    session_id: str | None = None
    room_name: str | None = None
    agent_id: str | None = None
    organization_id: str | None = None
    direction: Literal["inbound", "outbound", "web"] | None = None
    started_at: datetime
    ended_at: datetime
    duration_seconds: float
    end_reason: str
    """Why the call ended: ``caller_hangup``, ``agent_hangup``, ``inactivity``,
    ``voicemail``, ``transferred``, ``error``, ``shutdown``, ..."""
    transcript: list[TranscriptEntry] = Field(default_factory=list)
    events: list[CallEvent] = Field(default_factory=list)
    turns: list[TurnMetrics] = Field(default_factory=list)
    usage: dict[str, ProviderUsage] = Field(default_factory=dict)
    """Per provider (``deepgram``, ``openai:gpt-4o-mini``, ...)."""
    recording: RecordingInfo | None = None
    """Set when the call was recorded (the plan's ``save_audio_recording``)."""
    phone: PhoneInfo | None = None
    """Set on phone calls (a SIP participant in the room)."""
    metadata: dict[str, Any] = Field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        """JSON-ready dict (ISO 8601 datetimes) for the webhook body."""
        return self.model_dump(mode="json")


class CallStatusEvent(_Model):
    """Body of the agent's ``status`` webhook (reference 002, "Track lifecycle")."""

    type: Literal["call.status"] = "call.status"
    call_id: str
    event_type: str
    """``call.initiated``, ``call.answered``, ``call.hangup``, ``call.transfer`` ..."""
    provider: str
    """Who reported it: ``livekit``, ``telnyx``, ``speko``, ``worker``."""
    status: str
    """``ringing``, ``in_progress``, ``ended``, ``failed`` ..."""
    failure_cause: str | None = None
    sip_status_code: int | None = None
    sip_status: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def save_report(directory: Path, report: CallReport) -> Path:
    """Writes ``report`` as ``<call id>.json`` in ``directory`` (write, then rename)."""
    directory.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", report.call_id).strip(".") or "call"
    path = directory / f"{name}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report.to_payload(), indent=2) + "\n")
    tmp.replace(path)
    return path


class Redactor:
    """Replaces every occurrence of the given secret values in nested JSON-like data."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # longest first, so a secret containing another is scrubbed whole
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value

    def value(self, value: Any) -> Any:
        if not self._secrets:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(v) for v in value]
        return value


class CallRecorder:
    """Collects what happens during one call; synchronous and in-memory.

    ``redact`` lists secret values (provider keys, webhook/LLM secrets from the agent
    config, settings) to scrub from every string the report will carry.
    """

    def __init__(
        self,
        *,
        call_id: str,
        agent_id: str | None = None,
        session_id: str | None = None,
        room_name: str | None = None,
        organization_id: str | None = None,
        direction: Literal["inbound", "outbound", "web"] | None = None,
        metadata: Mapping[str, Any] | None = None,
        redact: Iterable[str] = (),
        started_at: Timestamp | None = None,
    ) -> None:
        self._redactor = Redactor(redact)
        self.call_id = call_id
        self._ids: dict[str, Any] = {
            "call_id": call_id,
            "session_id": session_id,
            "room_name": room_name,
            "agent_id": agent_id,
            "organization_id": organization_id,
            "direction": direction,
        }
        self._metadata: dict[str, Any] = dict(metadata or {})
        self._started_at = _utc(time.time() if started_at is None else started_at)
        self._transcript: list[TranscriptEntry] = []
        self._events: list[CallEvent] = []
        self._turns: list[TurnMetrics] = []
        self._usage: dict[str, dict[str, float]] = {}
        self._recording: RecordingInfo | None = None
        self._phone: PhoneInfo | None = None
        self._report: CallReport | None = None

    @property
    def finished(self) -> bool:
        return self._report is not None

    def add_transcript(
        self,
        role: Role,
        text: str,
        at: Timestamp | None = None,
        *,
        ended_at: Timestamp | None = None,
    ) -> None:
        self._transcript.append(
            TranscriptEntry(
                role=role,
                text=self._redactor.text(text),
                started_at=_utc(time.time() if at is None else at),
                ended_at=None if ended_at is None else _utc(ended_at),
            )
        )

    def add_event(self, type: str, /, *, at: Timestamp | None = None, **data: Any) -> CallEvent:
        event = CallEvent(
            type=type,
            at=_utc(time.time() if at is None else at),
            data=self._redactor.value(data),
        )
        self._events.append(event)
        return event

    def add_turn_metrics(
        self,
        *,
        at: Timestamp | None = None,
        eou: float | None = None,
        stt: float | None = None,
        llm_ttft: float | None = None,
        tts_ttfb: float | None = None,
        first_audio: float | None = None,
        worker: float | None = None,
    ) -> TurnMetrics:
        turn = TurnMetrics(
            turn=len(self._turns) + 1,
            at=_utc(time.time() if at is None else at),
            eou=eou,
            stt=stt,
            llm_ttft=llm_ttft,
            tts_ttfb=tts_ttfb,
            first_audio=first_audio,
            worker=worker,
        )
        self._turns.append(turn)
        return turn

    def add_usage(
        self,
        provider: str,
        *,
        stt_seconds: float = 0.0,
        llm_prompt_tokens: int = 0,
        llm_completion_tokens: int = 0,
        tts_characters: int = 0,
    ) -> None:
        """Adds to the provider's running totals (call it per metrics event)."""
        totals = self._usage.setdefault(provider, {})
        for key, amount in (
            ("stt_seconds", stt_seconds),
            ("llm_prompt_tokens", llm_prompt_tokens),
            ("llm_completion_tokens", llm_completion_tokens),
            ("tts_characters", tts_characters),
        ):
            totals[key] = totals.get(key, 0) + amount

    def events(self, type: str) -> list[CallEvent]:
        """The events of one type so far, in order."""
        return [e for e in self._events if e.type == type]

    def transcript(self) -> list[TranscriptEntry]:
        """The transcript so far."""
        return list(self._transcript)

    def update_metadata(self, values: Mapping[str, Any]) -> None:
        """Merge metadata learned mid-call (e.g. returned by the pre-call webhook)."""
        self._metadata.update(values)

    def status_event(
        self,
        event_type: str,
        status: str,
        *,
        provider: str = "worker",
        failure_cause: str | None = None,
        sip_status_code: int | None = None,
        sip_status: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        at: Timestamp | None = None,
    ) -> CallStatusEvent:
        """Build a redacted ``call.status`` payload and record it as a ``status`` event."""
        event = CallStatusEvent(
            call_id=self.call_id,
            event_type=event_type,
            provider=provider,
            status=status,
            failure_cause=None if failure_cause is None else self._redactor.text(failure_cause),
            sip_status_code=sip_status_code,
            sip_status=sip_status,
            metadata=self._redactor.value(dict(metadata or {})),
        )
        self.add_event(
            "status",
            at=at,
            event_type=event_type,
            provider=provider,
            status=status,
            failure_cause=event.failure_cause,
            sip_status_code=sip_status_code,
        )
        return event

    def set_recording(self, info: Mapping[str, Any]) -> None:
        """Links the call's recording (``RecordingInfo`` fields) from the report."""
        self._recording = RecordingInfo.model_validate(self._redactor.value(dict(info)))

    def set_phone(self, info: Mapping[str, Any]) -> None:
        """The call's SIP leg (``PhoneInfo`` fields) for the report."""
        self._phone = PhoneInfo.model_validate(self._redactor.value(dict(info)))

    def finish(self, end_reason: str, *, at: Timestamp | None = None) -> CallReport:
        """Freeze the report; later calls return the same report (the first reason wins)."""
        if self._report is None:
            self._report = self._build(end_reason, at)
        return self._report

    def snapshot(self) -> dict[str, Any]:
        """The report so far, JSON-ready (a call's checkpoint carries it; see ``restore``)."""
        return self._build("in progress", None).to_payload()

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Takes up a call from another job's ``snapshot``: its start, transcript, events,
        turns, usage and metadata; what this recorder adds comes after them."""
        report = CallReport.model_validate(snapshot)
        self._started_at = report.started_at
        self._transcript = list(report.transcript) + self._transcript
        self._events = list(report.events) + self._events
        self._turns = list(report.turns) + self._turns
        for provider, usage in report.usage.items():
            totals = self._usage.setdefault(provider, {})
            for key, amount in usage.model_dump().items():
                totals[key] = totals.get(key, 0) + amount
        self._metadata = {**report.metadata, **self._metadata}
        self._recording = self._recording or report.recording

    def _build(self, end_reason: str, at: Timestamp | None) -> CallReport:
        ended = _utc(time.time() if at is None else at)
        ids = self._redactor.value(self._ids)
        return CallReport(
            call_id=ids["call_id"],
            session_id=ids["session_id"],
            room_name=ids["room_name"],
            agent_id=ids["agent_id"],
            organization_id=ids["organization_id"],
            direction=self._ids["direction"],
            started_at=self._started_at,
            ended_at=ended,
            duration_seconds=max(0.0, (ended - self._started_at).total_seconds()),
            end_reason=self._redactor.text(end_reason),
            transcript=list(self._transcript),
            events=list(self._events),
            turns=list(self._turns),
            usage={
                self._redactor.text(name): ProviderUsage.model_validate(totals)
                for name, totals in self._usage.items()
            },
            recording=self._recording,
            phone=self._phone,
            metadata=self._redactor.value(self._metadata),
        )
