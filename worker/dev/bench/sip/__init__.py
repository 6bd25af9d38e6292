"""The benchmarks over the SIP leg (``--sip``): every call a real outbound call from the
worker through livekit-sip to a baresip phone (G.711, 8 kHz), scored where the caller is.

``bench amd --sip`` plays every AMD fixture from the phone and scores the verdict the worker
acted on (from its report) beside the file-level figures; ``bench latency --sip`` times the
caller's end of speech to the first agent audio heard at the phone."""

from worker.dev.bench.sip.amd import bench_amd_sip
from worker.dev.bench.sip.latency import bench_latency_sip
from worker.dev.bench.sip.leg import report_for, sip_worker

__all__ = ["bench_amd_sip", "bench_latency_sip", "report_for", "sip_worker"]
