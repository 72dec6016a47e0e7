"""Which loaded models Ollama would unload to make room for another: a pure function of plain data.

It follows Ollama's scheduler (wire-formats §3, steps 4-5): a model that fits in free VRAM evicts nothing;
otherwise loaded runners go in order of keep-alive (shortest first), then name — not least recently used —
idle ones before busy ones (Ollama waits for a busy one to finish), until the new model fits. When even
all of them are not enough, Ollama unloads them all and loads the model partly on the CPU.

Ollama's order is blind to use: among models with the same keep-alive it drops the one whose name sorts
first, which may be the small model every agent calls. ``steered`` is the router's own choice, made when
``queue.steerEvictions`` is on: the models asked for least lately go first.
"""

from __future__ import annotations

import math
from typing import Iterable, NamedTuple

from .config.schema import ModelSpec

DEMAND_FADE_S = 300.0


class Resident(NamedTuple):
    """A loaded model as the eviction choice sees it."""

    name: str
    required_mb: float  # its VRAM, as configured (size plus the safety reserve)
    keep_alive_s: float  # float("inf") for a model kept forever (pinned)
    busy: bool  # requests are running on it
    waiting: bool = False  # requests are waiting for it in the router's queue
    demand: float = 0.0  # how much it has been asked for lately (``Demand``)


class Demand:
    """How much each model has been asked for lately: a start counts 1, fading by a factor e every
    ``DEMAND_FADE_S``. The models most in demand are the last the router unloads."""

    def __init__(self) -> None:
        self._counted: dict[str, tuple[float, float]] = {}  # model -> (demand, when it was counted)

    def of(self, model: str, now: float) -> float:
        value, since = self._counted.get(model, (0.0, now))
        return value * math.exp((since - now) / DEMAND_FADE_S)

    def count(self, model: str, now: float) -> None:
        self._counted[model] = (self.of(model, now) + 1.0, now)


def required_mb(spec: ModelSpec, reserve_mb: float) -> float:
    """The VRAM a model is counted at: its configured size plus the safety reserve."""
    return spec.size_gb * 1024 + reserve_mb


def free_vram(measured_mb: float | None, total_mb: float, resident: Iterable[Resident]) -> float | None:
    """Free VRAM: the GPU's reading when there is one, else the configured total minus the loaded models.

    None when nothing is known about memory at all (no reading, no configured total).
    """
    if measured_mb is not None:
        return measured_mb
    if total_mb <= 0:
        return None
    return total_mb - sum(r.required_mb for r in resident)


def evictions(required_mb: float, resident: Iterable[Resident], free_mb: float | None) -> tuple[str, ...]:
    """The models that would be unloaded, in Ollama's order, to load a model needing ``required_mb``."""
    if free_mb is None or required_mb <= free_mb:
        return ()
    order = sorted(resident, key=lambda r: (r.busy, r.keep_alive_s, r.name))
    gone: list[str] = []
    for r in order:
        gone.append(r.name)
        free_mb += r.required_mb
        if required_mb <= free_mb:
            break
    return tuple(gone)


def steered(required_mb: float, resident: Iterable[Resident], free_mb: float | None) -> tuple[tuple[str, ...], bool]:
    """What the router unloads for a load now, and whether it waits for a busy model first.

    Its order: models without requests waiting for them first, then the least asked for, until the new
    model fits. When that takes a busy model the router waits for it (as Ollama would, with every other load
    queued behind it); once it cannot wait any longer it unloads the idle models only, if they make room
    alone. Nothing when the model fits, when nothing is known about memory, or when all of them are too few.
    """
    def enough(candidates: Iterable[Resident]) -> list[Resident] | None:
        room = free_mb or 0.0
        gone: list[Resident] = []
        for r in sorted(candidates, key=lambda r: (r.waiting, r.demand, r.name)):
            gone.append(r)
            room += r.required_mb
            if required_mb <= room:
                return gone
        return None

    if free_mb is None or required_mb <= free_mb:
        return (), False
    resident = list(resident)
    chosen = enough(resident)
    if chosen is None:
        return (), False
    if not any(r.busy for r in chosen):
        return tuple(r.name for r in chosen), False
    idle = enough(r for r in resident if not r.busy)
    return tuple(r.name for r in idle or ()), True
