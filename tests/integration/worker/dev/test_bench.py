"""``voice-worker bench``: small runs produce well-formed reports (JSON on stdout, JSON and
PNG files). Figures are not judged here: a benchmark is a command that prints figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from worker.settings import REPO_ROOT

REPO = REPO_ROOT
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def bench(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.dev.bench", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def report_of(proc: subprocess.CompletedProcess[str], out: Path, name: str) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary: dict[str, Any] = json.loads(proc.stdout)
    assert summary["json"] == str(out / f"{name}.json")
    assert (out / f"{name}.png").read_bytes()[:8] == PNG_MAGIC
    full: dict[str, Any] = json.loads((out / f"{name}.json").read_text())
    assert full["benchmark"] == name == summary["benchmark"]
    return full


def test_audio_quick_reports_each_goal_with_its_reference(tmp_path: Path) -> None:
    report = report_of(bench("audio", "--quick", "--out", str(tmp_path)), tmp_path, "audio")
    goals = report["goals"]
    assert set(goals) == {
        "vad_endpointing_ms_per_10ms_frame",
        "stretch_realtime_factor_min",
        "mix_ms_per_10ms_frame",
    }
    assert all(isinstance(g["met"], bool) and g["value"] > 0 for g in goals.values())
    assert set(goals["stretch_realtime_factor_min"]["speedup_vs_audiotsm"]) == {
        "0.75",
        "1.25",
        "2.0",
    }


def test_latency_fixed_stack_times_every_stage_of_two_turns(tmp_path: Path) -> None:
    proc = bench("latency", "--turns", "2", "--stack", "fixed", "--out", str(tmp_path))
    report = report_of(proc, tmp_path, "latency")
    assert report["turns_measured"] == 2
    # a loaded machine may delay an answer past the caller's next turn; one must be heard
    assert 1 <= report["e2e"]["n"] == report["turns_with_agent_audio"]
    stages = report["stages_after_caller_end_of_speech"]
    assert set(stages) >= {"end_of_turn_decided", "stt_final", "first_agent_audio_heard"}
    timed = [t for t in report["turns"] if t["worker"] is not None]
    assert timed
    for turn in timed:
        # the agent cannot be heard before the caller stopped and the response delay passed
        assert turn["e2e"] > report["response_delay_s"]
        assert turn["provider"] >= report["response_delay_s"]
        assert abs(turn["e2e"] - turn["provider"] - turn["worker"]) < 1e-6


def test_capacity_steps_up_and_reads_the_worker_load(tmp_path: Path) -> None:
    proc = bench(
        "capacity",
        "--max",
        "2",
        "--step-seconds",
        "5",
        "--time-limit",
        "100",
        "--min-turns",
        "1",
        "--out",
        str(tmp_path),
    )
    report = report_of(proc, tmp_path, "capacity")
    steps = report["steps"]
    assert [s["calls"] for s in steps] == [1, 2][: len(steps)] and steps
    for step in steps:
        assert step["frame_gap_ms"]["n"] > 0
        assert step["worker_rss_mb_peak"] > 0
        # the machine figure counts the callers and servers on top of the worker
        assert step["machine_cpu_percent_mean"] > 0 and step["worker_cpu_percent_mean"] > 0
        # slots in use / MAX_CONCURRENT_CALLS, as served on the worker's /worker endpoint
        assert step["reported_load_max"] is not None
        assert 0 < step["reported_load_max"] <= step["calls"] / 20 + 1e-9
        # the default callers are the Go load generator, which reports its own CPU
        assert step["loadgen_cpu_percent_mean"] > 0
    assert report["caller"] == "go"
    assert report["reference_calls_per_core"]


def test_bad_arguments_exit_2_naming_the_flag(tmp_path: Path) -> None:
    proc = bench("latency", "--turns", "0", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "--turns" in proc.stderr
    assert proc.stdout == ""
