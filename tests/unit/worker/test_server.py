"""The worker process: what it hands to LiveKit's ``AgentServer``."""

from __future__ import annotations

from collections.abc import Callable

from worker.settings import Settings


def test_forkserver_preloads_what_a_job_imports(settings: Callable[..., Settings]) -> None:
    """Every preloaded module imports (the forkserver would skip a broken one silently)
    and the server hands the list to LiveKit's forkserver."""
    import importlib

    from worker.server import PRELOAD_MODULES, build_server

    for name in PRELOAD_MODULES:
        importlib.import_module(name)
    assert "worker.call.entrypoint" in PRELOAD_MODULES
    server = build_server(settings())
    assert server._preload_modules == list(PRELOAD_MODULES)
