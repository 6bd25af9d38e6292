"""Agent records the dev tools and tests build from the committed control plane."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from worker.settings import REPO_ROOT

CONTROL_PLANE = REPO_ROOT / "fixtures" / "control_plane"
FRONT_DESK_ID = "agent_01JC0FRNTDESK0000000000000"


def scripted_front_desk(
    llm_url: str, webhooks: Mapping[str, str] | None = None, **fields: Any
) -> dict[str, Any]:
    """The front desk of the ``file://`` control plane on the offline STT and TTS, its LLM
    the scripted OpenAI-compatible server at ``llm_url`` (cheap on the CPU, so a test or a
    bench measures the call, not the model), no noise bed and no webhook secret of its own
    (the organisation's signs). ``webhooks`` maps a webhook name (``status``, ``postCall``)
    to its URL and replaces the record's; ``fields`` set any other field."""
    record = json.loads((CONTROL_PLANE / "agents" / f"{FRONT_DESK_ID}.json").read_text())
    record = {k: v for k, v in record.items() if not k.startswith("background")}
    record.update(
        llm_provider="custom",
        llm_model="scripted",
        llm_base_url=f"{llm_url}/v1",
        stackPreferences={
            "allowedProviders": {"stt": ["local"], "llm": ["custom"], "tts": ["local"]}
        },
        **fields,
    )
    if webhooks is not None:
        record["webhooks"] = {name: {"url": url} for name, url in webhooks.items()}
    record.pop("webhook_secret", None)
    record.pop("webhookSecret", None)
    return record
