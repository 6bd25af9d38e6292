"""``voice-worker bench``: latency, capacity, audio DSP, AMD and failover benchmarks, each
written as JSON + PNG.

``add_bench_parser`` registers the command on ``voice-worker``'s parser and ``main`` runs it
as ``python -m worker.dev.bench BENCHMARK ...``. The call benchmarks (``latency``,
``capacity``) and their ``stack`` load here; the audio, AMD and failover benchmarks
(``pipelines.lazy``) and the charts load on first use, so ``voice-worker --help`` imports
neither the LiveKit SDK nor matplotlib.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.lazy import lazy_exports
from worker.dev.bench.capacity import (
    CALLERS,
    CAPACITY_WORKER_P95_LIMIT_MS,
    FRAME_GAP_LIMIT_MS,
    MIN_TURNS_PER_STEP,
    TreeSampler,
    bench_capacity,
    capacity_steps,
    frame_gaps,
    per_added_call,
)
from worker.dev.bench.common import (
    AUDIO_FIXTURES,
    BenchError,
    percentile,
    progress,
    stats_ms,
    write_report,
)
from worker.dev.bench.latency import TurnRow, bench_latency, summarize_turns, turn_rows
from worker.dev.bench.stack import (
    CallScript,
    FixedClipTTS,
    FixedDelays,
    FixedProviders,
    ScriptedSTT,
    Stack,
    add_delay_options,
    bench_agent,
    caller_scripts,
    delays_from,
    providers_main,
    run_call,
    running_stack,
    serve_fixed_providers,
)

if TYPE_CHECKING:
    from worker.dev.bench.amd import DEFAULT_MANIFEST, STT_SOURCES, bench_amd, reference_transcripts
    from worker.dev.bench.audio import (
        aligned_f0_ratio,
        bench_audio,
        bench_stretch_mix,
        bench_vad,
        median_f0,
    )
    from worker.dev.bench.failover import bench_failover

__all__ = [
    "AUDIO_FIXTURES",
    "CAPACITY_WORKER_P95_LIMIT_MS",
    "DEFAULT_MANIFEST",
    "FRAME_GAP_LIMIT_MS",
    "MIN_TURNS_PER_STEP",
    "STT_SOURCES",
    "BenchError",
    "CallScript",
    "FixedClipTTS",
    "FixedDelays",
    "FixedProviders",
    "ScriptedSTT",
    "Stack",
    "TreeSampler",
    "TurnRow",
    "add_bench_parser",
    "add_delay_options",
    "aligned_f0_ratio",
    "bench_agent",
    "bench_amd",
    "bench_audio",
    "bench_capacity",
    "bench_failover",
    "bench_latency",
    "bench_stretch_mix",
    "bench_vad",
    "caller_scripts",
    "capacity_steps",
    "delays_from",
    "frame_gaps",
    "main",
    "median_f0",
    "per_added_call",
    "percentile",
    "progress",
    "providers_main",
    "reference_transcripts",
    "run_call",
    "running_stack",
    "serve_fixed_providers",
    "stats_ms",
    "summarize_turns",
    "turn_rows",
    "write_report",
]

_LAZY = {
    "amd": ("DEFAULT_MANIFEST", "STT_SOURCES", "bench_amd", "reference_transcripts"),
    "audio": ("aligned_f0_ratio", "bench_audio", "bench_stretch_mix", "bench_vad", "median_f0"),
    "failover": ("bench_failover",),
}
"""The names whose modules import the LiveKit SDK or the recognisers: read on first use."""
__getattr__ = lazy_exports(__name__, [n for names in _LAZY.values() for n in names], _LAZY)

Report = dict[str, Any]
Run = Callable[[argparse.Namespace, Path], Report | Coroutine[Any, Any, Report]]
"""Makes one benchmark's report from the command line and the output directory."""


