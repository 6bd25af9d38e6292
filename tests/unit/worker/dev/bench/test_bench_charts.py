"""The bench charts show the reports' figures: ``bench failover``'s each cell's added
median and p95 per layer with the healthy hedge rate; ``bench latency``'s the worker time
on the caller's clock and on its own, labelled as the JSON names them."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from worker.dev.bench.plot import _failover, _latency, plot


def cell(median: float, p95: float) -> dict[str, float]:
    return {"median": 1.0, "p95": 1.0, "added_median": median, "added_p95": p95, "runs": 3}


REPORT = {
    "repeats": 3,
    "llm": {
        "baseline_first_output": 0.05,
        "hedge_rate_healthy": 0.02,
        "before_stall": cell(0.31, 0.36),
        "mid_reset": cell(0.05, 0.07),
    },
    "tts": {"hedge_rate_healthy": 0.0, "before_stall": cell(0.4, 0.61)},
}


def test_failover_chart_plots_the_added_delays_not_the_repeat_count(tmp_path: Path) -> None:
    fig = plt.figure()
    try:
        _failover(REPORT, fig)
        llm_ax, tts_ax = fig.axes
        heights = sorted(round(p.get_height(), 3) for p in llm_ax.patches)
        assert heights == [0.05, 0.07, 0.31, 0.36]
        assert [t.get_text() for t in llm_ax.get_xticklabels()] == ["before_stall", "mid_reset"]
        assert "0.02" in llm_ax.get_title() and "tts" in tts_ax.get_title()
        assert sorted(p.get_height() for p in tts_ax.patches) == pytest.approx([0.4, 0.61])
    finally:
        plt.close(fig)
    path = plot("failover", REPORT, tmp_path / "failover.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def stats(p50: float, p95: float) -> dict[str, float]:
    return {"n": 10, "p50_ms": p50, "p95_ms": p95, "max_ms": p95}


def test_latency_chart_labels_the_caller_clock_and_the_workers_own_clock() -> None:
    report = {
        "stack": "fixed",
        "turns_measured": 10,
        "stages_after_caller_end_of_speech": {"llm_first_token": stats(300, 350)},
        "provider_and_response_delay": stats(600, 640),
        "worker_time": stats(25, 38),
        "worker_time_own_clock": stats(21, 30),
        "goal": {"worker_p50_ms": 10, "worker_p95_ms": 25},
    }
    fig = plt.figure()
    try:
        _latency(report, fig)
        ax = fig.axes[-1]
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == [
            "response delay + providers",
            "worker_time (caller clock)",
            "worker_time_own_clock (worker clock)",
        ]
        own = [
            p.get_height() for p in ax.patches if p.get_facecolor() == ax.patches[2].get_facecolor()
        ]
        assert own == [21, 30], "the worker's own-clock figures are drawn"
        assert "caller clock" in ax.get_title() and "own clock p50 21" in ax.get_title()
    finally:
        plt.close(fig)
