"""The page's script, bundled at build time: ``livekit-client`` and esbuild come from the
npm registry at the versions ``package-lock.json`` pins (``npm ci`` into ``.cache/talk``),
and esbuild bundles ``static/talk.js`` with ``livekit-client`` into one file there. No
CDN: the page loads nothing but what ``voice-worker talk`` serves.

``scripts/setup.sh`` runs ``voice-worker talk --build``; ``talk`` itself rebuilds a bundle
whose sources changed (their digest sits next to it; ``.cache`` may be shared by several
checkouts, so content, not mtimes, decides; esbuild takes well under a second).
"""

from __future__ import annotations

import filecmp
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from pipelines.errors import VoiceWorkerError
from worker.settings import REPO_ROOT

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
"""The page's sources: ``index.html``, ``talk.css`` and ``talk.js`` (an ES module)."""
CACHE = REPO_ROOT / ".cache" / "talk"
"""``npm ci`` runs here (``node_modules``); the bundle lands in ``dist/``."""
BUNDLE = CACHE / "dist" / "talk.js"
DIGEST = CACHE / "dist" / "talk.js.sha256"
"""The sources' digest the bundle was built from."""
LOCKFILES = ("package.json", "package-lock.json")


class BundleError(VoiceWorkerError):
    """npm or esbuild is missing or failed; the message carries their output's tail."""


def _run(cmd: list[str], *, env: dict[str, str] | None = None) -> None:
    try:
        done = subprocess.run(cmd, cwd=CACHE, env=env, capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        raise BundleError(f"{cmd[0]}: not found (scripts/setup.sh installs it)") from None
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip()[-2000:]
        raise BundleError(f"{' '.join(cmd[:2])} failed (exit {done.returncode}):\n{tail}")


def install_packages() -> bool:
    """``npm ci`` into ``.cache/talk`` unless its lockfile already matches; True if it ran."""
    CACHE.mkdir(parents=True, exist_ok=True)
    esbuild = CACHE / "node_modules" / ".bin" / "esbuild"
    if esbuild.exists() and all(filecmp.cmp(HERE / f, CACHE / f, shallow=False) for f in LOCKFILES):
        return False
    for name in LOCKFILES:
        shutil.copyfile(HERE / name, CACHE / name)
    npm = shutil.which("npm")
    if npm is None:
        raise BundleError("npm: not found (scripts/setup.sh installs nodejs and npm)")
    _run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"])
    return True


def _digest() -> str:
    h = hashlib.sha256()
    for path in (STATIC / "talk.js", *(HERE / f for f in LOCKFILES)):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _stale(digest: str) -> bool:
    return not BUNDLE.exists() or not DIGEST.exists() or DIGEST.read_text().strip() != digest


def ensure_bundle(*, force: bool = False) -> Path:
    """The bundled page script, (re)built if missing or built from other sources."""
    installed = install_packages()
    digest = _digest()
    if force or installed or _stale(digest):
        BUNDLE.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "NODE_PATH": str(CACHE / "node_modules")}
        _run(
            [
                str(CACHE / "node_modules" / ".bin" / "esbuild"),
                str(STATIC / "talk.js"),
                "--bundle",
                "--format=esm",
                "--target=es2020",
                "--minify",
                "--log-level=warning",
                f"--outfile={BUNDLE}",
            ],
            env=env,
        )
        DIGEST.write_text(digest + "\n")
    return BUNDLE
