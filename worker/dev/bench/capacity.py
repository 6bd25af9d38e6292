"""``bench capacity``: concurrent calls per worker process group until audio quality breaks.

Steps of 1, 2, 4, 6, ... concurrent calls run against one worker on the fixed-delay stack
(``stack``); a step passes while the agent's audio frame gaps at the callers, the worker's
own time (``latency``) and the share of answered turns stay within limits. psutil samples
the worker process tree's CPU and memory meanwhile, and the worker's ``/worker`` endpoint
its reported load.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from worker.dev.bench.common import percentile, progress, stats_ms
from worker.dev.bench.latency import TurnRow, turn_rows
from worker.dev.bench.stack import FixedDelays, Stack, caller_scripts, run_call, running_stack

if TYPE_CHECKING:
    from worker.dev.caller import CallRecording
    from worker.dev.gocaller import LoadgenRun

FRAME_GAP_LIMIT_MS = 40.0
CAPACITY_WORKER_P95_LIMIT_MS = 50.0
MIN_TURNS_PER_STEP = 20
"""A capacity step runs at least this many caller turns by default (one call: ~140 s), so
its worker time p95 is a percentile and not the single slowest turn."""
REFERENCE_CALLS_PER_CORE = {
    "livekit_published_vad_only": 8.0,
    "pipecat_users_reported": 5.0,
}
CALLS_PER_CORE_GOAL = 20.0
CALLERS = ("go", "python")


def frame_gaps(rec: CallRecording) -> list[float]:
    """Inter-arrival gaps (s) of the agent's audio frames at the caller while the agent
    speaks: consecutive frames of which at least one is speech."""
    from worker.dev.caller import SPEECH_RMS

    gaps = []
    prev_at, prev_loud = None, False
    for at, samples in rec.agent_frames:
        loud = float(np.sqrt(np.mean(np.square(samples)))) > SPEECH_RMS
        if prev_at is not None and (loud or prev_loud):
            gaps.append(at - prev_at)
        prev_at, prev_loud = at, loud
    return gaps


def _worker_tree() -> list[Any]:
    import psutil

    me = psutil.Process()
    for child in me.children():
        try:
            cmd = child.cmdline()
        except psutil.Error:
            continue
        if cmd[-3:] == ["-m", "worker", "start"]:
            return [child, *child.children(recursive=True)]
    return []


class TreeSampler:
    """CPU and memory of the worker process tree (psutil), sampled every ``every`` s."""

    def __init__(self, every: float = 1.0) -> None:
        self.every = every
        self.cpu_percent: list[float] = []
        self.machine_cpu_percent: list[float] = []
        """All processes of the machine (100 = one core): callers, LiveKit, providers too."""
        self.rss_bytes: list[int] = []
        self.uss_bytes: list[int] = []
        """Memory only each process has (no shared pages): what a call really adds."""
        self.job_processes: list[int] = []
        self.loads: list[float] = []
        self._seen: dict[int, Any] = {}

    async def run(self, http_port: int, stop: asyncio.Event) -> None:
        import psutil

        psutil.cpu_percent(None)
        while not stop.is_set():
            # psutil reads /proc (smaps for USS): off the loop that plays the callers
            await asyncio.to_thread(self._sample)
            load = await asyncio.to_thread(_worker_load, http_port)
            if load is not None:
                self.loads.append(load)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every)

    def _sample(self) -> None:
        import psutil

        procs = _worker_tree()
        cpu, rss, uss = 0.0, 0, 0
        for p in procs:
            known = self._seen.setdefault(p.pid, p)
            try:
                cpu += known.cpu_percent(None)
                mem = known.memory_full_info()
            except psutil.Error:
                continue
            rss += mem.rss
            uss += mem.uss
        self.cpu_percent.append(cpu)
        self.machine_cpu_percent.append(psutil.cpu_percent(None) * (os.cpu_count() or 1))
        self.rss_bytes.append(rss)
        self.uss_bytes.append(uss)
        self.job_processes.append(max(0, len(procs) - 1))


def _worker_load(port: int) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/worker", timeout=1.0) as resp:
            return float(json.loads(resp.read()).get("worker_load", 0.0))
    except (OSError, ValueError):
        return None


def capacity_steps(max_calls: int) -> list[int]:
    steps = [1, 2, 4]
    n = 6
    while n <= max_calls:
        steps.append(n)
        n += 2 if n < 12 else 4
    return [s for s in steps if s <= max_calls] or [1]


async def _capacity_step(
    st: Stack, n: int, step_seconds: float, cores: int, min_turns: int, caller: str, workdir: Path
) -> dict[str, Any]:
    """One step of ``n`` concurrent calls. Limits: frame gap p99 over 40 ms, worker time
    p95 (own clock) over 50 ms, or under 90 % of turns answered."""
    # the LiveKit SDK only once a call is made: CLI start-up stays light
    from worker.dev.gocaller import PacketRecording, run_go_callers

    # at least min_turns turns, so a step's p95 is not just its slowest turn
    per_call = max(1, round(step_seconds / 7.0), math.ceil(min_turns / n))
    scripts = caller_scripts(n, per_call)
    sampler = TreeSampler()
    stop = asyncio.Event()
    sampling = asyncio.create_task(sampler.run(st.worker.http_port, stop))
    started = time.monotonic()
    loadgen: LoadgenRun | None = None
    results: Sequence[CallRecording | BaseException]
    try:
        if caller == "go":
            loadgen = await run_go_callers(
                st.livekit,
                st.worker.agent_name,
                {"agent": st.agent},
                scripts,
                workdir=workdir,
                answer_timeout=15.0,
            )
            results = loadgen.calls
        else:
            results = await asyncio.gather(
                *(run_call(st, s, answer_timeout=15.0) for s in scripts), return_exceptions=True
            )
    finally:
        stop.set()
        await sampling
    failures = [repr(r) for r in results if isinstance(r, BaseException)]
    rows: list[TurnRow] = []
    gaps: list[float] = []
    for i, (rec, script) in enumerate(zip(results, scripts, strict=True)):
        if isinstance(rec, BaseException):
            continue
        rows.extend(
            turn_rows(
                i, rec, script, stack=st.stack, response_delay=st.response_delay, delays=st.delays
            )
        )
        if isinstance(rec, PacketRecording):
            gaps.extend(g / 1000.0 for g in rec.packet_gaps_ms)
        else:
            gaps.extend(frame_gaps(rec))
    worker = [r.worker_own_clock for r in rows if r.worker_own_clock is not None]
    # the first seconds hold process start-up; the busy part is what a slot costs
    cpu = sorted(sampler.cpu_percent)[len(sampler.cpu_percent) // 2 :] or [0.0]
    machine = sampler.machine_cpu_percent[1:] or [0.0]
    rss = max(sampler.rss_bytes, default=0)
    uss = max(sampler.uss_bytes, default=0)
    gap_p99 = percentile(gaps, 99)
    gap_max = max(gaps, default=None)
    w95 = percentile(worker, 95)
    answered = sum(r.e2e is not None for r in rows)
    ok = (
        not failures
        and gap_p99 is not None
        and gap_p99 * 1000 <= FRAME_GAP_LIMIT_MS
        and w95 is not None
        and w95 * 1000 <= CAPACITY_WORKER_P95_LIMIT_MS
        and answered >= 0.9 * len(rows)
    )
    return {
        "calls": n,
        "calls_per_core": round(n / cores, 2),
        "ok": ok,
        "seconds": round(time.monotonic() - started, 1),
        "turns": len(rows),
        "turns_answered": answered,
        "failed_calls": failures,
        "worker_time": stats_ms(worker),
        "e2e": stats_ms([r.e2e for r in rows if r.e2e is not None]),
        "frame_gap_ms": {
            "n": len(gaps),
            "p50": None if not gaps else round(float(np.median(gaps)) * 1000, 1),
            "p99": None if gap_p99 is None else round(gap_p99 * 1000, 1),
            "max": None if gap_max is None else round(gap_max * 1000, 1),
        },
        "worker_cpu_percent_busy_median": round(float(np.median(cpu)), 1),
        "worker_cpu_percent_mean": round(float(np.mean(sampler.cpu_percent or [0.0])), 1),
        "machine_cpu_percent_mean": round(float(np.mean(machine)), 1),
        "worker_cpu_percent_per_call": round(float(np.median(cpu)) / n, 1),
        "cpu_bound_calls_per_core": (
            round(100.0 * n / float(np.median(cpu)), 1) if float(np.median(cpu)) > 0 else None
        ),
        "worker_rss_mb_peak": round(rss / 2**20, 1),
        "worker_rss_mb_per_call": round(rss / 2**20 / n, 1),
        "worker_uss_mb_peak": round(uss / 2**20, 1),
        "job_processes_peak": max(sampler.job_processes, default=0),
        "reported_load_max": max(sampler.loads, default=None),
        "reported_load_samples": sorted(set(round(v, 3) for v in sampler.loads)),
        **_loadgen_figures(loadgen, n),
    }


def _loadgen_figures(run: LoadgenRun | None, n: int) -> dict[str, Any]:
    """The Go caller's own cost over the step (its rusage over its wall time)."""
    if run is None:
        return {}
    return {
        "loadgen_cpu_percent_mean": round(run.cpu_percent, 2),
        "loadgen_cpu_percent_per_call": round(run.cpu_percent / n, 2),
        "loadgen_max_rss_mb": round(run.max_rss_mb, 1),
    }


