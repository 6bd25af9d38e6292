"""Package re-exports: every name in ``__all__`` resolves, and the light decoder children
(``python -m pipelines.engines.pocketsphinx serve``, ``... moonshine serve``) still import no
LiveKit."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.lazy import lazy_exports

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("package", ["pipelines.audio", "pipelines.amd", "pipelines.engines"])
def test_every_exported_name_resolves(package: str) -> None:
    pkg = importlib.import_module(package)
    for name in pkg.__all__:
        assert getattr(pkg, name) is not None, name
    with pytest.raises(AttributeError):
        _ = pkg.no_such_name


def test_exports_and_all_must_agree() -> None:
    with pytest.raises(ImportError, match="differ"):
        lazy_exports("somewhere", ["a"], {"module": ("a", "b")})


@pytest.mark.parametrize("engine", ["pocketsphinx", "moonshine"])
def test_the_decoder_children_stay_light(engine: str) -> None:
    check = (
        f"import sys, pipelines.engines.{engine}; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'livekit', 'av'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", check], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
    # run as ``__main__`` after the package's import: no runpy double-import warning
    child = subprocess.run(
        [sys.executable, "-W", "error", "-m", f"pipelines.engines.{engine}", "serve"],
        cwd=REPO_ROOT,
        input="",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 0 and "Warning" not in child.stderr, child.stderr
