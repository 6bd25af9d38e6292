"""Lazy re-exports for a package ``__init__`` (PEP 562).

A package re-exports its public names so that readers import from the package, yet a light
process that needs one small module must not pay for the others: importing
``pipelines.audio.pcm`` runs ``pipelines/audio/__init__.py`` first, and an eager re-export of
the VAD there would pull ``livekit.agents`` (about 1.3 s and 100 MB) into the pocketsphinx
child. Eager re-exports of ``pipelines.engines`` would also import
``pipelines.engines.pocketsphinx`` before ``python -m`` runs it as ``__main__`` (a runpy
warning, and the module twice). So such a package lists its names in ``__all__``, imports
them under ``if TYPE_CHECKING:`` for type checkers, and ``else:`` sets the module
``__getattr__`` from ``lazy_exports``, which imports each name from its module on first use.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Collection, Mapping


def lazy_exports(
    package: str, exported: Collection[str], modules: Mapping[str, tuple[str, ...]]
) -> Callable[[str], object]:
    """The module ``__getattr__`` of ``package``: each name of ``modules[submodule]`` is
    imported from ``package.submodule`` when first read, then kept in the package.
    ``exported`` is the package's ``__all__``, which must list the same names."""
    origin = {name: module for module, names in modules.items() for name in names}
    if sorted(origin) != sorted(exported):
        raise ImportError(
            f"{package}: __all__ and the lazy exports differ in "
            f"{sorted(set(origin).symmetric_difference(exported))}"
        )

    def __getattr__(name: str) -> object:
        module = origin.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
