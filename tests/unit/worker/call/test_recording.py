"""The call recording without a bucket: the writer thread's file (one clock, both sides,
the channel layout), the object key's privacy, RECORDINGS_URL, the upload's retries and
the report's ``recording`` field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipelines.errors import ConfigError
from tests.fakes import AGENT_HZ, CALLER_HZ, level_at, recorded_call, tone_frames
from worker.call import CallRecorder
from worker.call.recording import (
    FORMAT,
    DirectoryStore,
    Recording,
    S3Store,
    object_key,
    recording_store,
    upload,
)
from worker.config import merge, parse_agent, parse_dispatch
from worker.settings import Settings


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if len(x) else 0.0


def test_stereo_file_has_the_caller_left_and_the_agent_right_where_heard(tmp_path: Path) -> None:
    rec = recorded_call(tmp_path)
    sidecar = rec.close()
    assert sidecar is not None and sidecar.state == "closed"
    audio, rate = sf.read(rec.path, dtype="float32", always_2d=True)
    assert rate == 24000 and audio.shape[1] == 2
    assert abs(len(audio) / rate - 6.0) < 0.12  # within 2%
    assert sidecar.duration_s is not None and abs(sidecar.duration_s - 6.0) < 0.12
    assert sidecar.bytes == rec.path.stat().st_size
    left, right = audio[:, 0], audio[:, 1]
    assert rms(left[rate : 5 * rate]) > 0.1
    # Opus has a few ms of look-ahead: judge the agent's window away from its edges
    assert rms(right[round(2.1 * rate) : round(2.9 * rate)]) > 0.1
    assert rms(right[: round(1.9 * rate)]) < 0.01
    assert rms(right[round(3.1 * rate) :]) < 0.01
    info = sidecar.info()
    assert info["format"] == FORMAT and info["channels"] == 2 and info["url"] == rec.sidecar.url


def test_mix_layout_is_one_channel_with_both_sides(tmp_path: Path) -> None:
    rec = recorded_call(tmp_path, layout="mix")
    sidecar = rec.close()
    assert sidecar is not None and sidecar.channels == 1
    audio, rate = sf.read(rec.path, dtype="float32", always_2d=True)
    assert audio.shape[1] == 1
    mono = audio[:, 0]
    during, after = mono[round(2.1 * rate) : round(2.9 * rate)], mono[round(4.1 * rate) :][:19200]
    assert level_at(during, rate, AGENT_HZ) > 0.1 and level_at(during, rate, CALLER_HZ) > 0.1
    assert level_at(after, rate, AGENT_HZ) < 0.01 and level_at(after, rate, CALLER_HZ) > 0.1


def test_a_call_that_never_connects_leaves_no_file(tmp_path: Path) -> None:
    rec = Recording(tmp_path, call_id="c2", key="a/d/c2.ogg", url="file:///x")
    rec.start(0.0)
    for i, frame in enumerate(tone_frames(1.0, 24000, AGENT_HZ)):
        rec.agent_tap(frame, i * 0.02)  # the greeting played to nobody
    assert rec.close() is None
    assert list(tmp_path.iterdir()) == []


def test_the_object_key_never_shows_a_phone_number() -> None:
    key = object_key("call-+14155550123", "agent_01", 1_767_225_600.0)
    assert key.startswith("agent_01/2026-01-01/") and key.endswith(".ogg")
    assert "4155550123" not in key and "+" not in key
    assert object_key("room/../x y", None, 0.0) == "agent/1970-01-01/room_.._x_y.ogg"


def test_recordings_url_names_a_store_or_the_setting_in_its_error() -> None:
    s3 = recording_store(Settings(recordings_url="s3://calls/eu/rec"))
    assert isinstance(s3, S3Store) and s3.url_for("k.ogg") == "s3://calls/eu/rec/k.ogg"
    local = recording_store(Settings(recordings_url="file:///tmp/recs"))
    assert isinstance(local, DirectoryStore) and local.root == Path("/tmp/recs")
    with pytest.raises(ConfigError, match="RECORDINGS_URL"):
        recording_store(Settings(recordings_url="ftp://host/x"))


class FlakyStore:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.puts = 0

    def url_for(self, key: str) -> str:
        return key

    def put(self, path: Path, key: str) -> None:
        self.puts += 1
        if self.puts <= self.failures:
            raise ConnectionError("bucket down")


def test_upload_retries_with_backoff_until_its_deadline(tmp_path: Path) -> None:
    now = [0.0]
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        now[0] += s

    store = FlakyStore(failures=2)
    assert upload(store, tmp_path / "f", "k", deadline=10.0, sleep=sleep, clock=lambda: now[0])
    assert store.puts == 3 and waits == [0.5, 1.0]
    now[0] = 0.0
    down = FlakyStore(failures=100)
    assert not upload(down, tmp_path / "f", "k", deadline=3.0, sleep=sleep, clock=lambda: now[0])
    assert down.puts == 3  # 0.5 + 1.0 waited, the next 2.0 would pass the deadline


def test_the_report_links_the_recording_and_scrubs_secrets() -> None:
    rec = CallRecorder(call_id="c3", redact=("s3cr3t-key",))
    rec.set_recording(
        {
            "url": "s3://b/p/s3cr3t-key.ogg",
            "duration_s": 6.0,
            "format": FORMAT,
            "channels": 2,
            "bytes": 1234,
        }
    )
    payload = rec.finish("caller left").to_payload()
    assert payload["recording"]["duration_s"] == 6.0
    assert "s3cr3t-key" not in payload["recording"]["url"]
    assert CallRecorder(call_id="c4").finish("x").to_payload()["recording"] is None


def test_the_dispatch_decides_for_one_call_either_way() -> None:
    record = {"id": "agent_01JC0RECRDNG00000000000000", "systemPrompt": "x"}
    recording = parse_agent({**record, "save_audio_recording": True})
    private = parse_agent(record)
    assert private.save_audio_recording is False  # privacy by default
    assert merge(recording, parse_dispatch({})).save_audio_recording is True
    assert (
        merge(recording, parse_dispatch({"saveAudioRecording": False})).save_audio_recording
        is False
    )
    assert (
        merge(private, parse_dispatch({"save_audio_recording": True})).save_audio_recording is True
    )
