"""Charts for ``voice-worker bench`` reports (matplotlib, Agg backend: no display needed).

``plot(name, report, path)`` draws the chart of one benchmark's JSON report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

LATENCY_SEGMENTS = (
    ("end_of_turn_decided", "caller end of speech -> end of turn"),
    ("llm_first_token", "-> LLM first token"),
    ("tts_first_byte", "-> TTS first byte"),
    ("first_agent_audio_heard", "-> first agent audio at caller"),
)


def _latency(report: Mapping[str, Any], fig: Figure) -> None:
    if "stages_after_caller_end_of_speech" not in report:  # --sip: timed at the phone only
        _generic({"benchmark": "latency --sip", **report["e2e_at_phone"]}, fig)
        return
    ax = fig.add_subplot(1, 2, 1)
    stages = report["stages_after_caller_end_of_speech"]
    for col, q in enumerate(("p50_ms", "p95_ms")):
        bottom = 0.0
        for key, label in LATENCY_SEGMENTS:
            value = stages.get(key, {}).get(q)
            if value is None:
                continue
            height = max(0.0, value - bottom)
            ax.bar(
                col,
                height,
                bottom=bottom,
                label=label if col == 0 else None,
                color=f"C{LATENCY_SEGMENTS.index((key, label))}",
            )
            bottom = max(bottom, value)
    ax.set_xticks([0, 1], ["p50", "p95"])
    ax.set_ylabel("ms after caller end of speech")
    ax.set_title(f"Stages ({report['stack']} stack, {report['turns_measured']} turns)")
    ax.legend(fontsize=7, loc="upper left")

    ax2 = fig.add_subplot(1, 2, 2)
    # named as the JSON names them: worker_time is measured on the caller's clock (e2e at
    # the caller minus the providers), worker_time_own_clock on the worker's (LiveKit's
    # e2e_latency minus the same)
    caller = [
        ("response delay + providers", report["provider_and_response_delay"]),
        ("worker_time (caller clock)", report["worker_time"]),
    ]
    own = report.get("worker_time_own_clock") or {}
    for col, q in enumerate(("p50_ms", "p95_ms")):
        bottom = 0.0
        for i, (label, stats) in enumerate(caller):
            value = stats.get(q) or 0.0
            ax2.bar(
                col - 0.2,
                value,
                width=0.4,
                bottom=bottom,
                color=f"C{i + 4}",
                label=label if col == 0 else None,
            )
            bottom += value
        ax2.bar(
            col + 0.2,
            own.get(q) or 0.0,
            width=0.4,
            color="C6",
            label="worker_time_own_clock (worker clock)" if col == 0 else None,
        )
    w = report["worker_time"]
    goal = report.get("goal", {})
    ax2.set_xticks([0, 1], ["p50", "p95"])
    ax2.set_title(
        f"worker_time (caller clock) p50 {w['p50_ms']} ms, p95 {w['p95_ms']} ms; own clock "
        f"p50 {own.get('p50_ms')} ms, p95 {own.get('p95_ms')} ms "
        f"(goal {goal.get('worker_p50_ms')}/{goal.get('worker_p95_ms')})",
        fontsize=8,
    )
    ax2.set_ylabel("ms")
    ax2.legend(fontsize=7, loc="upper left")


def _capacity(report: Mapping[str, Any], fig: Figure) -> None:
    steps = report["steps"]
    calls = [s["calls"] for s in steps]
    ax = fig.add_subplot(1, 2, 1)
    ax.plot(calls, [s["frame_gap_ms"]["max"] or 0 for s in steps], "o-", label="frame gap max")
    ax.plot(calls, [s["worker_time"]["p95_ms"] or 0 for s in steps], "s-", label="worker p95")
    ax.plot(calls, [s["frame_gap_ms"]["p99"] or 0 for s in steps], "^-", label="frame gap p99")
    ax.axhline(report["limits"]["frame_gap_p99_ms"], color="C2", ls="--", lw=0.8)
    ax.set_xlabel("concurrent calls")
    ax.set_ylabel("ms")
    ax.set_title(f"Quality limits ({report['cores']} cores)")
    ax.legend(fontsize=7)
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.plot(calls, [s["worker_cpu_percent_busy_median"] for s in steps], "o-", label="CPU %")
    ax2.set_xlabel("concurrent calls")
    ax2.set_ylabel("worker CPU % (100 = one core)")
    ax3 = ax2.twinx()
    ax3.plot(calls, [s["worker_rss_mb_peak"] for s in steps], "s-", color="C2", label="RSS MB")
    ax3.set_ylabel("worker RSS MB")
    ax2.set_title(
        f"{report['calls_per_core']} calls/core (goal {report['goal_calls_per_core']}; "
        f"LiveKit ~8, Pipecat ~5)",
        fontsize=9,
    )


def _audio(report: Mapping[str, Any], fig: Figure) -> None:
    goals = report["goals"]
    stretch = report["stretch_mix"]["stretch"]
    ax = fig.add_subplot(1, 2, 1)
    names = ["VAD+endpointing", "mix"]
    values = [
        goals["vad_endpointing_ms_per_10ms_frame"]["value"],
        goals["mix_ms_per_10ms_frame"]["value"],
    ]
    limits = [0.05, 0.02]
    ax.bar(range(2), values, color=["C0", "C2"])
    for i, limit in enumerate(limits):
        ax.hlines(limit, i - 0.4, i + 0.4, colors="k", linestyles="--")
    silero = report["vad"]["summary"].get("silero_ms_per_10ms_frame_max")
    if silero:
        ax.set_title(f"ms per 10 ms frame (goal dashed); silero {silero:.3f}", fontsize=9)
    else:
        ax.set_title("ms per 10 ms frame (goal dashed)", fontsize=9)
    ax.set_xticks(range(2), names)
    ax2 = fig.add_subplot(1, 2, 2)
    rates = list(stretch)
    width = 0.25
    for j, engine in enumerate(("ours", "audiotsm_wsola", "sox_tempo")):
        vals = [stretch[r].get(engine, {}).get("ms_per_frame") for r in rates]
        if all(v is None for v in vals):
            continue
        ax2.bar(
            [i + (j - 1) * width for i in range(len(rates))],
            [v or 0 for v in vals],
            width,
            label=engine,
        )
    ax2.hlines(0.1, -0.5, len(rates) - 0.5, colors="k", linestyles="--", label="100x real time")
    ax2.set_xticks(range(len(rates)), [f"rate {r}" for r in rates])
    ax2.set_ylabel("ms per 10 ms frame")
    ax2.set_title("Time-stretch cost", fontsize=9)
    ax2.legend(fontsize=7)


def _amd(report: Mapping[str, Any], fig: Figure) -> None:
    report = report.get("sip", report)  # --sip: the verdicts over the phone leg
    per_label = report["per_label"]
    labels = list(per_label)
    ax = fig.add_subplot(1, 2, 1)
    acc = [_accuracy_of(per_label[k]) for k in labels]
    ax.barh(labels, acc)
    ax.set_xlim(0, 1)
    ax.set_title(f"Accuracy per category (all {report['accuracy']})", fontsize=9)
    ax2 = fig.add_subplot(1, 2, 2)
    confusion = report["confusion"]
    truth = list(confusion)
    predicted = sorted({p for row in confusion.values() for p in row})
    grid = [[confusion[t].get(p, 0) for p in predicted] for t in truth]
    ax2.imshow(grid, cmap="Blues")
    ax2.set_xticks(range(len(predicted)), predicted, rotation=60, fontsize=6)
    ax2.set_yticks(range(len(truth)), truth, fontsize=6)
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            if v:
                ax2.text(j, i, str(v), ha="center", va="center", fontsize=7)
    ax2.set_title("Confusion (rows: truth)", fontsize=9)


def _accuracy_of(row: Any) -> float:
    if isinstance(row, Mapping):
        for key in ("accuracy", "acc"):
            if isinstance(row.get(key), int | float):
                return float(row[key])
    if isinstance(row, int | float):
        return float(row)
    return 0.0


FAILOVER_GOALS = {"stall": 0.5, "hard": 0.15}
"""Added p95 goals (issue 17): stalls, and hard faults (reset, refuse, 500)."""


def _failover(report: Mapping[str, Any], fig: Figure) -> None:
    """Per layer, grouped bars of each fault x moment cell's added delay (median, p95)
    against a healthy run, with the goals as lines; the titles carry the healthy runs'
    hedge rate."""
    layers = [x for x in ("stt", "llm", "tts") if isinstance(report.get(x), Mapping)]
    for n, layer in enumerate(layers, start=1):
        ax: Axes = fig.add_subplot(1, len(layers), n)
        cells = {k: v for k, v in report[layer].items() if isinstance(v, Mapping)}
        names = list(cells)
        xs = range(len(names))
        med = [float(cells[k]["added_median"]) for k in names]
        p95 = [float(cells[k]["added_p95"]) for k in names]
        ax.bar([x - 0.2 for x in xs], med, width=0.4, label="added median")
        bars = ax.bar([x + 0.2 for x in xs], p95, width=0.4, label="added p95")
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in p95], fontsize=7)
        ax.axhline(FAILOVER_GOALS["stall"], color="red", lw=0.8, ls="--", label="stall goal")
        ax.axhline(FAILOVER_GOALS["hard"], color="orange", lw=0.8, ls=":", label="hard goal")
        ax.set_xticks(list(xs), names, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("seconds added vs healthy run")
        rate = report[layer].get("hedge_rate_healthy")
        ax.set_title(f"{layer} (hedge_rate_healthy {rate})", fontsize=9)
        if n == 1:
            ax.legend(fontsize=7)
    fig.suptitle(f"bench failover, {report.get('repeats')} repeats per cell", fontsize=10)


def _generic(report: Mapping[str, Any], fig: Figure) -> None:
    """Bars of the report's top-level numbers (for reports without a dedicated chart)."""
    ax: Axes = fig.add_subplot(1, 1, 1)
    numbers = {
        k: v for k, v in report.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    ax.barh(list(numbers), list(numbers.values()))
    ax.set_title(str(report.get("benchmark", "")))


CHARTS: dict[str, Callable[[Mapping[str, Any], Figure], None]] = {
    "latency": _latency,
    "capacity": _capacity,
    "audio": _audio,
    "amd": _amd,
    "failover": _failover,
}


def plot(name: str, report: Mapping[str, Any], path: Path) -> Path:
    fig = plt.figure(figsize=(11, 4.5))
    try:
        CHARTS.get(name, _generic)(report, fig)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path
