"""What the phone-call tests share: an agent record on the offline STT/TTS whose LLM is a
scripted OpenAI-compatible server (tool calls are deterministic), reporting to a webhook
receiver, and small readers of what the LLM was sent and what the worker logged."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any

from pipelines.loopback import WireServer
from tests.fakes.webhooks import Receiver
from worker.dev.services import WorkerProcess

PHONE_AGENT_SECRET = f"phone-hook-{secrets.token_hex(8)}"
"""The agents' ``webhook_secret``: a receiver verifies with ``PHONE_AGENT_SECRET.encode()``."""
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def phone_agent(llm: WireServer, hooks: Receiver, **fields: Any) -> dict[str, Any]:
    """An inline agent record (``{"agent": ...}`` in the dispatch) for a phone call."""
    record: dict[str, Any] = {
        "id": "agent_" + "".join(secrets.choice(_CROCKFORD) for _ in range(26)),
        "name": "Phone test",
        "systemPrompt": "You are a test agent on a phone line. Answer in one short sentence.",
        "firstMessage": "Hello.",
        "llm_provider": "custom",
        "llm_model": "scripted",
        "llm_base_url": f"{llm.url}/v1",
        "stackPreferences": {
            "allowedProviders": {"stt": ["local"], "llm": ["custom"], "tts": ["local"]}
        },
        "inactivity_timeout_seconds": 60,
        "webhook_secret": PHONE_AGENT_SECRET,
        "webhooks": {
            "status": {"url": hooks.url("/status")},
            "postCall": {"url": hooks.url("/post-call")},
        },
    }
    record.update(fields)
    return record


def chat_messages(llm: WireServer) -> list[list[dict[str, Any]]]:
    """The ``messages`` of every chat request the LLM received, in order."""
    return [
        r.body["messages"]
        for r in llm.records("/chat/completions")
        if isinstance(r.body, dict) and "messages" in r.body
    ]


def texts(messages: list[dict[str, Any]], role: str) -> list[str]:
    return [str(m.get("content") or "") for m in messages if m.get("role") == role]


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        await asyncio.sleep(0.05)


def call_started(worker: WorkerProcess, room: str) -> bool:
    """The worker's job for ``room`` has started its session (its DTMF listener is on)."""
    return any(
        r.get("room") == room and r.get("message") == "call started" for r in worker.log_records()
    )


def report_events(report: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["data"] for e in report["events"] if e["type"] == kind]


def assert_greeted_with(said: list[str], report: dict[str, Any], first_message: str) -> None:
    """The agent's turns ``said`` open with the whole ``first_message``, after at most the
    starts of it (prefixes) that a provisional human withdrawn as the greeting went on
    left, one per ``amd_provisional_withdrawn`` event of the ``report``."""
    assert first_message in said, said
    early = said[: said.index(first_message)]
    withdrawn = report_events(report, "amd_provisional_withdrawn")
    assert len(early) <= len(withdrawn), (said, withdrawn)
    assert all(first_message.startswith(t.rstrip(".,!? ")) for t in early), said
