"""Figures the benchmarks derive from their samples."""

from __future__ import annotations

from worker.dev.bench import per_added_call


def test_marginal_cpu_is_the_slope_without_the_fixed_cost() -> None:
    # 20 % fixed (worker, idle processes) + 11 % per call
    steps = [{"calls": n, "worker_cpu_percent_mean": 20.0 + 11.0 * n} for n in (1, 2, 4, 6)]
    assert per_added_call(steps, "worker_cpu_percent_mean") == 11.0


def test_marginal_cpu_needs_two_different_loads() -> None:
    one = [{"calls": 1, "worker_cpu_percent_mean": 25.0}]
    assert per_added_call(one, "worker_cpu_percent_mean") is None
    assert per_added_call([], "worker_cpu_percent_mean") is None


def test_bench_amd_cli_offers_every_transcript_source_of_the_amd_bench() -> None:
    """``voice-worker bench amd --stt`` lists the sources without importing the recognisers;
    the list must stay the AMD bench's own."""
    import argparse

    from worker.dev.bench import STT_SOURCES, add_bench_parser

    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers())
    for source in STT_SOURCES:
        assert parser.parse_args(["bench", "amd", "--stt", source]).stt == source
    assert parser.parse_args(["bench", "amd"]).stt == "moonshine+phrases"
