"""``python -m worker start`` as a local service: one worker process registered with a
LiveKit server under a fresh agent name (``voice-worker replay``, the call tests and the
call benchmarks dispatch their calls to it)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from worker.dev.services.livekit import LiveKitEndpoint
from worker.dev.services.process import ManagedProcess, free_port
from worker.settings import REPO_ROOT

REGISTERED = '"registered worker"'
"""The worker's log line once LiveKit accepted its registration."""


class WorkerProcess(ManagedProcess):
    """One ``python -m worker start`` child registered with LiveKit under a fresh agent
    name, logging to ``workdir/worker.log``. Started once, it takes any number of jobs
    (a test session runs all its calls on one)."""

    name = "worker"
    stop_timeout = 15.0
    sigterm_shares = (1.0,)
    """One SIGTERM: the worker drains its calls, which a second SIGTERM would cut short."""
    own_session = False

    def __init__(
        self,
        livekit: LiveKitEndpoint,
        *,
        workdir: Path,
        control_plane_url: str,
        llm_base_url: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        register_timeout: float = 60.0,
    ) -> None:
        super().__init__(startup_timeout=register_timeout)
        self.livekit = livekit
        self._dir = workdir
        self.agent_name = f"replay-{secrets.token_hex(4)}"
        self.http_port = int((extra_env or {}).get("WORKER_HTTP_PORT") or free_port())
        """Health (``/``) and load (``/worker``) of the worker process."""
        env = dict(os.environ)
        if llm_base_url:
            env["LOCAL_LLM_BASE_URL"] = llm_base_url
        env.update(
            LIVEKIT_URL=livekit.url,
            LIVEKIT_API_KEY=livekit.api_key,
            LIVEKIT_API_SECRET=livekit.api_secret,
            AGENT_NAME=self.agent_name,
            WORKER_HTTP_PORT=str(self.http_port),
            METRICS_PORT=str(free_port()),
            SPOOL_DIR=str(workdir / "spool"),
            CONTROL_PLANE_URL=control_plane_url,
        )
        env.update(extra_env or {})  # may override any of the above (e.g. a shared SPOOL_DIR)
        self._child_env = env

    @property
    def workdir(self) -> Path:
        return self._dir

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "worker", "start"]

    def _env(self) -> dict[str, str]:
        return self._child_env

    def _cwd(self) -> Path:
        return REPO_ROOT

    def _ready(self) -> bool:
        # registered, not merely up: a job dispatched before that would leave the room
        # without an agent
        return REGISTERED in self.log_text()

    def _awaiting(self) -> str:
        return "(not registered with LiveKit)"

    def log_records(self) -> list[dict[str, Any]]:
        """The worker's JSON log lines (job processes log through it), parsed."""
        records = []
        for line in self.log_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records
