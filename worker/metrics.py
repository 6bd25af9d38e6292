"""Prometheus metrics of the voice worker, in a registry of their own.

Job processes: livekit-agents runs each job in a child process by default, so metrics
recorded by the entrypoint live in that child. With ``PROMETHEUS_MULTIPROC_DIR`` set in
the environment *before* Python starts (the livekit option ``prometheus_multiproc_dir``
sets it too late for the main process), prometheus_client writes every value to files in
that directory and :meth:`WorkerMetrics.render` aggregates all processes. Without it,
``render`` shows this process only (right for thread executors, tests and the CLI).

Serving: livekit's ``AgentServer`` builds its aiohttp app inside ``run()`` and starts it
a few lines later; a started aiohttp router is frozen, so no route can be added to the
worker's health port from outside. Either serve :func:`start_metrics_server` on a port
of its own, or call :func:`add_metrics_route` on an aiohttp app you build yourself.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Literal

from aiohttp import web
from livekit.agents.utils.http_server import HttpServer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST

TurnStage = Literal["eou", "stt", "llm_ttft", "tts_ttfb", "first_audio", "worker"]
TURN_STAGES: tuple[TurnStage, ...] = ("eou", "stt", "llm_ttft", "tts_ttfb", "first_audio", "worker")

_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class WorkerMetrics:
    """Every metric the worker exports; one instance per process is enough."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.active_sessions = Gauge(
            "voice_worker_active_sessions",
            "Calls currently running in this worker.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.jobs_accepted = Counter(
            "voice_worker_jobs_accepted", "Jobs accepted from LiveKit.", registry=r
        )
        self.jobs_failed = Counter(
            "voice_worker_jobs_failed",
            "Jobs that ended with an error, by error class.",
            ["reason"],
            registry=r,
        )
        self.turn_latency = Histogram(
            "voice_worker_turn_latency_seconds",
            "Per-turn latency by stage (eou, stt, llm_ttft, tts_ttfb, first_audio, worker).",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.failovers = Counter(
            "voice_worker_failovers",
            "Provider failovers mid-call.",
            ["layer", "from_provider", "to_provider", "reason"],
            registry=r,
        )
        self.amd_verdicts = Counter(
            "voice_worker_amd_verdicts",
            "Answering-machine detection verdicts.",
            ["category"],
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "voice_worker_webhook_deliveries",
            "Webhook deliveries by kind and outcome (delivered, rejected, exhausted, no_secret).",
            ["kind", "outcome"],
            registry=r,
        )
        self.spool_depth = Gauge(
            "voice_worker_webhook_spool_depth",
            "Webhook payloads waiting in the spool directory.",
            registry=r,
            multiprocess_mode="mostrecent",
        )

    def observe_turn(self, stage: TurnStage, seconds: float) -> None:
        if stage not in TURN_STAGES:
            raise ValueError(f"unknown turn stage {stage!r}")
        self.turn_latency.labels(stage=stage).observe(seconds)

    def render(self) -> bytes:
        """Prometheus text exposition of all processes (multiprocess mode) or this one."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged)
        return generate_latest(self.registry)


_default: WorkerMetrics | None = None


def default_metrics() -> WorkerMetrics:
    """The process-wide instance (created on first use)."""
    global _default
    if _default is None:
        _default = WorkerMetrics()
    return _default


def render() -> bytes:
    return default_metrics().render()


def metrics_handler(
    metrics: WorkerMetrics | None = None,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(_request: web.Request) -> web.Response:
        source = metrics or default_metrics()
        # aggregation reads files in multiprocess mode: keep it off the event loop
        body = await asyncio.get_running_loop().run_in_executor(None, source.render)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    return handle


def add_metrics_route(
    target: web.Application | HttpServer,
    metrics: WorkerMetrics | None = None,
    *,
    path: str = "/metrics",
) -> None:
    """Mount ``GET /metrics`` on an app (or livekit ``HttpServer``) that is not started yet."""
    app = target.app if isinstance(target, HttpServer) else target
    if app.frozen:
        raise RuntimeError("the aiohttp app is already running; its routes are frozen")
    app.router.add_get(path, metrics_handler(metrics))


async def start_metrics_server(
    host: str, port: int, metrics: WorkerMetrics | None = None
) -> HttpServer:
    """Serve ``/metrics`` (and ``/`` = OK) on its own port; ``aclose()`` it on shutdown."""
    server = HttpServer(host, port)

    async def health(_request: web.Request) -> web.Response:
        return web.Response(text="OK")

    server.app.router.add_get("/", health)
    add_metrics_route(server, metrics)
    await server.start()
    return server
