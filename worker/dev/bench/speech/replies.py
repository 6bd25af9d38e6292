"""``voice-worker bench replies``: how often the offline LLM's replies stay on topic.

Each fixture caller's turns (``fixtures/audio/manifest.json``, what the caller says) are
played as a conversation against each agent (the fixture agents, and two roles that
appear nowhere in the fixtures, as a check that the prompt is not fitted to them): the
agent's prompt and first message, then turn by turn the caller's words and the model's
reply, through the worker's own client (``ChatCompletionsLLM``, streaming) to a local
llama.cpp server (``python -m pipelines.providers.local_llm``).

The rubric (``on_topic``): a reply is on topic when it shares a content word (not a
stopword, three letters or more, compared by a crude stem) with the caller's turn or the
agent's role (its name and prompt), and does not repeat the agent's previous reply.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livekit.agents import llm, utils

from pipelines.providers import ProviderSpec, build
from worker.config import parse_agent
from worker.dev.bench.common import AUDIO_FIXTURES, progress, stats_ms
from worker.dev.services import LlamaServer, warm_up_llm
from worker.settings import REPO_ROOT

AGENTS_DIR = REPO_ROOT / "fixtures" / "control_plane" / "agents"

_STOPWORD_TEXT = """
a about after again all am an and any are as at be because been before being but by can
could did do does doing for from had has have having he her here hers him his how i i'm
if in into is it it's its just let me more most my no nor not now of off on once only or
other our ours out over own please same she should so some such than that that's the
their them then there these they this those through to too under until up very was we
we're were what when where which while who whom why will with would you you're your
yours yes okay ok oh hi hello thanks thank sure great well also may might must shall get
got one call calling like want
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())

EXTRA_ROLES = (
    (
        "Pizza line",
        "You take phone orders for Marco's Pizzeria. Ask what the caller would like, their "
        "address, and answer briefly.",
        "Marco's Pizzeria, what can I get you today?",
    ),
    (
        "Help desk",
        "You are the IT help desk of Northwind Bank. Find out what is not working and "
        "for whom, in one short sentence at a time.",
        "Northwind Bank help desk, what seems to be the problem?",
    ),
)
"""Roles the prompt was never looked at with: (name, prompt, first message)."""

_WORD = re.compile(r"[a-z][a-z']+")
_TEMPLATE = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text.lower()) if len(w) >= 3 and w not in STOPWORDS}


def on_topic(reply: str, caller: str, role: str, previous: str | None) -> bool:
    """The rubric: a content word shared with the caller's turn or the role, and not the
    previous reply again."""
    if not reply.strip():
        return False
    if previous is not None and _WORD.findall(reply.lower()) == _WORD.findall(previous.lower()):
        return False
    return bool(content_words(reply) & (content_words(caller) | content_words(role)))


@dataclass(frozen=True)
class Role:
    name: str
    prompt: str
    first_message: str | None
    fixture: bool


def _filled(text: str) -> str:
    """Dynamic variables as a dispatch would fill them: a plausible value per name."""
    values = {"date": "next Tuesday", "time": "ten in the morning", "name": "Sam Carter"}
    return _TEMPLATE.sub(
        lambda m: next((v for k, v in values.items() if k in m.group(1).lower()), "Sam"), text
    )


def roles() -> list[Role]:
    out = []
    for path in sorted(AGENTS_DIR.glob("agent_*.json")):
        if path.name.endswith(".tools.json"):
            continue
        agent = parse_agent(json.loads(path.read_text()), source=str(path))
        out.append(
            Role(
                agent.name or path.stem,
                _filled(agent.prompt),
                _filled(agent.first_message) if agent.first_message else None,
                True,
            )
        )
    out += [Role(n, p, f, False) for n, p, f in EXTRA_ROLES]
    return out


def callers(manifest: Path = AUDIO_FIXTURES / "manifest.json") -> dict[str, list[str]]:
    return {
        name: [t["text"] for t in entry["turns"]]
        for name, entry in json.loads(manifest.read_text()).items()
    }


async def _reply(model: llm.LLM[Any], ctx: llm.ChatContext) -> str:
    text = ""
    async with model.chat(chat_ctx=ctx) as stream:
        async for chunk in stream:
            if chunk.delta is not None and chunk.delta.content:
                text += chunk.delta.content
    return text.strip()


async def converse(model: llm.LLM[Any], role: Role, turns: Sequence[str]) -> list[dict[str, Any]]:
    ctx = llm.ChatContext.empty()
    ctx.add_message(role="system", content=role.prompt)
    previous = role.first_message
    if role.first_message:
        ctx.add_message(role="assistant", content=role.first_message)
    rows = []
    for said in turns:
        ctx.add_message(role="user", content=said)
        started = time.perf_counter()
        reply = await _reply(model, ctx)
        took = time.perf_counter() - started
        rows.append(
            {
                "role": role.name,
                "fixture_role": role.fixture,
                "caller": said,
                "reply": reply,
                "on_topic": on_topic(reply, said, f"{role.name} {role.prompt}", previous),
                "seconds": round(took, 3),
            }
        )
        ctx.add_message(role="assistant", content=reply)
        previous = reply
    return rows


def _share(rows: Sequence[dict[str, Any]]) -> float | None:
    return round(sum(r["on_topic"] for r in rows) / len(rows), 3) if rows else None


async def bench_replies(*, repeats: int = 2, base_url: str | None = None) -> dict[str, Any]:
    """Plays every caller against every role ``repeats`` times (the agents' temperature
    makes replies vary) on a llama.cpp server started here unless ``base_url`` is given."""
    if repeats < 1:
        raise ValueError("--repeats must be at least 1")
    server = None
    if base_url is None:
        server = LlamaServer()
        server.start()
        base_url = server.base_url
        warm_up_llm(base_url)
    rows: list[dict[str, Any]] = []
    try:
        async with utils.http_context.open():
            for role in roles():
                model = build(
                    ProviderSpec(
                        "llm",
                        "local",
                        LlamaServer.model,
                        base_url=base_url,
                        temperature=0.4,
                        max_tokens=48,
                    )
                )
                try:
                    for _ in range(repeats):
                        for turns in callers().values():
                            rows += await converse(model, role, turns)
                finally:
                    await model.aclose()
                progress(f"replies: {role.name} done")
    finally:
        if server is not None:
            server.stop()
    return {
        "on_topic_share": _share(rows),
        "on_topic_share_fixture_agents": _share([r for r in rows if r["fixture_role"]]),
        "on_topic_share_unseen_roles": _share([r for r in rows if not r["fixture_role"]]),
        "replies": len(rows),
        "empty_replies": sum(not r["reply"] for r in rows),
        "reply_latency": stats_ms([r["seconds"] for r in rows]),
        "turns": rows,
    }
