"""``bench failover``'s chart shows the report's figures: per layer, each cell's added
median and p95, and the healthy hedge rate."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from worker.dev.bench.plot import _failover, plot


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
