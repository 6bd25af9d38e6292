"""The offline LLM as a local service: ``python -m pipelines.providers.local_llm`` (a llama.cpp
server running Gemma 3 270M), an OpenAI-compatible endpoint on loopback."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from worker.dev.services.process import LOOPBACK, ManagedProcess, ServiceError, free_port


class LlamaServer(ManagedProcess):
    """The offline LLM (``python -m pipelines.providers.local_llm``), OpenAI-compatible."""

    name = "llama-server"
    python_child = True

    def __init__(
        self,
        *,
        port: int | None = None,
        model_path: Path | None = None,
        threads: int = 2,
        n_ctx: int = 2048,
        python: str = sys.executable,
        startup_timeout: float = 60.0,
    ) -> None:
        super().__init__(startup_timeout=startup_timeout)
        self.port = port or free_port()
        self.model_path = model_path
        self.threads = threads
        self.n_ctx = n_ctx
        self.python = python

    model = "gemma-3-270m"
    """The model name to send; the server serves its one model under this alias."""

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL (``.../v1``) for an OpenAI-compatible client."""
        return f"http://{LOOPBACK}:{self.port}/v1"

    def _command(self) -> list[str]:
        if importlib.util.find_spec("llama_cpp") is None:
            raise ServiceError(
                "llama-cpp-python is not installed: pip install 'llama-cpp-python[server]==0.3.36'"
            )
        command = [
            self.python,
            "-m",
            "pipelines.providers.local_llm",
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            "--threads",
            str(self.threads),
            "--n-ctx",
            str(self.n_ctx),
        ]
        if self.model_path is not None:
            command += ["--model", str(self.model_path)]
        return command

    def _ready_url(self) -> str:
        return f"{self.base_url}/models"

    def describe(self) -> dict[str, str | int]:
        return {
            "base_url": self.base_url,
            "model": self.model,
            "api_key": "local",
            "pid": self.pid or 0,
            "log": str(self.log_path),
        }
