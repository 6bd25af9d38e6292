"""``voice-worker replay`` of a recorded call: the front desk (offline stack) with
``saveAudioRecording`` on the dispatch writes ``report.json`` whose recording is an object in
the replay's own versitygw bucket, decoding to the call with each side's speech where
``transcript.json`` puts it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipelines.audio import read_wav
from worker.dev.replay import replay_call, summary_text
from worker.dev.services import LiveKitEndpoint
from worker.settings import REPO_ROOT

pytestmark = pytest.mark.integration

FRONT_DESK = "agent_01JC0FRNTDESK0000000000000"
HELLO = REPO_ROOT / "fixtures" / "audio" / "short_hello.wav"
TAIL = 2.0


def speaking(side: np.ndarray, rate: int, start: float, end: float) -> float:
    """Share of 50 ms windows between two times whose RMS is above speech level."""
    n = rate // 20
    seg = side[max(0, round(start * rate)) : round(end * rate)]
    windows = [seg[i : i + n] for i in range(0, len(seg) - n + 1, n)]
    return float(np.mean([np.sqrt(np.mean(np.square(w))) > 0.03 for w in windows]))


async def test_replay_of_a_recorded_call_writes_the_report_and_the_object(
    livekit: LiveKitEndpoint,
    llama_base_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LIVEKIT_API_KEY", livekit.api_key)
    monkeypatch.setenv("LIVEKIT_API_SECRET", livekit.api_secret)
    monkeypatch.setenv("LOCAL_LLM_BASE_URL", llama_base_url)
    monkeypatch.delenv("RECORDINGS_URL", raising=False)
    result = await replay_call(
        FRONT_DESK,
        HELLO,
        tmp_path,
        dispatch={"saveAudioRecording": True},
        livekit_url=livekit.url,
        tail_seconds=TAIL,
    )
    report = json.loads((tmp_path / "report.json").read_text())
    recording = report["recording"]
    assert recording == result["recording"] and recording["format"] == "ogg/opus"
    url = recording["url"]
    assert url.startswith(f"s3://recordings/{FRONT_DESK}/")
    audio, rate = sf.read(tmp_path / "bucket" / url.removeprefix("s3://"), always_2d=True)
    seconds = len(audio) / rate
    assert abs(seconds - recording["duration_s"]) < 0.05
    # the caller played the WAV, listened TAIL seconds more and hung up
    call_seconds = read_wav(HELLO).duration + TAIL
    assert abs(seconds - call_seconds) <= 0.02 * call_seconds, (seconds, call_seconds)

    # the story make demo ends with: the fixture's script beside what was heard and said
    (row,) = result["story"]
    assert row["said"] == "Hello?" and row["heard"], row
    story = summary_text(result)
    assert "caller said:  Hello?" in story and str(tmp_path / "agent.wav") in story, story

    transcript = json.loads((tmp_path / "transcript.json").read_text())
    assert {e["role"] for e in transcript} == {"caller", "agent"}, transcript
    for entry in transcript:
        # a turn is published once it is over: its speech lies in the seconds before
        side = audio[:, 0] if entry["role"] == "caller" else audio[:, 1]
        assert speaking(side, rate, entry["at"] - 2.5, entry["at"]) > 0.15, entry
