"""Development and test tooling, never imported by the runtime (an import-linter contract
says so): ``replay``, the caller side of a local call, the local services, fault injection
and the benchmarks.

The names below resolve on first use (``pipelines.lazy``): ``voice-worker --help`` reads
the ``bench`` parser from ``worker.dev.bench``, which runs this file, and must not import
the LiveKit SDK for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipelines.lazy import lazy_exports

if TYPE_CHECKING:
    from worker.dev.caller import AGENT_RATE, SPEECH_RMS, CallRecording, run_caller, turn_metrics
    from worker.dev.faults import (
        ArmedFault,
        FaultSpec,
        armed,
        parse_fault,
        target,
        worker_overrides,
    )
    from worker.dev.replay import local_stack, replay_call, summary_text

__all__ = [
    "AGENT_RATE",
    "SPEECH_RMS",
    "ArmedFault",
    "CallRecording",
    "FaultSpec",
    "armed",
    "local_stack",
    "parse_fault",
    "replay_call",
    "run_caller",
    "summary_text",
    "target",
    "turn_metrics",
    "worker_overrides",
]


__getattr__ = lazy_exports(
    __name__,
    __all__,
    {
        "caller": ("AGENT_RATE", "SPEECH_RMS", "CallRecording", "run_caller", "turn_metrics"),
        "faults": ("ArmedFault", "FaultSpec", "armed", "parse_fault", "target", "worker_overrides"),
        "replay": ("local_stack", "replay_call", "summary_text"),
    },
)
