"""Real services for call tests, started once per test session: a LiveKit server, the
offline LLM (warmed up) and one worker process registered under a fresh agent name.

A missing LiveKit binary or llama-cpp-python fails the tests that need them with the
reason (``ServiceError``); nothing is skipped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.dev.services import (
    LiveKitEndpoint,
    LiveKitServer,
    LlamaServer,
    WorkerProcess,
    warm_up_llm,
)

CONTROL_PLANE_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "control_plane"


@pytest.fixture(scope="session")
def livekit() -> Iterator[LiveKitEndpoint]:
    with LiveKitServer() as server:
        yield LiveKitEndpoint(server.url, server.api_key, server.api_secret)


@pytest.fixture(scope="session")
def llama_base_url() -> Iterator[str]:
    with LlamaServer() as server:
        warm_up_llm(server.base_url, server.model)
        yield server.base_url


@pytest.fixture(scope="session")
def voice_worker(
    livekit: LiveKitEndpoint, llama_base_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """``python -m worker start`` on the embedded default (``file://`` control plane,
    offline providers), two warm job processes so two calls can start at once."""
    worker = WorkerProcess(
        livekit,
        workdir=tmp_path_factory.mktemp("voice-worker"),
        control_plane_url=f"file://{CONTROL_PLANE_DIR}",
        llm_base_url=llama_base_url,
        extra_env={"NUM_IDLE_PROCESSES": "2", "LOG_JSON": "true", "OFFLINE_PROVIDERS": "true"},
    )
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
