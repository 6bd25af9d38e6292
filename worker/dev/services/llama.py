"""The offline LLM as a local service: ``python -m pipelines.providers.local_llm`` (a llama.cpp
server running Gemma 3 270M), an OpenAI-compatible endpoint on loopback, and
``warm_up_llm``, which spends a fresh server's slow first answer before a caller would."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import urllib.request
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

    def _reach(self) -> dict[str, str]:
        return {"base_url": self.base_url, "model": self.model, "api_key": "local"}


def warm_up_llm(base_url: str, model: str = LlamaServer.model, timeout: float = 60.0) -> float:
    """Sends one tiny chat completion and returns its seconds. A fresh llama.cpp server
    answers its first request ~7 s late (2 cores), which would land on a caller's first
    turn instead."""
    body = json.dumps(
        {"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]}
    ).encode()
    request = urllib.request.Request(
        f"{base_url}/chat/completions", body, {"Content-Type": "application/json"}
    )
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        resp.read()
    return time.monotonic() - started
