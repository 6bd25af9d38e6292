"""Real services for call tests, started once per test session: Redis, a LiveKit server using
it, the offline LLM (warmed up), one worker process registered under a fresh agent name and,
for phone calls, livekit-sip on the same LiveKit and Redis (started by the first test that
asks for ``livekit_sip``).

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
    RedisServer,
    WorkerProcess,
    warm_up_llm,
)
from worker.dev.services.sip import LiveKitSIP

CONTROL_PLANE_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "control_plane"


@pytest.fixture(scope="session")
def redis_address() -> Iterator[str]:
    with RedisServer() as redis:
        yield redis.address


@pytest.fixture(scope="session")
def livekit(redis_address: str) -> Iterator[LiveKitEndpoint]:
    with LiveKitServer(redis_address=redis_address) as server:
        yield LiveKitEndpoint(server.url, server.api_key, server.api_secret)


@pytest.fixture(scope="session")
def livekit_sip(livekit: LiveKitEndpoint, redis_address: str) -> Iterator[LiveKitSIP]:
    """livekit-sip registered with the session's LiveKit server: outbound trunks dial
    phones from it, inbound calls reach ``livekit_sip.address``."""
    with LiveKitSIP(livekit, redis_address=redis_address) as sip:
        yield sip


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