def _emit_summary(report: Report, json_path: Path, png: Path | None) -> None:
    summary = {k: v for k, v in report.items() if k not in ("turns", "steps_detail", "rows")}
    summary["json"] = str(json_path)
    summary["png"] = str(png) if png else None
    json.dump(summary, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def _finish(name: str, report: Report, out: Path) -> int:
    from worker.dev.bench.plot import plot

    report = {"benchmark": name, **report}
    json_path = write_report(out, name, report)
    png: Path | None = out / f"{name}.png"
    assert png is not None
    try:
        plot(name, report, png)
    except ImportError as exc:
        progress(f"no chart: {exc}")
        png = None
    _emit_summary(report, json_path, png)
    return 0


async def _finish_awaited(name: str, report: Coroutine[Any, Any, Report], out: Path) -> int:
    return _finish(name, await report, out)


def _handler(name: str, run: Run) -> Callable[[argparse.Namespace], Any]:
    """The ``handler`` of ``bench NAME``: the report of ``run`` written to ``--out``
    (default results/NAME), charted and summarized on stdout; a coroutine when ``run``
    returns one (``voice-worker`` runs it)."""

    def handler(args: argparse.Namespace) -> int | Coroutine[Any, Any, int]:
        out = Path(args.out or f"results/{name}")
        report = run(args, out)
        if isinstance(report, dict):
            return _finish(name, report, out)
        return _finish_awaited(name, report, out)

    return handler


def _call_options(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """What both call benchmarks take from their shared options."""
    return {
        "response_delay": args.response_delay,
        "delays": delays_from(args),
        "workdir": out / "work",
    }


def _latency(args: argparse.Namespace, out: Path) -> Coroutine[Any, Any, Report]:
    if args.sip:
        if args.record:
            raise ValueError("--record: not with --sip")
        from worker.dev.bench.sip import bench_latency_sip

        options = _call_options(args, out)
        return bench_latency_sip(stack=args.stack, turns=args.turns, **options)
    return bench_latency(
        stack=args.stack,
        turns=args.turns,
        concurrency=args.concurrency,
        record=args.record,
        **_call_options(args, out),
    )


def _call_counts(text: str) -> list[int]:
    """``--steps 1,4,8``: positive call counts."""
    try:
        counts = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected call counts like 1,4,8, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected positive call counts, got {text!r}")
    return counts


def _capacity(args: argparse.Namespace, out: Path) -> Coroutine[Any, Any, Report]:
    return bench_capacity(
        max_calls=args.max,
        step_seconds=args.step_seconds,
        time_limit=args.time_limit,
        min_turns=args.min_turns,
        caller=args.caller,
        steps=args.steps,
        **_call_options(args, out),
    )


def _audio(args: argparse.Namespace, out: Path) -> Report:
    from worker.dev.bench.audio import bench_audio

    return bench_audio(quick=args.quick)


def _amd(args: argparse.Namespace, out: Path) -> Report | Coroutine[Any, Any, Report]:
    manifest = Path(args.manifest) if args.manifest else None
    if manifest is not None and not manifest.is_file():
        raise ValueError(f"{manifest}: no such manifest")
    from worker.dev.bench.amd import DEFAULT_MANIFEST, bench_amd

    if args.sip:
        from worker.dev.bench.sip import bench_amd_sip

        return bench_amd_sip(
            manifest or DEFAULT_MANIFEST,
            workdir=out / "work",
            limit=args.limit,
            per_category=args.per_category,
            stt=args.stt,
        )
    if args.limit is not None or args.per_category is not None:
        raise ValueError("--limit, --per-category: only with --sip")
    return bench_amd(manifest or DEFAULT_MANIFEST, stt=args.stt)


def _stt(args: argparse.Namespace, out: Path) -> Coroutine[Any, Any, Report]:
    from worker.dev.bench.speech import bench_stt

    return bench_stt(engines=args.engine or ("moonshine", "pocketsphinx"))


def _replies(args: argparse.Namespace, out: Path) -> Coroutine[Any, Any, Report]:
    from worker.dev.bench.speech import bench_replies

    return bench_replies(repeats=args.repeats, base_url=args.llm_base_url)


def _fleet(args: argparse.Namespace, out: Path) -> Coroutine[Any, Any, Report]:
    from worker.dev.bench.cluster import bench_fleet

    return bench_fleet(quick=args.quick, workdir=out / "work")


def _failover(args: argparse.Namespace, out: Path) -> Report:
    if args.repeats < 1:
        raise ValueError("--repeats must be at least 1")
    from worker.dev.bench.failover import bench_failover

    layers = tuple(x for x in args.layers.split(",") if x)
    if not layers or set(layers) - {"stt", "llm", "tts"}:
        raise ValueError(f"--layers {args.layers!r}: a comma-separated subset of stt,llm,tts")
    return bench_failover(args.repeats, layers)


def _outputs(p: argparse.ArgumentParser, name: str, *, calls: bool = False) -> None:
    """``--out`` (after the benchmark's own options), and for a call benchmark the
    response delay and the fixed provider delays."""
    p.add_argument("--out", help=f"output directory (default results/{name})")
    if calls:
        p.add_argument(
            "--response-delay",
            type=float,
            default=0.4,
            help="the agent's response_delay_seconds (default 0.4)",
        )
        add_delay_options(p)


def add_bench_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Registers ``bench`` and its sub-benchmarks on ``voice-worker``'s subparsers. Each
    sub-benchmark sets ``handler`` (sync or async, returns an exit code)."""
    bench = subparsers.add_parser(
        "bench",
        help="benchmarks: figures as JSON + PNG",
        description="Run a benchmark, write DIR/NAME.json and DIR/NAME.png (--out, default "
        "results/NAME) and print the summary as JSON; progress goes to stderr.",
    )
    sub = bench.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")

    def benchmark(name: str, run: Run, summary: str, description: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=summary, description=description)
        p.set_defaults(handler=_handler(name, run))
        return p

    p = benchmark(
        "latency",
        _latency,
        "per-stage latency and worker time on real calls",
        "Replay caller fixtures through a local LiveKit server (2 calls at a time) and time "
        "each turn: caller end of speech -> end of turn -> STT final -> LLM first token -> "
        "TTS first byte -> first agent audio at the caller; split provider time from worker "
        "time.",
    )
    p.add_argument("--turns", type=int, default=20, help="caller turns to time (default 20)")
    p.add_argument("--stack", choices=["fixed", "offline"], default="fixed")
    p.add_argument("--concurrency", type=int, default=2, help="calls at a time (default 2)")
    p.add_argument(
        "--record",
        action="store_true",
        help="record every call (save_audio_recording) into a local versitygw bucket",
    )
    p.add_argument(
        "--sip",
        action="store_true",
        help="every call a real outbound phone call (livekit-sip to a baresip phone, G.711), "
        "one at a time, timed at the phone: caller end of speech to first agent audio heard",
    )
    _outputs(p, "latency", calls=True)

    p = benchmark(
        "capacity",
        _capacity,
        "concurrent calls per worker until audio quality breaks",
        "Step up concurrent calls (1, 2, 4, 6, ...) against one worker process group until "
        f"agent audio frame gaps exceed {FRAME_GAP_LIMIT_MS:.0f} ms or worker time p95 "
        f"exceeds {CAPACITY_WORKER_P95_LIMIT_MS:.0f} ms; providers answer after fixed delays "
        "from another process.",
    )
    p.add_argument("--max", type=int, default=16, help="most concurrent calls (default 16)")
    p.add_argument(
        "--step-seconds", type=float, default=40.0, help="seconds of calls per step (default 40)"
    )
    p.add_argument("--time-limit", type=float, default=600.0, help="total seconds (default 600)")
    p.add_argument(
        "--min-turns",
        type=int,
        default=MIN_TURNS_PER_STEP,
        help=f"fewest caller turns per step, for a stable p95 (default {MIN_TURNS_PER_STEP})",
    )
    p.add_argument(
        "--caller",
        choices=CALLERS,
        default="go",
        help="go: the low-CPU Go load generator (worker/dev/loadgen; default); python: "
        "the rtc SDK callers in this process",
    )
    p.add_argument(
        "--steps",
        type=_call_counts,
        default=None,
        metavar="N,N,...",
        help="call counts to run, each whatever the limits (e.g. 1,4,8), instead of 1, 2, 4, 6, "
        "... up to --max or the first step over a limit",
    )
    _outputs(p, "capacity", calls=True)

    p = benchmark(
        "audio",
        _audio,
        "VAD, time-stretch and mixing cost per frame",
        "webrtcvad + endpointing vs silero, time-stretch vs audiotsm and sox, noise-bed "
        "mixing: per-frame cost against the goals.",
    )
    p.add_argument("--quick", action="store_true", help="one fixture, 3 s of speech")
    _outputs(p, "audio")

    p = benchmark(
        "amd",
        _amd,
        "answering-machine detection accuracy and decision times",
        "Accuracy per category, confusion matrix and decision times over the AMD fixtures; "
        "with --sip also over real phone calls, the file-level figures beside.",
    )
    p.add_argument("--manifest", help="AMD manifest (default fixtures/amd/manifest.json)")
    p.add_argument(
        "--stt",
        # amd.STT_SOURCES, listed here so that the command line does not import the
        # recognisers (a unit test keeps the two the same)
        choices=["moonshine+phrases", "moonshine", "phrases", "pocketsphinx", "reference", "none"],
        default="moonshine+phrases",
        help="transcript source (default moonshine+phrases: both offline recognisers)",
    )
    p.add_argument(
        "--sip",
        action="store_true",
        help="also play every fixture from a baresip phone answering a real outbound call "
        "(livekit-sip, G.711) and score the verdict the worker acted on, from its report",
    )
    p.add_argument(
        "--limit",
        type=int,
        help="with --sip: this many fixtures, spread evenly over the manifest (default all)",
    )
    p.add_argument(
        "--per-category",
        type=int,
        help="with --sip: this many fixtures of every category in each half (even seeds "
        "tuned on, odd held out), spread evenly; 2 gives 18 calls over all of them",
    )
    _outputs(p, "amd")

    p = benchmark(
        "failover",
        _failover,
        "provider failover times",
        "Added delay from a provider fault (reset, stall, refuse, HTTP 500; before the first "
        "output or mid-stream) to the next provider's first output (STT: from the end of "
        "speech to the turn's final, faults mid-turn or just before the end of speech), "
        "against a healthy run (median, p95), per layer (STT, LLM, TTS), and "
        "hedge_rate_healthy (hedges per "
        "request with no fault), against local vendor servers behind toxiproxy.",
    )
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--layers", default="stt,llm,tts", help="comma-separated (default all)")
    _outputs(p, "failover")

    p = benchmark(
        "fleet",
        _fleet,
        "calls on two LiveKit nodes through a worker crash and a drain",
        "Two livekit-server nodes on one Redis, worker processes split across them (REDIS_URL: "
        "calls checkpointed and taken over), calls created on both nodes; mid-call the worker "
        "holding the most calls is SIGKILLed and, once its calls are taken over, another is "
        "drained (SIGTERM). Prints calls answered, calls per worker, calls recovered, the "
        "recovery gap heard at the callers, the time from the kill to each takeover step "
        "(claimed, dispatched, job offered, call started, agent track, heard), turns lost, "
        "reports delivered and drained calls.",
    )
    p.add_argument(
        "--quick", action="store_true", help="3 workers, 6 calls (a few minutes); else 4 and 12"
    )
    _outputs(p, "fleet")

    p = benchmark(
        "stt",
        _stt,
        "word error rate of the offline call STTs",
        "WER of Moonshine and pocketsphinx on the fixture callers' turns and on sentences "
        "said by three espeak-ng voices, at 16 kHz and at 8 kHz, each utterance one whole "
        "VAD segment; the sentences' dev half and held-out half are reported apart.",
    )
    p.add_argument(
        "--engine",
        action="append",
        choices=["moonshine", "pocketsphinx"],
        help="engine to score (repeatable; default both)",
    )
    _outputs(p, "stt")

    p = benchmark(
        "replies",
        _replies,
        "share of the offline LLM's replies that stay on topic",
        "Play the fixture callers' turns against each agent (the fixture agents and two "
        "unseen roles) on a local llama.cpp server and score each reply: on topic when it "
        "shares a content word with the caller's turn or the agent's role and does not "
        "repeat the previous reply.",
    )
    p.add_argument("--repeats", type=int, default=2, help="plays per caller and role (default 2)")
    p.add_argument(
        "--llm-base-url", help="an OpenAI-compatible server to use instead of starting one"
    )
    _outputs(p, "replies")
    return bench


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m worker.dev.bench BENCHMARK ...``: ``voice-worker bench BENCHMARK ...``;
    ``python -m worker.dev.bench providers ...`` runs ``FixedProviders``' servers."""
    from worker import cli

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["providers"]:
        return providers_main(argv[1:])
    return cli.main(["bench", *argv])
