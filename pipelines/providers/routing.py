"""Provider catalog and routing: which providers may serve a layer, and in what order.

Rules (reference ``000_*``, "Stack preferences"):
- an allowlist entry is a vendor id (any model of that vendor) or ``vendor:model``;
- an empty or missing allowlist means no constraint;
- candidates are ranked by the catalog's benchmark score for the agent's ``optimizeFor``
  (every score is "higher is better": for ``cost`` it measures cheapness);
- an allowlisted entry the catalog cannot rank is an error, never a silent substitute;
- failover stays inside the allowed set: the chain returned here is the whole set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pipelines.errors import ConfigError, RoutingError
from pipelines.types import LAYERS, Layer, OptimizeFor

WILDCARD = "*"


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One (vendor, model) pair the router knows, with its benchmark scores."""

    vendor: str
    model: str
    layer: Layer
    scores: Mapping[str, float] = field(default_factory=dict)
    """``latency``/``quality``/``cost`` in 0..1, higher is better."""
    languages: tuple[str, ...] = ()
    """ISO 639-1 codes served; empty means any."""

    @property
    def id(self) -> str:
        return f"{self.vendor}:{self.model}"

    def serves(self, language: str) -> bool:
        base = language.split("-")[0].lower()
        return not self.languages or base in {lang.split("-")[0].lower() for lang in self.languages}


@dataclass(frozen=True, slots=True)
class Catalog:
    entries: tuple[CatalogEntry, ...]

    @classmethod
    def from_json(cls, data: Any, *, source: str = "providers") -> Catalog:
        """Parses ``GET /v1/providers/known``: a list, or ``{"providers": [...]}``; each
        entry has ``id`` (``vendor:model``) or ``vendor`` + ``model``, ``layer``, ``scores``."""
        items = data.get("providers") if isinstance(data, Mapping) else data
        if not isinstance(items, list):
            raise ConfigError("expected a list of providers", field=source)
        entries = []
        for i, item in enumerate(items):
            where = f"{source}[{i}]"
            if not isinstance(item, Mapping):
                raise ConfigError("expected an object", field=where)
            vendor, model = item.get("vendor"), item.get("model")
            if "id" in item:
                vendor, _, model = str(item["id"]).partition(":")
            if not vendor or not model:
                raise ConfigError("needs id 'vendor:model' or vendor and model", field=where)
            layer = item.get("layer")
            if layer not in LAYERS:
                raise ConfigError(
                    f"layer must be one of {', '.join(LAYERS)}", field=f"{where}.layer"
                )
            scores = item.get("scores") or {}
            if not isinstance(scores, Mapping) or not all(
                isinstance(v, int | float) for v in scores.values()
            ):
                raise ConfigError("must map criteria to numbers", field=f"{where}.scores")
            entries.append(
                CatalogEntry(
                    vendor=str(vendor),
                    model=str(model),
                    layer=layer,
                    scores={str(k): float(v) for k, v in scores.items()},
                    languages=tuple(str(x) for x in item.get("languages") or ()),
                )
            )
        return cls(tuple(entries))

    def layer(self, layer: Layer) -> list[CatalogEntry]:
        return [e for e in self.entries if e.layer == layer]


@dataclass(frozen=True, slots=True)
class Route:
    """The ranked provider chain of one layer, with what was left out and why."""

    layer: Layer
    chain: tuple[CatalogEntry, ...]
    excluded: tuple[tuple[str, str], ...] = ()
    """``(provider id, reason)`` for allowed providers this worker cannot use."""


def parse_entry(entry: str, layer: Layer) -> tuple[str, str | None]:
    vendor, sep, model = entry.strip().partition(":")
    if not vendor or (sep and not model):
        raise ConfigError(
            f"{entry!r} is not 'vendor' or 'vendor:model'", field=f"allowed_providers.{layer}"
        )
    return vendor.lower(), (model or None)


def _matches(entries: Iterable[CatalogEntry], vendor: str, model: str | None) -> list[CatalogEntry]:
    out = []
    for e in entries:
        if e.vendor != vendor:
            continue
        if (model is None and e.model != WILDCARD) or (model is not None and e.model == model):
            out.append(e)
        elif model is not None and e.model == WILDCARD:
            out.append(replace(e, model=model))
    return out


def _allows(entry: str, candidate: CatalogEntry, layer: Layer) -> bool:
    vendor, model = parse_entry(entry, layer)
    return candidate.vendor == vendor and model in (None, candidate.model)


def route(
    layer: Layer,
    catalog: Catalog,
    *,
    allowlist: Sequence[str] | None,
    optimize_for: OptimizeFor,
    language: str,
    pin: str | None = None,
    unusable: Callable[[CatalogEntry], str | None] = lambda _e: None,
) -> Route:
    """Ranks the allowed providers of ``layer``.

    ``pin`` (``vendor:model`` or a bare model) puts one allowed entry first; the rest of
    the allowed set stays behind it as failover. ``unusable`` returns why this worker
    cannot use an entry (no credentials, no factory), or ``None``.
    """
    known = catalog.layer(layer)
    pinned: list[CatalogEntry] = []
    if pin is not None:
        pin_vendor, _, pin_model = pin.partition(":")
        found = (
            _matches(known, pin_vendor.lower(), pin_model)
            if pin_model
            else [e for e in known if e.model == pin]
        )
        if not found:
            raise RoutingError(
                f"{layer}: pinned {pin!r} is not in the provider catalog", layer=layer
            )
        pinned = [found[0]]
        if allowlist and not any(_allows(a, pinned[0], layer) for a in allowlist):
            raise RoutingError(
                f"{layer}: pinned {pin!r} is outside the allowed providers {list(allowlist)}",
                layer=layer,
            )
    if allowlist:
        candidates: list[CatalogEntry] = []
        for raw in allowlist:
            vendor, model = parse_entry(raw, layer)
            found = _matches(known, vendor, model)
            if not found and model is None:
                # A bare vendor whose catalog entry is a wildcard (``custom:*``) is ranked
                # through the pinned model, the only one it can stand for.
                found = [p for p in pinned if p.vendor == vendor]
            if not found:
                raise RoutingError(
                    f"{layer}: allowlisted {raw!r} has no benchmark data in the provider "
                    "catalog, so the router cannot rank it",
                    layer=layer,
                )
            candidates += [e for e in found if e not in candidates]
    else:
        candidates = [e for e in known if e.model != WILDCARD]

    excluded: list[tuple[str, str]] = []
    usable: list[CatalogEntry] = []
    ranked = sorted(candidates, key=lambda c: (-c.scores.get(optimize_for, 0.0), c.id))
    for e in pinned + ranked:
        if e in usable or any(e.id == pid for pid, _ in excluded):
            continue
        reason = None if e.serves(language) else f"does not serve language {language!r}"
        reason = reason or unusable(e)
        if reason and e in pinned:
            raise RoutingError(f"{layer}: pinned {e.id} cannot be used: {reason}", layer=layer)
        if reason:
            excluded.append((e.id, reason))
        else:
            usable.append(e)
    if not usable:
        why = "; ".join(f"{pid}: {r}" for pid, r in excluded) or "no provider in the catalog"
        raise RoutingError(f"{layer}: no usable provider in the allowed set ({why})", layer=layer)
    return Route(layer, tuple(usable), tuple(excluded))
