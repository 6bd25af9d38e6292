"""The pre-call webhook's reply as per-call overrides (reference ``002_*``, "Customize calls
before answer"): "Return any supported pipeline overrides at the top level or under
pipelineConfig / pipeline_config"; the keys include "pronunciation and text replacement
rules". A reply that does not validate raises ``ConfigError``; the caller reports it and goes
on with the call's own dispatch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipelines.errors import ConfigError
from worker.config.dispatch import Dispatch, parse_dispatch

PRE_CALL_APPLIED = "pre-call webhook overrides applied"
PRE_CALL_IGNORED = "pre-call webhook reply ignored"
"""Report notes (the ``pre_call`` event's outcome); an ignored reply's note says why."""


def override_dispatch(
    dispatch: Dispatch, reply: Mapping[str, Any], *, source: str = "pre-call webhook reply"
) -> Dispatch:
    """``dispatch`` with the reply's overrides on top: a field the reply sets replaces the
    dispatch's, ``metadata`` is merged key by key. Raises ``ConfigError`` naming ``source``
    and the field; values are never echoed."""
    overrides = reply.get("pipelineConfig") or reply.get("pipeline_config") or reply
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{source}: pipelineConfig is not a JSON object", field="pipelineConfig")
    metadata = overrides.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise ConfigError(f"{source}: metadata is not a JSON object", field="metadata")
    # validated alone, so every spelling and rule shape is the Dispatch's own
    patch = parse_dispatch({**overrides, "metadata": metadata}, source=source)
    update = {name: getattr(patch, name) for name in patch.model_fields_set}
    update["metadata"] = {**dispatch.metadata, **patch.metadata}
    return dispatch.model_copy(update=update)
