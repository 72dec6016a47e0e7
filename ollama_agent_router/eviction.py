"""Which loaded models Ollama would unload to make room for another: a pure function of plain data.

It follows Ollama's scheduler (wire-formats §3, steps 4-5): a model that fits in free VRAM evicts nothing;
otherwise loaded runners go in order of keep-alive (shortest first), then name — not least recently used —
idle ones before busy ones (Ollama waits for a busy one to finish), until the new model fits. When even
all of them are not enough, Ollama unloads them all and loads the model partly on the CPU.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple

from .config.schema import ModelSpec


class Resident(NamedTuple):
    """A loaded model as the eviction choice sees it."""

    name: str
    required_mb: float  # its VRAM, as configured (size plus the safety reserve)
    keep_alive_s: float  # float("inf") for a model kept forever (pinned)
    busy: bool  # requests are running on it


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