async def bench_capacity(
    *,
    max_calls: int = 16,
    step_seconds: float = 40.0,
    time_limit: float = 600.0,
    min_turns: int = MIN_TURNS_PER_STEP,
    response_delay: float = 0.4,
    delays: FixedDelays | None = None,
    caller: str = "go",
    steps: Sequence[int] | None = None,
    workdir: Path,
) -> dict[str, Any]:
    """Concurrent calls against one worker process group, stepped up until audio frame
    gaps or worker time break the limits (or the time limit is reached). ``caller``:
    ``go`` (the low-CPU Go load generator) or ``python`` (``worker.dev.caller``);
    ``steps``: the call counts to run instead of ``capacity_steps(max_calls)``."""
    if max_calls < 1 or step_seconds <= 0 or time_limit <= 0 or min_turns < 1:
        raise ValueError("--max, --step-seconds, --time-limit and --min-turns must be positive")
    if caller not in CALLERS:
        raise ValueError(f"--caller: expected one of {', '.join(CALLERS)}, got {caller!r}")
    if steps is not None and (not steps or min(steps) < 1):
        raise ValueError("--steps: expected positive call counts, e.g. 1,4,8")
    if steps is not None:
        max_calls = max(steps)
    delays = delays or FixedDelays()
    cores = os.cpu_count() or 1
    max_slots = max(20, math.ceil(max_calls / 0.75) + 1)
    env = {
        "NUM_IDLE_PROCESSES": str(min(max_calls, 4)),
        "MAX_CONCURRENT_CALLS": str(max_slots),
    }
    ran: list[dict[str, Any]] = []
    deadline = time.monotonic() + time_limit
    stopped_by = "max reached"
    async with running_stack(
        "fixed", workdir=workdir, response_delay=response_delay, delays=delays, worker_env=env
    ) as st:
        idle_rss = sum(p.memory_info().rss for p in _worker_tree())
        for n in steps or capacity_steps(max_calls):
            if time.monotonic() + step_seconds + 20 > deadline:
                stopped_by = "time limit"
                break
            progress(f"capacity: {n} concurrent call(s)")
            step = await _capacity_step(
                st, n, step_seconds, cores, min_turns, caller, workdir / "loadgen"
            )
            ran.append(step)
            progress(
                f"capacity: {n} calls ok={step['ok']} "
                f"gap_max={step['frame_gap_ms']['max']} ms "
                f"worker_p95={step['worker_time']['p95_ms']} ms "
                f"cpu={step['worker_cpu_percent_busy_median']}%"
                f" loadgen_cpu={step.get('loadgen_cpu_percent_mean')}%"
            )
            if not step["ok"] and steps is None:  # listed steps all run: figures per step
                stopped_by = "quality limit"
                break
            await asyncio.sleep(2.0)  # let the finished jobs' processes exit
    good = [s for s in ran if s["ok"]]
    best = max((s["calls"] for s in good), default=0)
    marginal = per_added_call(ran, "worker_cpu_percent_mean")
    loadgen_marginal = per_added_call(ran, "loadgen_cpu_percent_mean") if caller == "go" else None
    return {
        "benchmark": "capacity",
        "cores": cores,
        "stack": "fixed",
        "caller": caller,
        "fixed_delays_s": asdict(delays),
        "response_delay_s": response_delay,
        "limits": {
            "frame_gap_p99_ms": FRAME_GAP_LIMIT_MS,
            "worker_time_p95_ms": CAPACITY_WORKER_P95_LIMIT_MS,
            "turns_answered_min_share": 0.9,
        },
        "max_concurrent_calls_setting": max_slots,
        "stopped_by": stopped_by,
        "max_calls_within_limits": best,
        "calls_per_core": round(best / cores, 2),
        "goal_calls_per_core": CALLS_PER_CORE_GOAL,
        "reference_calls_per_core": REFERENCE_CALLS_PER_CORE,
        "worker_idle_rss_mb": round(idle_rss / 2**20, 1),
        "worker_cpu_percent_per_added_call": marginal,
        "worker_uss_mb_per_added_call": per_added_call(ran, "worker_uss_mb_peak"),
        "loadgen_cpu_percent_per_added_call": loadgen_marginal,
        "loadgen_to_worker_cpu_per_added_call": (
            round(loadgen_marginal / marginal, 3)
            if loadgen_marginal is not None and marginal
            else None
        ),
        "cpu_bound_calls_per_core_marginal": (
            round(100.0 / marginal, 1) if marginal and marginal > 0 else None
        ),
        "steps": ran,
        "notes": CAPACITY_NOTES,
    }


