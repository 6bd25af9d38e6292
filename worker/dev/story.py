"""The story of a replayed call, for a person reading it (``make demo`` ends with it): per
caller turn, what the caller said (the fixture's script, from the ``manifest.json`` beside
the WAV), what the worker heard (its STT final) with the word error rate against the
script, what the agent replied and whether the replies rubric calls it on topic
(``worker.dev.bench.speech``), the response latency, and where ``agent.wav`` and
``report.json`` are."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def caller_script(audio_path: Path) -> list[str] | None:
    """The turns the caller in ``audio_path`` says, when a ``manifest.json`` beside it
    lists that file (``fixtures/audio``); None for any other recording."""
    manifest = audio_path.parent / "manifest.json"
    try:
        entries = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entries, dict):
        return None
    for entry in entries.values():
        if isinstance(entry, dict) and entry.get("file") == audio_path.name:
            return [str(t.get("text", "")) for t in entry.get("turns", [])]
    return None


def story_rows(
    turns: Sequence[Mapping[str, Any]], script: Sequence[str] | None, role: str = ""
) -> list[dict[str, Any]]:
    """One row per caller turn: said, heard, its words and word errors, wer, replied,
    on_topic, latency."""
    from worker.dev.bench.speech import normalise_words, on_topic, word_errors

    rows = []
    previous: str | None = None
    for i, turn in enumerate(turns):
        said = script[i] if script is not None and i < len(script) else None
        heard = turn.get("caller_text_heard")
        reply = turn.get("agent_text")
        words = errors = wer = None
        if said is not None:
            ref = normalise_words(said)
            words, errors = len(ref), word_errors(ref, normalise_words(heard or ""))
            wer = round(errors / max(1, words), 3)
        rows.append(
            {
                "turn": turn.get("turn", i + 1),
                "said": said,
                "heard": heard,
                "words": words,
                "errors": errors,
                "wer": wer,
                "replied": reply,
                "on_topic": on_topic(reply, heard or said or "", role, previous) if reply else None,
                "latency": turn.get("response_latency"),
            }
        )
        previous = reply or previous
    return rows


def story_text(result: Mapping[str, Any]) -> str:
    """The call's story as lines of text (``result`` as ``replay_call`` returns it)."""
    out = Path(result["out"])
    rows = result.get("story") or []
    lines = ["", "The call, turn by turn:"]
    for r in rows:
        lat = r["latency"]
        lines.append(f"  turn {r['turn']}")
        if r["said"] is not None:
            lines.append(f"    caller said:  {r['said']}")
        wer = f"  (WER {r['wer']:.0%})" if r["wer"] is not None else ""
        lines.append(f"    worker heard: {r['heard'] or '(nothing)'}{wer}")
        topic = {True: "  (on topic)", False: "  (off topic)", None: ""}[r["on_topic"]]
        lines.append(f"    agent said:   {r['replied'] or '(no reply)'}{topic}")
        lines.append(
            "    latency:      "
            + (
                f"{lat:.2f} s from the caller's end of speech to the agent's voice"
                if lat
                else "n/a"
            )
        )
    scored = [r for r in rows if r["wer"] is not None]
    if scored:
        words = sum(r["words"] for r in scored)
        errors = sum(r["errors"] for r in scored)
        lines.append(f"  heard with {errors / max(1, words):.0%} WER over {words} words")
    lines.append(f"  the agent's audio: {out / 'agent.wav'}")
    if (out / "report.json").exists():
        lines.append(f"  the post-call report: {out / 'report.json'}")
    return "\n".join(lines)
