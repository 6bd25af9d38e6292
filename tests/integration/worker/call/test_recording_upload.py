"""Recordings into a real S3-compatible bucket (versitygw on loopback): the upload (multipart
for a long file), a bucket outage the sweep recovers from, and a job killed mid-call whose
half-written file the next sweep repairs and uploads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf

from tests.fakes import AGENT_HZ, CALLER_HZ, level_at, recorded_call
from worker.call.recording import S3Store, recording_store, spool_dir, sweep, upload
from worker.dev.services import S3Server
from worker.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with S3Server(tmp_path_factory.mktemp("s3")) as server:
        yield server


def s3_settings(server: S3Server, spool: Path, prefix: str = "calls") -> Settings:
    env = server.settings_env(prefix=prefix)
    return Settings(
        spool_dir=spool,
        recordings_url=env["RECORDINGS_URL"],
        recordings_endpoint_url=env["RECORDINGS_ENDPOINT_URL"],
        recordings_access_key_id=env["RECORDINGS_ACCESS_KEY_ID"],
        recordings_secret_access_key=env["RECORDINGS_SECRET_ACCESS_KEY"],
    )


def test_a_recording_uploads_and_the_object_decodes_to_the_call(
    s3: S3Server, tmp_path: Path
) -> None:
    settings = s3_settings(s3, tmp_path / "spool")
    store = recording_store(settings)
    key = "agent_1/2026-01-01/call_1.ogg"
    rec = recorded_call(spool_dir(settings), seconds=20.0, agent_at=8.0, url=store.url_for(key))
    sidecar = rec.close()
    assert sidecar is not None
    assert upload(store, rec.path, key, deadline=time.monotonic() + 10)
    obj = s3.object_path("recordings", f"calls/{key}")
    assert sidecar.url == f"s3://recordings/calls/{key}"
    assert obj.stat().st_size == sidecar.bytes
    audio, rate = sf.read(obj, dtype="float32", always_2d=True)
    assert abs(len(audio) / rate - 20.0) < 0.4  # within 2%
    agent = audio[round(8.1 * rate) : round(8.9 * rate)]
    assert level_at(agent[:, 1], rate, AGENT_HZ) > 0.1
    assert level_at(agent[:, 0], rate, CALLER_HZ) > 0.1
    assert level_at(audio[round(12 * rate) :, 1], rate, AGENT_HZ) < 0.01


def test_a_long_recording_goes_up_in_parts(s3: S3Server, tmp_path: Path) -> None:
    store = recording_store(s3_settings(s3, tmp_path))
    assert isinstance(store, S3Store)
    big = tmp_path / "long.ogg"
    big.write_bytes(os.urandom(9 * 1024 * 1024))  # over MULTIPART_BYTES: two parts
    assert upload(store, big, "long.ogg", deadline=time.monotonic() + 20)
    head = store.client().head_object(Bucket="recordings", Key="calls/long.ogg")
    assert head["ContentLength"] == big.stat().st_size
    assert head["ETag"].strip('"').endswith("-2")  # a multipart upload's ETag counts its parts


def test_after_a_bucket_outage_the_sweep_uploads_what_the_job_left(tmp_path: Path) -> None:
    server = S3Server(tmp_path / "s3")
    server.start()
    try:
        settings = s3_settings(server, tmp_path / "spool")
        store = recording_store(settings)
        key = "agent_1/2026-01-01/outage.ogg"
        rec = recorded_call(spool_dir(settings), key=key, url=store.url_for(key))
        assert rec.close() is not None
        server.stop()  # the bucket goes away before the call's end
        assert not upload(store, rec.path, key, deadline=time.monotonic() + 1.0)
        assert rec.path.exists() and rec.sidecar_path.exists()
        # the job has long exited (its sidecar is old); the bucket is back on the same port
        old = time.time() - 120
        os.utime(rec.sidecar_path, (old, old))
        server.start()
        assert sweep(settings) == [f"s3://recordings/calls/{key}"]
        assert not rec.path.exists() and not rec.sidecar_path.exists()
        audio, rate = sf.read(server.object_path("recordings", f"calls/{key}"), always_2d=True)
        assert abs(len(audio) / rate - 6.0) < 0.12
    finally:
        server.stop()


CRASHING_JOB = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from tests.fakes import CALLER_HZ, tone_frames
    from worker.call.recording import Recording

    rec = Recording(Path(sys.argv[1]), call_id="crash", key="agent_1/d/crash.ogg",
                    url="s3://recordings/calls/agent_1/d/crash.ogg")
    start = time.monotonic()
    rec.start(start)
    for i, frame in enumerate(tone_frames(60.0, 16000, CALLER_HZ)):
        at = start + i * 0.02
        time.sleep(max(0.0, at + 0.02 - time.monotonic()))
        rec.caller_tap(frame, at)
        if i == 150:
            print("3 s in", flush=True)
    """
)


def test_a_job_killed_mid_call_leaves_a_file_the_sweep_recovers(
    s3: S3Server, tmp_path: Path
) -> None:
    settings = s3_settings(s3, tmp_path / "spool")
    spool = spool_dir(settings)
    job = subprocess.Popen(
        [sys.executable, "-c", CRASHING_JOB, str(spool)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert job.stdout is not None and job.stdout.readline().strip() == "3 s in"
        time.sleep(1.0)
        assert len(list(spool.glob("*.ogg"))) == 1
        assert sweep(settings) == []  # the job is alive: its recording is left to it
    finally:
        job.send_signal(signal.SIGKILL)
        job.wait()
    assert sweep(settings) == ["s3://recordings/calls/agent_1/d/crash.ogg"]
    audio, rate = sf.read(s3.object_path("recordings", "calls/agent_1/d/crash.ogg"), always_2d=True)
    seconds = len(audio) / rate
    # up to the crash (4 s in) less what had not reached the disk: the hold and one flush
    assert 1.5 < seconds < 4.2, seconds
    assert level_at(audio[: round(1.0 * rate), 0], rate, CALLER_HZ) > 0.1
    assert list(spool.iterdir()) == []
