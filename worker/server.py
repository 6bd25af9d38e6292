"""The worker process: an ``AgentServer`` that registers with LiveKit, reports its load,
prepares job processes, redelivers spooled reports and drains on SIGTERM. Each job it takes
runs ``worker.call.entrypoint``."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from pathlib import Path

from livekit.agents import AgentServer, JobProcess
from livekit.agents.cli import proto
from livekit.agents.cli.cli import _run_worker
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import is_given

from worker.call import DRAIN_FILE_ENV, GOODBYE_MARGIN, entrypoint, webhook_sender
from worker.call.recording import sweep as sweep_recordings
from worker.call.survival import watch_calls
from worker.metrics import default_metrics
from worker.settings import Settings

logger = logging.getLogger(__name__)


def prewarm(proc: JobProcess) -> None:
    """Runs once per job process before its first job. Kept light: a slow prewarm delays
    every new process and so every call that arrives while the warm ones are busy."""
    from pipelines.providers import shared_ssl_context, warm_vendor_plugins

    # Each of these would stall the call's event loop if left to the first job: parsing
    # the CA bundle into the process's TLS context (0.1-0.2 s), plugin imports and each
    # plugin's first request (~0.1-0.2 s in all; a rehearsal against local servers).
    shared_ssl_context()
    warm_vendor_plugins()


def load_of(server: AgentServer, max_calls: int) -> float:
    """What the worker reports to LiveKit: the share of call slots in use. Above
    ``load_threshold`` LiveKit dispatches elsewhere. Slots, not CPU: CPU swings with
    every utterance (and with anything else on the box), while ``MAX_CONCURRENT_CALLS``
    is set from ``voice-worker bench capacity``, where audio quality was measured."""
    return min(1.0, len(server.active_jobs) / max_calls)


class DrainingServer(AgentServer):
    """On drain (SIGTERM) tells the job processes when to wind their calls up: LiveKit
    itself would cut them at the deadline without a word. The news travels in a file
    named by an env var the job processes inherit, so no private API is involved."""

    async def drain(self, timeout: NotGivenOr[int | None] = NOT_GIVEN) -> None:
        path = os.environ.get(DRAIN_FILE_ENV)
        limit = timeout if is_given(timeout) else self._drain_timeout
        if path and limit is not None:
            margin = min(GOODBYE_MARGIN, limit / 2)
            Path(path).write_text(str(time.time() + limit - margin))
        await super().drain(timeout)


PRELOAD_MODULES = (
    "worker.call.entrypoint",
    "pipelines.providers.openai_llm",
    "pipelines.providers.warmup",
    "pipelines.loopback.vendors.deepgram",
    "pipelines.loopback.vendors.elevenlabs",
    "pipelines.loopback.vendors.openai_compat",
    "livekit.plugins.deepgram",
    "livekit.plugins.elevenlabs",
    "livekit.plugins.openai",
)
"""Imported once in LiveKit's forkserver, so every job process shares them copy-on-write
instead of importing them itself (~1000 modules: an idle job process's own memory (USS)
42 -> 22 MB). The forkserver skips a module that fails to import, silently: a unit test
imports each."""


def build_server(settings: Settings) -> AgentServer:
    multiproc = settings.spool_dir.parent / "prometheus"
    server = DrainingServer(
        ws_url=settings.livekit_url,
        api_key=settings.livekit_api_key,
        api_secret=settings.livekit_api_secret.get_secret_value(),
        port=settings.worker_http_port,
        host="127.0.0.1" if settings.livekit_url.startswith("ws://127.") else "",
        setup_fnc=prewarm,
        preload_modules=list(PRELOAD_MODULES),
        drain_timeout=int(settings.drain_timeout),
        num_idle_processes=settings.num_idle_processes,
        initialize_process_timeout=30.0,
        load_fnc=lambda srv: load_of(srv, settings.max_concurrent_calls),
        load_threshold=settings.load_threshold,
        prometheus_port=settings.metrics_port or None,
        prometheus_multiproc_dir=str(multiproc.resolve()),
    )
    server.rtc_session(entrypoint, agent_name=settings.agent_name)
    return server


async def redeliver_forever(settings: Settings, every: float = 300.0) -> None:
    """Reports left in the spool (a crash, a receiver outage) go out at start-up and then
    every few minutes, so none is lost and none waits for the next restart; so do call
    recordings (a job killed mid-call, a bucket outage)."""
    while True:
        sender = webhook_sender(settings, default_metrics())
        try:
            for result in await sender.redeliver_spool():
                logger.info("spooled %s %s: %s", result.kind, result.msg_id, result.outcome)
        except Exception:
            logger.exception("spool redelivery failed")
        finally:
            await sender.aclose()
        try:
            for url in await asyncio.to_thread(sweep_recordings, settings):
                logger.info("spooled recording uploaded: %s", url)
        except Exception:
            logger.exception("recording sweep failed")
        await asyncio.sleep(every)


def run_worker(command: str, extra: list[str]) -> None:
    """``voice-worker start|dev``: registers with LiveKit and takes jobs until SIGTERM,
    then drains (active calls finish, up to ``DRAIN_TIMEOUT``)."""
    settings = Settings()
    log_level = "DEBUG" if command == "dev" else settings.log_level
    if "--log-level" in extra:
        log_level = extra[extra.index("--log-level") + 1]
    drain_file = Path(tempfile.gettempdir()) / f"voice-worker-drain-{os.getpid()}"
    drain_file.unlink(missing_ok=True)
    os.environ[DRAIN_FILE_ENV] = str(drain_file)
    server = build_server(settings)
    tasks: set[asyncio.Task[None]] = set()

    @server.on("worker_started")
    def _started() -> None:
        loop = asyncio.get_event_loop()
        tasks.add(loop.create_task(redeliver_forever(settings)))
        tasks.add(loop.create_task(watch_calls(settings)))

    _run_worker(
        server,
        proto.CliArgs(
            log_level=log_level,
            log_format="json" if settings.log_json else "colored",
            dev=command == "dev",
        ),
    )