def per_added_call(steps: Sequence[Mapping[str, Any]], key: str) -> float | None:
    """Least-squares slope of a step figure (``key``) over the number of calls: what one
    more call costs, without the fixed cost of the worker and its idle processes."""
    pts = [(s["calls"], s[key]) for s in steps]
    if len({n for n, _ in pts}) < 2:
        return None
    slope = float(np.polyfit([n for n, _ in pts], [c for _, c in pts], 1)[0])
    return round(slope, 1)


CAPACITY_NOTES = [
    "One worker process group (python -m worker start; one process per job); the callers, "
    "the LiveKit server and the provider servers share the same cores, so figures are a "
    "floor for the worker alone.",
    "worker_time here is the worker's own clock (LiveKit e2e_latency minus the provider "
    "share, see bench latency); the limit is its p95 over 50 ms, each call's first turn "
    "(connections) included.",
    "frame gaps: inter-arrival of the agent's audio frames at the caller (rtc.AudioStream) "
    "while the agent speaks; the receiver's jitter buffer smooths short stalls.",
    "CPU: psutil over the worker process tree, median of the busier half of 1 s samples "
    "and the mean; machine_cpu_percent_mean is every process (the callers, LiveKit and the "
    "provider servers too: machine minus worker is the harness). "
    "worker_cpu_percent_per_added_call is the slope of the worker's mean CPU over the "
    "steps (what one more call costs, without the worker's fixed cost); "
    "memory: peak summed RSS (shared pages counted per process, so an upper bound) and "
    "USS (pages only that process has; the slope of USS over calls is a call's own memory).",
    "caller go: one Go process (worker/dev/loadgen, server-sdk-go) places all of a step's "
    "calls, publishes pre-encoded Opus and decodes the agent's packets only while an answer "
    "is awaited; frame gaps are then the arrival gaps of consecutive agent RTP packets (20 ms "
    "each) and first agent audio the first packet above the speech level; its own CPU "
    "(rusage over its wall time) is loadgen_cpu_percent_*. caller python: the rtc SDK "
    "callers in the bench's process (10 ms frames, every frame decoded).",
    "reported_load: worker_load from the worker's HTTP /worker endpoint (slots in use / "
    "MAX_CONCURRENT_CALLS).",
]
