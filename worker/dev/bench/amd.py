"""``bench amd``: the AMD classifier over a labelled manifest (``fixtures/amd/manifest.json``).

    python -m worker.dev.bench.amd [MANIFEST]
        [--stt moonshine+phrases|moonshine|phrases|pocketsphinx|reference|none]
        [--half all|even|odd] [--measured-latency]

Every recording is replayed through ``amd_file`` in simulated real time. ``--stt`` picks
where the transcript comes from: ``moonshine+phrases`` (the default offline source: both
recognisers' texts, see ``pipelines.amd.moonshine_phrases_transcriber``), ``moonshine``
(Moonshine base-en, ``pipelines.engines.moonshine``), ``phrases`` (pocketsphinx with the
call-language model of ``pipelines.amd.phrase_lm``) or ``pocketsphinx`` (open vocabulary), all run
on the utterances the simulated streaming STT cuts; ``reference`` (the
manifest's phrase texts, delivered like a good streaming STT would: interims every
second, the final at the phrase end, each ``stt_latency`` later) or ``none`` (audio cues
only). ``reference`` is the ceiling, ``none`` the floor. ``--measured-latency`` delivers
each offline result after its measured compute time instead of the fixed ``stt_latency``.

Figures: accuracy overall, per label and per half (even seeds tuned on, odd held out),
the confusion matrix, decision time after the greeting's end (median, p95) per label,
the share of verdicts meeting the latency goals, and the latest verdict (<= timeout).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Literal, get_args

from pipelines.amd import (
    Transcriber,
    Verdict,
    amd_file,
    moonshine_phrases_transcriber,
    moonshine_transcriber,
    phrase_transcriber,
    pocketsphinx_transcriber,
)
from pipelines.types import AMD_CATEGORIES
from worker.settings import REPO_ROOT

DEFAULT_MANIFEST = REPO_ROOT / "fixtures" / "amd" / "manifest.json"

SttSource = Literal[
    "moonshine+phrases", "moonshine", "phrases", "pocketsphinx", "reference", "none"
]
STT_SOURCES: tuple[SttSource, ...] = get_args(SttSource)
TRANSCRIBERS: dict[str, Transcriber] = {
    "moonshine+phrases": moonshine_phrases_transcriber,
    "moonshine": moonshine_transcriber,
    "phrases": phrase_transcriber,
    "pocketsphinx": pocketsphinx_transcriber,
}
Half = Literal["all", "even", "odd"]


def reference_transcripts(
    speech: list[list[Any]], *, latency: float = 0.35, interim_every: float = 1.0
) -> list[tuple[float, str, bool]]:
    """STT results a streaming recognizer would give for the phrases ``[start, end, text]``:
    words revealed in proportion to time elapsed, one final per phrase."""
    results: list[tuple[float, str, bool]] = []
    for start, end, text in speech:
        words = str(text).split()
        t = float(start) + interim_every
        while t < float(end):
            n = max(1, round(len(words) * (t - float(start)) / (float(end) - float(start))))
            results.append((t + latency, " ".join(words[:n]), False))
            t += interim_every
        results.append((float(end) + latency, str(text), True))
    return results


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return round(ordered[k], 3)


def bench_amd(
    manifest: Path = DEFAULT_MANIFEST,
    *,
    stt: SttSource = "moonshine+phrases",
    timeout_seconds: float = 8.0,
    stt_latency: float = 0.35,
    measured_latency: bool = False,
    half: Half = "all",
) -> dict[str, Any]:
    entries: list[dict[str, Any]] = json.loads(Path(manifest).read_text())
    if half != "all":
        parity = 0 if half == "even" else 1
        entries = [e for e in entries if e.get("seed", 0) % 2 == parity]
    base = Path(manifest).parent
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for entry in entries:
        transcripts: list[tuple[float, str, bool]] | None = None
        if stt == "reference":
            transcripts = reference_transcripts(entry.get("speech", []), latency=stt_latency)
        elif stt == "none":
            transcripts = []
        verdict: Verdict = amd_file(
            base / entry["file"],
            timeout_seconds=timeout_seconds,
            stt_latency=None if measured_latency else stt_latency,
            transcripts=transcripts,
            transcriber=TRANSCRIBERS.get(stt),
        )
        greeting_end = entry.get("greeting_end")
        after_end = None if greeting_end is None else verdict.decided_at - greeting_end
        beep_at = entry.get("beep_at")
        rows.append(
            {
                "file": entry["file"],
                "label": entry["label"],
                "seed": entry.get("seed", 0),
                "category": verdict.category,
                "correct": verdict.category == entry["label"],
                "decided_at": verdict.decided_at,
                "after_greeting_end": None if after_end is None else round(after_end, 3),
                "beep_at": beep_at,
                "beep_heard_at": verdict.beep_at,
                "reason": verdict.reason,
            }
        )
    elapsed = time.perf_counter() - started
    return {
        "stt": stt,
        "stt_latency_assumed": "measured" if measured_latency else stt_latency,
        "timeout_seconds": timeout_seconds,
        **amd_figures(rows, timeout_seconds),
        "bench_seconds": round(elapsed, 1),
        "errors": [r for r in rows if not r["correct"]],
    }


def amd_figures(rows: list[dict[str, Any]], timeout_seconds: float) -> dict[str, Any]:
    """The figures of verdicts ``rows`` (``label``, ``seed``, ``category``, ``correct``,
    ``decided_at``, ``after_greeting_end``, ``beep_at``): accuracy overall, per half and
    label, the confusion matrix, decision times after the greeting's end, the latency goals."""

    def accuracy(subset: list[dict[str, Any]]) -> float | None:
        return round(sum(r["correct"] for r in subset) / len(subset), 3) if subset else None

    labels = [c for c in AMD_CATEGORIES if any(r["label"] == c for r in rows)]
    confusion: dict[str, dict[str, int]] = {}
    per_label: dict[str, Any] = {}
    for label in labels:
        mine = [r for r in rows if r["label"] == label]
        confusion[label] = dict(Counter(r["category"] for r in mine))
        delays = [r["after_greeting_end"] for r in mine if r["after_greeting_end"] is not None]
        per_label[label] = {
            "n": len(mine),
            "accuracy": accuracy(mine),
            "after_greeting_end_median": (round(statistics.median(delays), 3) if delays else None),
            "after_greeting_end_p95": _percentile(delays, 0.95),
        }

    def on_time(r: dict[str, Any]) -> bool:
        if r["after_greeting_end"] is None:
            return bool(r["decided_at"] <= timeout_seconds + 1e-6)
        if r["label"] == "human":
            return bool(r["after_greeting_end"] <= 1.0)
        at_beep = r["beep_at"] is not None and r["decided_at"] <= r["beep_at"] + 0.5
        return bool(at_beep or r["after_greeting_end"] <= 1.5)

    halves: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        halves["tune_even_seeds" if r["seed"] % 2 == 0 else "heldout_odd_seeds"].append(r)
    humans = [r for r in rows if r["label"] == "human" and r["correct"]]
    machines = [r for r in rows if r["label"].startswith("machine") and r["correct"]]
    return {
        "n": len(rows),
        "accuracy": accuracy(rows),
        "accuracy_by_half": {k: accuracy(v) for k, v in sorted(halves.items())},
        "accuracy_by_half_and_label": {
            k: {label: accuracy([r for r in v if r["label"] == label]) for label in labels}
            for k, v in sorted(halves.items())
        },
        "per_label": per_label,
        "confusion": confusion,
        "goal_human_within_1s": accuracy([{"correct": on_time(r)} for r in humans]),
        "goal_machine_at_beep_or_1_5s": accuracy([{"correct": on_time(r)} for r in machines]),
        "max_decided_at": max((r["decided_at"] for r in rows), default=None),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="AMD benchmark: figures as JSON")
    parser.add_argument("manifest", nargs="?", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument("--stt", choices=STT_SOURCES, default="moonshine+phrases")
    parser.add_argument("--half", choices=["all", "even", "odd"], default="all")
    parser.add_argument("--timeout", type=float, default=8.0)
    parser.add_argument("--measured-latency", action="store_true")
    args = parser.parse_args(argv)
    if not args.manifest.is_file():
        print(f"{args.manifest}: no such manifest", file=sys.stderr)
        return 2
    print(
        json.dumps(
            bench_amd(
                args.manifest,
                stt=args.stt,
                timeout_seconds=args.timeout,
                measured_latency=args.measured_latency,
                half=args.half,
            ),
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
