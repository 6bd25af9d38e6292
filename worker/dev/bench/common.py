"""What every benchmark shares: its error, progress on stderr, percentiles in
milliseconds and the JSON report file."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipelines.errors import VoiceWorkerError
from worker.settings import REPO_ROOT

AUDIO_FIXTURES = REPO_ROOT / "fixtures" / "audio"


class BenchError(VoiceWorkerError):
    """A benchmark could not run (a missing piece, a call that never started)."""


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def stats_ms(values: Sequence[float]) -> dict[str, float | int | None]:
    """p50/p95/max in milliseconds of values in seconds."""

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 1)

    return {
        "n": len(values),
        "p50_ms": ms(percentile(values, 50)),
        "p95_ms": ms(percentile(values, 95)),
        "max_ms": ms(max(values) if values else None),
    }


def write_report(out: Path, name: str, report: Mapping[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return path
