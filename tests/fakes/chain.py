"""A failover chain over fake providers, and a clock a test sets by hand."""

from __future__ import annotations

from typing import Any

from pipelines.providers import ProviderSpec
from pipelines.providers.failover import (
    NO_HEDGE,
    HealthRegistry,
    HedgePolicy,
    Link,
    ProviderChain,
    RatePolicy,
    SwitchEvent,
)


def make_chain(
    layer: str,
    instances: list[Any],
    *,
    deadline: float = 0.3,
    health: HealthRegistry | None = None,
    events: list[SwitchEvent] | None = None,
    return_to_primary: bool = False,
    hedge: HedgePolicy = NO_HEDGE,
    rate: RatePolicy | None = None,
) -> ProviderChain[Any]:
    """A chain of ``instances`` in rank order, named ``v0:m``, ``v1:m`` ...; switches are
    appended to ``events``."""
    links = [
        Link(ProviderSpec(layer=layer, vendor=f"v{i}", model="m"), inst)
        for i, inst in enumerate(instances)
    ]
    return ProviderChain(
        layer,
        links,
        deadline=deadline,
        health=health or HealthRegistry(),
        on_switch=(events.append if events is not None else None),
        return_to_primary=return_to_primary,
        hedge=hedge,
        rate=rate,
    )


class Clock:
    """Virtual time for ``HealthRegistry(clock=...)``: ``t`` moves only when a test sets it."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t
