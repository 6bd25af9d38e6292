"""What both SIP benchmarks run on: the phone leg (Redis, LiveKit, livekit-sip) and one
worker writing each call's report to a directory, where ``report_for`` finds it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.dev.bench.common import BenchError, progress
from worker.dev.phone_replay import phone_leg
from worker.dev.services import LiveKitEndpoint, WorkerProcess
from worker.dev.services.sip import LiveKitSIP
from worker.settings import REPO_ROOT

REPORT_WAIT = 20.0
"""Seconds after the phone hung up for the worker's report (the job's shutdown: recording,
webhooks, then the report)."""


@dataclass
class SIPWorker:
    livekit: LiveKitEndpoint
    sip: LiveKitSIP
    worker: WorkerProcess
    reports: Path


@contextlib.asynccontextmanager
async def sip_worker(
    workdir: Path, *, env: Mapping[str, str] | None = None
) -> AsyncIterator[SIPWorker]:
    """The phone leg and a worker on the offline providers (``env`` adds to its settings)."""
    reports = workdir / "reports"
    async with contextlib.AsyncExitStack() as stack:
        progress("starting Redis, LiveKit and livekit-sip")
        livekit, sip = await phone_leg(stack)
        worker = WorkerProcess(
            livekit,
            workdir=workdir,
            control_plane_url=f"file://{REPO_ROOT / 'fixtures' / 'control_plane'}",
            extra_env={
                "LOG_JSON": "true",
                "OFFLINE_PROVIDERS": "true",
                "REPORT_DIR": str(reports),
                **(env or {}),
            },
            register_timeout=120.0,
        )
        progress("starting worker")
        await worker.astart()
        stack.push_async_callback(worker.astop)
        yield SIPWorker(livekit, sip, worker, reports)


async def report_for(reports: Path, call_id: str, timeout: float = REPORT_WAIT) -> dict[str, Any]:
    """The report of ``call_id`` once the worker wrote it."""
    path = reports / f"{call_id}.json"
    deadline = time.monotonic() + timeout
    while not path.is_file():
        if time.monotonic() > deadline:
            raise BenchError(f"no report for call {call_id} within {timeout:.0f} s")
        await asyncio.sleep(0.2)
    report: dict[str, Any] = json.loads(path.read_text())
    return report
