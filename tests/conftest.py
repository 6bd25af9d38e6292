"""Shared test fixtures: leaked-task guard, fixture paths, explicit ``Settings``."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from worker.settings import Settings

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CONTROL_PLANE_DIR = FIXTURES / "control_plane"


@pytest_asyncio.fixture(loop_scope="function")
async def _no_leaked_tasks() -> AsyncIterator[None]:
    before = asyncio.all_tasks()
    yield
    # Give tasks cancelled in the test's own cleanup one turn to finish.
    await asyncio.sleep(0)
    leaked = asyncio.all_tasks() - before - {asyncio.current_task()}
    leaked = {t for t in leaked if not t.done()}
    if leaked:
        for task in leaked:
            task.cancel()
        pytest.fail(f"test left {len(leaked)} asyncio task(s) running: {sorted(map(repr, leaked))}")


@pytest.fixture(autouse=True)
def fail_on_leaked_tasks(request: pytest.FixtureRequest) -> None:
    """Fails an async test that leaves asyncio tasks running behind it."""
    if inspect.iscoroutinefunction(getattr(request, "function", None)):
        request.getfixturevalue("_no_leaked_tasks")


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture
def control_plane_dir() -> Path:
    return CONTROL_PLANE_DIR


def make_settings(**overrides: Any) -> Settings:
    """``Settings`` with every field given explicitly (init values win over the environment),
    so no env var or ``.env`` leaks in.

    Provider keys default to unset and the control plane to ``fixtures/control_plane``.
    """
    values: dict[str, Any] = {
        name: f.get_default(call_default_factory=True) for name, f in Settings.model_fields.items()
    }
    for name in ("deepgram", "openai", "eleven"):
        values[f"{name}_api_key"] = None
        values[f"{name}_base_url"] = None
    values["control_plane_url"] = f"file://{CONTROL_PLANE_DIR}"
    values["control_plane_api_key"] = None
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings() -> Callable[..., Settings]:
    """Factory: ``settings(openai_api_key="sk-...")``."""
    return make_settings
