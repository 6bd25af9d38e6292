"""Versity's S3 gateway (versitygw) on a free loopback port: a real S3-compatible server
whose objects land as plain files under a directory (its ``posix`` backend). The call
recordings' bucket in tests, ``voice-worker replay`` and the embedded stack.

Built from the Go module proxy into ``.cache/bin`` (scripts/setup.sh does it)::

    GOBIN=.cache/bin GOFLAGS=-mod=mod \\
        go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
"""

from __future__ import annotations

import secrets
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from worker.dev.services.process import CACHE_BIN, LOOPBACK, ManagedProcess, ServiceError, free_port

VERSITYGW_VERSION = "v1.8.0"
INSTALL_COMMAND = (
    "GOBIN=.cache/bin GOFLAGS=-mod=mod go install "
    f"github.com/versity/versitygw/cmd/versitygw@{VERSITYGW_VERSION}"
)


def find_versitygw() -> Path | None:
    cached = CACHE_BIN / "versitygw"
    if cached.is_file():
        return cached
    on_path = shutil.which("versitygw")
    return Path(on_path) if on_path else None


class S3Server(ManagedProcess):
    """One versitygw over ``data_dir`` (a bucket is a directory in it, an object a file).

    ``data_dir`` outlives a ``stop()``, so a test can take the server away and bring it
    back on the same port with the same objects (a bucket outage).
    """

    name = "versitygw"
    sigterm_shares = (1.0,)

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        port: int | None = None,
        buckets: tuple[str, ...] = ("recordings",),
        access_key: str = "voice-worker",
        secret_key: str | None = None,
        startup_timeout: float = 15.0,
    ) -> None:
        super().__init__(startup_timeout=startup_timeout)
        self.port = port or free_port()
        self._data_dir = data_dir
        self.access_key = access_key
        self.secret_key = secret_key or secrets.token_hex(16)
        self.buckets = buckets

    @property
    def data_dir(self) -> Path:
        return self._data_dir if self._data_dir is not None else self.workdir / "data"

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def settings_env(self, bucket: str = "recordings", prefix: str = "") -> dict[str, str]:
        """The worker's ``RECORDINGS_*`` settings for ``s3://bucket/prefix`` here."""
        return {
            "RECORDINGS_URL": f"s3://{bucket}/{prefix}",
            "RECORDINGS_ENDPOINT_URL": self.endpoint_url,
            "RECORDINGS_ACCESS_KEY_ID": self.access_key,
            "RECORDINGS_SECRET_ACCESS_KEY": self.secret_key,
        }

    def object_path(self, bucket: str, key: str) -> Path:
        """Where the posix backend keeps an object."""
        return self.data_dir / bucket / key

    def _command(self) -> list[str]:
        binary = find_versitygw()
        if binary is None:
            raise ServiceError(f"versitygw not found in {CACHE_BIN} or on PATH; {INSTALL_COMMAND}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for bucket in self.buckets:
            # the posix backend serves every directory under its root as a bucket
            (self.data_dir / bucket).mkdir(exist_ok=True)
        return [
            str(binary),
            "--port", f"{LOOPBACK}:{self.port}",
            "--access", self.access_key,
            "--secret", self.secret_key,
            "posix", str(self.data_dir),
        ]  # fmt: skip

    def _ready(self) -> bool:
        # any HTTP answer (an unsigned request gets 403) means it is serving
        try:
            with urllib.request.urlopen(self.endpoint_url, timeout=0.5):
                return True
        except urllib.error.HTTPError:
            return True
        except (urllib.error.URLError, OSError):
            return False

    def _awaiting(self) -> str:
        return f"for an HTTP answer at {self.endpoint_url}"

    def _reach(self) -> dict[str, str]:
        return {**self.settings_env(self.buckets[0]), "data": str(self.data_dir)}
