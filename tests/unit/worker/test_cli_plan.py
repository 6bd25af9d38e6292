"""``voice-worker plan`` exit codes and output, run in-process (``worker.cli.main``).

DESIGN: 'errors go to stderr with the offending field or file and exit code 2 for bad
input, 1 for a failure at run time'.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from worker.cli import main
from worker.settings import Settings

FRONT_DESK = "agent_01JC0FRNTDESK0000000000000"
APPT_SETTER = "agent_01JC0APPTSETTER00000000000"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, control_plane_dir: Path) -> None:
    """No setting leaks in from the environment or a ``.env`` in the working directory."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONTROL_PLANE_URL", f"file://{control_plane_dir}")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["plan", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def chains(out: str) -> dict[str, list[str]]:
    data: dict[str, Any] = json.loads(out)
    return {layer: [p["id"] for p in links] for layer, links in data["providers"].items()}


def test_fixture_agent_by_id_prints_the_plan(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--agent", FRONT_DESK)
    assert code == 0, err
    data = json.loads(out)
    assert data["agent_id"] == FRONT_DESK
    got = chains(out)
    assert got["stt"] == ["local:moonshine", "local:pocketsphinx"]
    assert got["tts"] == ["local:espeak"]
    assert got["llm"] and all(c.startswith("local:") for c in got["llm"])
    assert data["stale_config"] is False
    assert any("DEEPGRAM_API_KEY is not configured" in w for w in data["warnings"])


def test_provider_keys_from_env_change_the_chain_but_never_print(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEEPGRAM_API_KEY", "dg-secret-key-0001")
    monkeypatch.setenv("ELEVEN_API_KEY", "el-secret-key-0002")
    code, out, err = run(capsys, "--agent", FRONT_DESK)
    assert code == 0, err
    assert chains(out)["stt"][0] == "deepgram:nova-3"
    assert chains(out)["tts"][0] == "elevenlabs:eleven_flash_v2_5"
    assert json.loads(out)["providers"]["stt"][0]["api_key_set"] is True
    assert "dg-secret-key-0001" not in out + err
    assert "el-secret-key-0002" not in out + err


def test_agent_file_and_dispatch_overrides(
    capsys: pytest.CaptureFixture[str], control_plane_dir: Path
) -> None:
    path = control_plane_dir / "agents" / f"{APPT_SETTER}.json"
    dispatch = json.dumps(
        {"variables": {"patientName": "Maya"}, "firstMessage": "Hi {{patientName}}"}
    )
    code, out, err = run(capsys, "--agent", str(path), "--dispatch", dispatch)
    assert code == 0, err
    data = json.loads(out)
    assert data["first_message"] == "Hi Maya"
    assert chains(out)["llm"][0].startswith("custom:")


def test_dispatch_from_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "dispatch.json"
    path.write_text(json.dumps({"constraints": {"allowedProviders": {"tts": ["local:espeak"]}}}))
    code, out, err = run(capsys, "--agent", FRONT_DESK, "--dispatch", str(path))
    assert code == 0, err
    assert chains(out)["tts"] == ["local:espeak"]


def write_agent(tmp_path: Path, **fields: Any) -> Path:
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({"prompt": "p", **fields}))
    return path


def test_invalid_field_in_agent_file_exits_2_naming_field_and_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write_agent(tmp_path, tts_playback_rate=5.0)
    code, out, err = run(capsys, "--agent", str(path))
    assert code == 2
    assert out == ""
    assert "tts_playback_rate: must be between 0.5 and 3.0" in err
    assert str(path) in err


def test_cross_field_rule_in_agent_file_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write_agent(tmp_path, llm_provider="custom", llm_model="m")
    code, _, err = run(capsys, "--agent", str(path))
    assert code == 2
    assert "llm_base_url: required when llm_provider is custom" in err


def test_agent_file_not_json_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{ nope")
    code, _, err = run(capsys, "--agent", str(path))
    assert code == 2
    assert str(path) in err and "line 1" in err


def test_missing_agent_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "--agent", str(tmp_path / "nope.json"))
    assert code == 2
    assert "nope.json" in err


def test_unknown_agent_id_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    missing = "agent_01JC0N0SVCHAGENT000000000"
    code, out, err = run(capsys, "--agent", missing)
    assert code == 2
    assert out == ""
    assert missing in err and "not found" in err


def test_unroutable_agent_exits_2_naming_the_layer(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write_agent(tmp_path, stackPreferences={"allowedProviders": {"stt": ["deepgram"]}})
    code, _, err = run(capsys, "--agent", str(path))
    assert code == 2
    assert "stt: no usable provider" in err


def test_control_plane_unreachable_exits_1_with_url_and_cause(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTROL_PLANE_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("CONTROL_PLANE_MAX_ATTEMPTS", "1")
    code, out, err = run(capsys, "--agent", FRONT_DESK)
    assert code == 1
    assert out == ""
    assert f"http://127.0.0.1:1/v1/agents/{FRONT_DESK}" in err
    assert "ConnectError" in err


@pytest.mark.parametrize("bad", ["{not json", "nope-not-a-file", '{"agentId": '])
def test_bad_dispatch_json_exits_2(capsys: pytest.CaptureFixture[str], bad: str) -> None:
    code, out, err = run(capsys, "--agent", FRONT_DESK, "--dispatch", bad)
    assert code == 2
    assert out == ""
    assert "--dispatch" in err


def test_bad_dispatch_value_exits_2_naming_field(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys, "--agent", FRONT_DESK, "--dispatch", '{"ttsOptions": {"playbackRate": 9}}'
    )
    assert code == 2
    assert "tts_options.playback_rate: must be between 0.5 and 3.0" in err


@pytest.mark.parametrize("bad", ["[1, 2]", '"text"'])
def test_dispatch_that_is_not_an_object_exits_2(
    capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    code, _, err = run(capsys, "--agent", FRONT_DESK, "--dispatch", bad)
    assert code == 2
    assert "--dispatch" in err


SPEECHIFY_STYLE = {
    "id": "agent_01JC0SPEECHF10000000000000",
    "name": "Support",
    "voice_id": "sophia",
    "prompt": "You help callers.",
    "language": "en",
    "response_delay_seconds": 0.6,
}
"""A 001-style agent: the STT left to the worker default, a response delay of its own."""


@pytest.mark.parametrize(
    ("override", "head", "turns"),
    [(None, "baseten:whisper-v3", "vad"), ("flux", "deepgram:flux", "stt")],
)
def test_001_agent_stt_default_and_flux_override(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    override: str | None,
    head: str,
    turns: str,
) -> None:
    """001: 'Null means use the worker's default stack (today: whisper-v3, Baseten Whisper
    Large V3) ... flux to opt into Deepgram Flux's semantic end-of-turn detection'."""
    for name, value in {
        "BASETEN_API_KEY": "bt-secret",
        "BASETEN_BASE_URL": "wss://model-x.api.baseten.co/environments/production/websocket",
        "ASSEMBLYAI_API_KEY": "aai-secret",
        "DEEPGRAM_API_KEY": "dg-secret",
    }.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({**SPEECHIFY_STYLE, "stt_override": override}))
    code, out, err = run(capsys, "--agent", str(path))
    assert code == 0, err
    data = json.loads(out)
    assert chains(out)["stt"][0] == head
    assert not [w for w in data["warnings"] if "no baseten" in w or "no assemblyai" in w]
    assert data["endpointing"]["turn_detection"] == turns
    assert data["endpointing"]["min_delay"] == (0.6 if turns == "vad" else 0.0)
    assert not any(s in out for s in ("bt-secret", "aai-secret", "dg-secret"))
