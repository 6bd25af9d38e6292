"""The pre-call webhook (``worker.call.lifecycle.pre_call_hook`` and ``worker.plan.load_call``)
against a real signature-verifying receiver on loopback, quoting reference ``002_*``:
"Supported pre-call override keys include ... pronunciation and text replacement rules";
a bad pre-call reply is logged, reported and ignored, and the call goes on with its own
config (it used to end with "call not started")."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.fakes import Receiver
from worker.call.lifecycle import pre_call_hook
from worker.config import (
    PRE_CALL_APPLIED,
    PRE_CALL_IGNORED,
    CachingControlPlane,
    FileControlPlane,
    parse_dispatch,
)
from worker.plan import LoadedCall, load_call
from worker.settings import Settings

FRONT_DESK = "agent_01JC0FRNTDESK0000000000000"
OWN_FIRST_MESSAGE = "Thanks for calling Acme Dental. How can I help?"
KEY = "whsec_" + "cHJlLWNhbGwtdGVzdC1rZXk="


@pytest_asyncio.fixture(loop_scope="function")
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver(KEY) as r:
        yield r


async def call_with_reply(
    receiver: Receiver,
    body: Any,
    control_plane_dir: Path,
    settings: Callable[..., Settings],
    dispatch: dict[str, Any] | None = None,
) -> LoadedCall:
    receiver.reply("/pre-call", body)
    agent = json.loads((control_plane_dir / "agents" / f"{FRONT_DESK}.json").read_text())
    agent["webhooks"]["preCall"] = {"url": receiver.url("/pre-call")}
    call = parse_dispatch(
        {
            "agent": agent,
            "direction": "inbound",
            "from": "+12015551234",
            "textReplacements": [{"find": "Acme", "replace": "Ack-mee"}],
            **(dispatch or {}),
        }
    )
    s = settings(webhook_secret=KEY)
    hook = pre_call_hook(s, call_id="call-1", room="room-1", direction="inbound")
    loaded = await load_call(
        CachingControlPlane(FileControlPlane(control_plane_dir)), call, s, pre_call=hook
    )
    (delivery,) = receiver.to("/pre-call")
    assert delivery.signature_error is None and delivery.payload["type"] == "call.pre_call"
    return loaded


@pytest.mark.parametrize(
    "rules",
    [
        {"pronunciation": [{"word": "Nguyen", "pronunciation": "win"}]},
        {"pronunciation": {"Nguyen": "win"}},
        {"textReplacements": [{"find": "Nguyen", "replace": "win"}]},
    ],
)
async def test_pronunciation_key_in_a_pre_call_reply_is_applied(
    receiver: Receiver,
    control_plane_dir: Path,
    settings: Callable[..., Settings],
    rules: dict[str, Any],
) -> None:
    """'Supported pre-call override keys include ... pronunciation and text replacement
    rules': a reply's rules replace the dispatch's; the call starts with them."""
    body = {"pipelineConfig": {"firstMessage": "Hi Maya.", **rules, "metadata": {"plan": "pro"}}}
    loaded = await call_with_reply(receiver, body, control_plane_dir, settings)
    assert loaded.pre_call == PRE_CALL_APPLIED
    assert loaded.plan.first_message == "Hi Maya."
    assert loaded.plan.text_replacements == (("Nguyen", "win"),)


async def test_pronunciation_and_replacement_rules_both_apply(
    receiver: Receiver, control_plane_dir: Path, settings: Callable[..., Settings]
) -> None:
    body = {
        "pronunciation": [{"word": "Nguyen", "pronunciation": "win"}],
        "textReplacements": {"Dr.": "Doctor"},
    }
    loaded = await call_with_reply(receiver, body, control_plane_dir, settings)
    assert loaded.pre_call == PRE_CALL_APPLIED
    assert set(loaded.plan.text_replacements) == {("Nguyen", "win"), ("Dr.", "Doctor")}


async def test_a_reply_without_rules_keeps_the_dispatch_rules(
    receiver: Receiver, control_plane_dir: Path, settings: Callable[..., Settings]
) -> None:
    loaded = await call_with_reply(
        receiver, {"firstMessage": "Hello."}, control_plane_dir, settings
    )
    assert loaded.pre_call == PRE_CALL_APPLIED
    assert loaded.plan.first_message == "Hello."
    assert loaded.plan.text_replacements == (("Acme", "Ack-mee"),)


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({"pronunciation": "Nguyen=win"}, "text_replacements"),
        ({"pronunciation": [{"word": "Nguyen"}]}, "text_replacements.0.replace"),
        ({"metadata": ["not", "an", "object"]}, "metadata"),
        ({"ttsOptions": {"speakingRate": 9}}, "tts_options.speaking_rate"),
        ({"backgroundAudio": {"preset": "spaceship"}}, "background_noise_preset"),
        ({"constraints": {"allowedProviders": {"tts": ["nosuchvendor"]}}}, "tts"),
    ],
)
async def test_bad_pre_call_reply_is_logged_reported_and_ignored(
    receiver: Receiver,
    control_plane_dir: Path,
    settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
    body: dict[str, Any],
    names: str,
) -> None:
    """002: a bad pre-call reply must not end the call ('call not started'): it is logged,
    reported (the report's pre_call outcome) and ignored, and the call goes on with its own
    config."""
    body = {**body, "firstMessage": "Never said."}
    with caplog.at_level(logging.WARNING, logger="worker.plan.loader"):
        loaded = await call_with_reply(receiver, body, control_plane_dir, settings)
    assert loaded.pre_call is not None and loaded.pre_call.startswith(PRE_CALL_IGNORED)
    assert names in loaded.pre_call
    assert loaded.plan.first_message == OWN_FIRST_MESSAGE
    assert loaded.plan.text_replacements == (("Acme", "Ack-mee"),)
    assert [r.getMessage() for r in caplog.records] == [loaded.pre_call]
