"""Where finished recordings go: ``RECORDINGS_URL`` parsed into a store, the upload with
its retries, and the sweep of the spool that uploads what a job left behind.

``s3://bucket/prefix`` uploads with boto3 to AWS or any S3-compatible server
(``RECORDINGS_ENDPOINT_URL``): a file over ``MULTIPART_BYTES`` goes up in parts, and every
request is retried by botocore (standard mode) before the upload as a whole is retried with
backoff. ``file://DIR`` copies into a directory (write, then rename: a reader never sees
half a file). Both are synchronous: callers run them in a thread, never on the event loop.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from pipelines.errors import ConfigError
from worker.call.recording.writer import SIDECAR_SUFFIX, SUFFIX, Sidecar, repair
from worker.settings import Settings

logger = logging.getLogger(__name__)

MULTIPART_BYTES = 8 * 1024 * 1024
"""Above this size (about 40 minutes of stereo Opus) a recording goes up in parts."""


class RecordingStore(Protocol):
    def url_for(self, key: str) -> str:
        """The recording's address once uploaded (what the report links to)."""
        ...

    def put(self, path: Path, key: str) -> None:
        """Uploads ``path`` as ``key`` once; raises on failure."""
        ...


@dataclass(frozen=True)
class DirectoryStore:
    root: Path

    def url_for(self, key: str) -> str:
        return (self.root / key).resolve().as_uri()

    def put(self, path: Path, key: str) -> None:
        dest = self.root / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".partial")
        shutil.copyfile(path, partial)
        partial.replace(dest)


class S3Store:
    """One bucket (and key prefix) on AWS or an S3-compatible server."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        *,
        endpoint_url: str | None,
        access_key_id: str | None,
        secret_access_key: str | None,
        region: str,
        timeout: float = 5.0,
        request_attempts: int = 3,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self._options: dict[str, Any] = {
            "endpoint_url": endpoint_url,
            "aws_access_key_id": access_key_id,
            "aws_secret_access_key": secret_access_key,
            "region_name": region,
        }
        self._timeout = timeout
        self._request_attempts = request_attempts
        self._client: Any = None

    def client(self) -> Any:
        """The boto3 client, made on first use: importing boto3 takes a while, and the
        store is built on the event loop while only the upload thread needs the client."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.session.Session().client(
                "s3",
                **self._options,
                config=Config(
                    connect_timeout=self._timeout,
                    read_timeout=self._timeout,
                    retries={"mode": "standard", "max_attempts": self._request_attempts},
                    # path-style: S3-compatible servers on loopback have no bucket DNS names
                    s3={"addressing_style": "path"},
                ),
            )
        return self._client

    def url_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def put(self, path: Path, key: str) -> None:
        from boto3.s3.transfer import TransferConfig

        self.client().upload_file(
            str(path),
            self.bucket,
            self.prefix + key,
            ExtraArgs={"ContentType": "audio/ogg"},
            Config=TransferConfig(
                multipart_threshold=MULTIPART_BYTES,
                multipart_chunksize=MULTIPART_BYTES,
                max_concurrency=2,
                use_threads=True,
            ),
        )


def recording_store(settings: Settings) -> RecordingStore:
    """The store ``RECORDINGS_URL`` names; ``ConfigError`` naming the setting otherwise."""
    url = settings.recordings_url
    parts = urlsplit(url)
    if parts.scheme == "file":
        return DirectoryStore(Path(parts.netloc + parts.path))
    if parts.scheme == "s3" and parts.netloc:
        prefix = parts.path.strip("/")
        secret = settings.recordings_secret_access_key
        return S3Store(
            parts.netloc,
            prefix + "/" if prefix else "",
            endpoint_url=settings.recordings_endpoint_url,
            access_key_id=settings.recordings_access_key_id,
            secret_access_key=secret.get_secret_value() if secret else None,
            region=settings.recordings_region,
        )
    raise ConfigError(
        f"expected s3://bucket/prefix or file://DIR, got {url!r}", field="RECORDINGS_URL"
    )


def upload(
    store: RecordingStore,
    path: Path,
    key: str,
    *,
    deadline: float,
    backoff: float = 0.5,
    sleep: Any = time.sleep,
    clock: Any = time.monotonic,
) -> bool:
    """Uploads with retries until ``deadline`` (a ``clock()`` time); False when it gave up
    (the file stays in the spool for the sweep)."""
    attempt = 0
    while True:
        attempt += 1
        try:
            store.put(path, key)
            return True
        except Exception as exc:  # botocore's and OSError's trees differ; all are retried
            wait = min(backoff * 2 ** (attempt - 1), 5.0)
            if clock() + wait >= deadline:
                logger.warning(
                    "recording upload failed (%d attempts): %s: %s",
                    attempt,
                    type(exc).__name__,
                    exc,
                )
                return False
            sleep(wait)


IN_JOB_GRACE = 30.0
"""Seconds after closing during which a recording is its own job's to upload."""


def spool_dir(settings: Settings) -> Path:
    """Where recordings are written and wait for their upload."""
    return settings.spool_dir / "recordings"


def sweep(settings: Settings, *, deadline_seconds: float = 60.0) -> list[str]:
    """Uploads every recording left in the spool: one whose upload failed or ran out of
    time in its job, or one a crashed job left half-written (repaired first). One still
    being written, or closed less than ``IN_JOB_GRACE`` ago, by a live process is left to
    it. Returns the uploaded URLs."""
    spool = spool_dir(settings)
    if not spool.is_dir():
        return []
    store: RecordingStore | None = None
    uploaded = []
    for meta in sorted(spool.glob("*" + SIDECAR_SUFFIX)):
        audio = meta.with_suffix(SUFFIX)
        try:
            sidecar = Sidecar.load(meta)
        except (OSError, ValueError, TypeError) as exc:
            logger.warning("recording sidecar %s unreadable: %s", meta.name, exc)
            continue
        busy = sidecar.state == "recording" or time.time() - meta.stat().st_mtime < IN_JOB_GRACE
        if busy and process_alive(sidecar.pid):
            continue  # still being written, or its job may still be uploading it
        if not audio.exists():
            meta.unlink(missing_ok=True)
            continue
        if sidecar.state == "recording":
            repair(audio, sidecar).save(meta)
            logger.info("recording of call %s recovered after a crash", sidecar.call_id)
        store = store or recording_store(settings)
        if upload(store, audio, sidecar.key, deadline=time.monotonic() + deadline_seconds):
            audio.unlink(missing_ok=True)
            meta.unlink(missing_ok=True)
            uploaded.append(sidecar.url)
    return uploaded


def process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
