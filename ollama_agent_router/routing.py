"""Which model runs a request, and how: pure functions from plain data to a decision.

Follows the original's engine (spec §5): candidates (preferred, route, purpose/tags, minus forbidden),
blocks (gpu_only, busy), the additive score, and the sync/async/reject order — with its bugs fixed:
a model outside the route list gets no route bonus, the async paths never pick a gpu_only model, and a
model that is not loaded is gpu_only only when it would not fit even after Ollama unloaded the loaded ones.
Beyond it: a model whose ``maxContext`` cannot hold the prompt is blocked (``context``), and a conversation's
own model (``sticky``) is kept while it can run.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter
from typing import Mapping, NamedTuple

from .config.schema import Config, ModelSpec, is_embedding_model
from .eviction import required_mb
from .jsonutil import to_fixed1
from .options import RouterMeta


class ModelState(NamedTuple):
    """What the scheduler and the runtime snapshot know about one model right now.

    Tuples rather than frozen dataclasses: these are built on every queue change and every candidate,
    and a frozen dataclass pays a setattr per field."""

    waiting: int = 0
    running: int = 0
    loaded: bool = False
    processor: str = ""  # lower-cased, rendered like `ollama ps`: "100% gpu", "48%/52% cpu/gpu"
    cooldown: bool = False


IDLE = ModelState()


class RuntimeView(NamedTuple):
    gpu_free_mb: float | None  # None when there is no GPU snapshot
    total_waiting: int
    models: Mapping[str, ModelState] = {}


class Candidate(NamedTuple):
    name: str
    score: float = 0.0
    blocked: str | None = None  # context | gpu_only | busy | cooldown
    components: tuple[tuple[str, float], ...] = ()


@dataclass(slots=True)
class Decision:
    action: str  # sync | async | reject
    model: str | None
    reason: str
    score: float
    candidates: tuple[str, ...]  # candidate order, blocked ones included
    ranked: tuple[Candidate, ...]  # available candidates, best first
    blocked: tuple[Candidate, ...]
    heavy_load: bool = False
    status: int = 200
    sticky: bool = False  # the model is the conversation's own, kept from its earlier turns

    def failover_order(self) -> list[str]:
        """Models to try after the selected one, best first."""
        return [c.name for c in self.ranked if c.name != self.model]


@dataclass(frozen=True, slots=True)
class _ModelFacts:
    """The parts of a ModelSpec the score reads, flattened for the per-candidate loop."""

    name: str
    priority: float
    purpose: frozenset[str]
    tags: frozenset[str]
    required_mb: float
    exclusive: bool
    allow_when_busy: bool
    max_concurrent: int
    low_cost: bool
    high_cost: bool
    max_context: int

    @classmethod
    def of(cls, m: ModelSpec, required_mb: float) -> "_ModelFacts":
        return cls(m.name, m.priority, frozenset(m.purpose), frozenset(m.tags), required_mb, m.exclusive,
                   m.allow_when_busy, m.max_concurrent, m.cost_class == "low", m.cost_class == "high",
                   m.max_context)


class _Fixed(NamedTuple):
    """A model's score parts that depend only on the config and the request's task type and complexity."""

    prefix: float  # base + routePosition + priority + purpose + tag, summed in the spec's order
    route: int
    purpose: int
    tag: int
    cost: int


class RoutingTable:
    """Config-derived lookups, built once so a decision allocates as little as possible."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.models: dict[str, ModelSpec] = {m.name: m for m in cfg.models}
        self.order = [m.name for m in cfg.models]
        self.aliases: dict[str, str] = {}
        for m in cfg.models:
            for alias in m.aliases:
                self.aliases[alias] = m.name
        self.routes = cfg.routes
        self.route_index = {task: {n: i for i, n in reversed(list(enumerate(names)))} for task, names in cfg.routes.items()}
        self.by_purpose: dict[str, list[str]] = {}
        for m in cfg.models:
            for tag in dict.fromkeys(m.purpose + m.tags):
                self.by_purpose.setdefault(tag, []).append(m.name)
        self.required_mb = {m.name: required_mb(m, cfg.gpu.vram_safety_reserve_mb) for m in cfg.models}
        self.size_mb = {m.name: m.size_gb * 1024 for m in cfg.models}
        self.facts = {m.name: _ModelFacts.of(m, self.required_mb[m.name]) for m in cfg.models}
        self.task_types = frozenset(cfg.routes) | frozenset(t for m in cfg.models for t in m.purpose)
        # The models that complete text, smallest first: where a prompt goes that its task's models cannot hold.
        self.by_size = tuple(m.name for m in sorted(cfg.models, key=lambda m: m.size_gb) if not is_embedding_model(m))
        # Any task type the config never names scores and selects like every other such type, so the
        # caches below stay bounded by the config whatever task types clients send.
        self._named_types = frozenset(cfg.routes) | frozenset(self.by_purpose)
        self._base: dict[str | None, tuple[str, ...]] = {}
        self._fixed: dict[tuple[str | None, str], dict[str, _Fixed]] = {}

    def loaded_mb(self, models: Mapping[str, ModelState]) -> float:
        """The VRAM the loaded configured models hold (their size), all of which Ollama unloads, busy ones
        once they finish, before it puts part of a model that does not fit on the CPU. Comparing a load with
        the free VRAM alone (as the original did) blocks a big model whenever small ones are resident, and
        sends even the requests that name it elsewhere."""
        return sum(self.size_mb[n] for n, state in models.items() if state.loaded and n in self.size_mb)

    def resolve(self, name: str) -> str | None:
        """A configured model name for a client-supplied name or alias, with or without ``:latest``."""
        if name in self.models:
            return name
        if name in self.aliases:
            return self.aliases[name]
        if name.endswith(":latest"):
            return self.resolve(name[: -len(":latest")])
        if ":" not in name and f"{name}:latest" in self.models:
            return f"{name}:latest"
        return None

    def holding(self, tokens: int, meta: RouterMeta, exclude: tuple[str, ...]) -> tuple[str, ...]:
        """The models that can hold ``tokens`` of context, smallest first, except ``exclude`` and the forbidden."""
        forbidden = {self.resolve(n) or n for n in meta.forbidden_models}
        return tuple(n for n in self.by_size if self.models[n].max_context >= tokens
                     and n not in exclude and n not in forbidden)

    def route_positions(self, task_type: str) -> dict[str, int]:
        if task_type in self.route_index:
            return self.route_index[task_type]
        return self.route_index.get("unknown", {})

    def preferred_index(self, meta: RouterMeta) -> dict[str, int]:
        index: dict[str, int] = {}
        for p, name in enumerate(meta.preferred_models):
            resolved = self.resolve(name)
            if resolved is not None:
                index.setdefault(resolved, p)
        return index

    def route_list(self, task_type: str) -> tuple[str, ...]:
        if task_type in self.routes:
            return self.routes[task_type]
        return self.routes.get("unknown", ())

    def base_candidates(self, task_type: str) -> tuple[str, ...]:
        """Candidates when the request prefers, forbids and pins nothing: the route list, then purpose/tags."""
        key = task_type if task_type in self._named_types else None
        names = self._base.get(key)
        if names is None:
            ordered = dict.fromkeys(self.route_list(task_type))
            ordered.update(dict.fromkeys(self.by_purpose.get(task_type, ())))
            names = self._base[key] = tuple(n for n in ordered if n in self.models)
        return names

    def fixed_parts(self, task_type: str, complexity: str) -> dict[str, _Fixed]:
        level = complexity if complexity in ("heavy", "light") else ""
        key = (task_type if task_type in self._named_types else None, level)
        parts = self._fixed.get(key)
        if parts is None:
            positions = self.route_positions(task_type)
            parts = self._fixed[key] = {
                name: _fixed_parts(m, task_type, positions.get(name), level) for name, m in self.facts.items()
            }
        return parts


def candidate_names(meta: RouterMeta, task_type: str, table: RoutingTable,
                    pinned: str | None = None) -> tuple[str, ...]:
    """The pinned (or sticky) model, preferred models, then the route list, then purpose/tag matches; unknown
    and forbidden removed."""
    if pinned is None and not meta.preferred_models and not meta.forbidden_models:
        return table.base_candidates(task_type)
    ordered: dict[str, None] = {}
    if pinned is not None:
        ordered[pinned] = None
    for name in meta.preferred_models:
        resolved = table.resolve(name)
        if resolved is not None:
            ordered.setdefault(resolved, None)
    for name in table.route_list(task_type):
        ordered.setdefault(name, None)
    for name in table.by_purpose.get(task_type, ()):
        ordered.setdefault(name, None)
    forbidden = {table.resolve(n) or n for n in meta.forbidden_models}
    return tuple(n for n in ordered if n in table.models and n not in forbidden)


class _Request(NamedTuple):
    """Per-decision constants, computed once rather than once per candidate."""

    preferred: Mapping[str, int]
    free_mb: float
    room_mb: float  # the most VRAM a load can get: free, plus what Ollama frees by unloading loaded models
    gpu_only: bool
    no_gpu: bool
    explain: bool
    context_tokens: int  # the prompt estimate plus the output reserved for it


def _fixed_parts(m: _ModelFacts, task_type: str, idx: int | None, complexity: str) -> _Fixed:
    """The config-only part of the score of spec §5.5.

    A model outside the route list gets route bonus 0 (the original's index -1 gave it +58).
    """
    route = 50 - 8 * idx if idx is not None and idx < 7 else 0
    purpose = 25 if task_type in m.purpose else 0
    tag = 15 if task_type in m.tags else 0
    cost = 20 if (complexity == "heavy" and m.high_cost) else (15 if (complexity == "light" and m.low_cost) else 0)
    return _Fixed(100 + route + m.priority + purpose + tag, route, purpose, tag, cost)


def _request(meta: RouterMeta, preferred: Mapping[str, int], table: RoutingTable, view: RuntimeView, explain: bool,
             context_tokens: int) -> _Request:
    vram_total = table.cfg.gpu.vram_total_mb
    free = view.gpu_free_mb if view.gpu_free_mb is not None else vram_total
    return _Request(
        preferred=preferred,
        free_mb=free,
        room_mb=free + table.loaded_mb(view.models) if meta.require_gpu_only and view.gpu_free_mb is not None
        else free,
        gpu_only=meta.require_gpu_only,
        no_gpu=view.gpu_free_mb is None and vram_total <= 0,
        explain=explain or meta.explain,
        context_tokens=context_tokens,
    )


def _evaluate(m: _ModelFacts, f: _Fixed, state: ModelState, r: _Request) -> Candidate:
    """Blocks (ours first: context; spec §5.4: gpu_only, busy; then our cooldown) and the additive score of
    §5.5, in one pass."""
    running = state.running
    blocked = None
    if r.context_tokens > m.max_context:
        blocked = "context"
    elif r.gpu_only and (
        r.no_gpu
        or ("cpu" in state.processor and "100% gpu" not in state.processor)
        or (not state.loaded and m.required_mb > r.room_mb)
    ):
        blocked = "gpu_only"
    elif (m.exclusive and running > 0) or (not m.allow_when_busy and running >= m.max_concurrent):
        blocked = "busy"
    elif state.cooldown:
        blocked = "cooldown"
    p = r.preferred.get(m.name)
    preferred = 80 - 10 * p if p is not None else 0
    loaded = 20 if state.loaded else 0
    headroom = r.free_mb - m.required_mb
    vram = min(25.0, headroom / 512) if headroom > 0 else (-60.0 if headroom < 0 else 0.0)
    queue = -18 * state.waiting
    run = -25 * running
    exclusive = -80 * running if m.exclusive else 0
    total = f.prefix + preferred + loaded + f.cost + vram + queue + run + exclusive
    if not r.explain:
        return Candidate(m.name, total, blocked)
    parts = (
        ("base", 100), ("routePosition", f.route), ("priority", m.priority), ("purpose", f.purpose), ("tag", f.tag),
        ("preferred", preferred), ("loaded", loaded), ("complexity", f.cost), ("vram", vram), ("queue", queue),
        ("running", run), ("exclusive", exclusive),
    )
    return Candidate(m.name, total, blocked, parts)


_SCORE = attrgetter("score")


def score_text(value: float) -> str:
    return to_fixed1(value)


def decide(meta: RouterMeta, task_type: str, complexity: str, table: RoutingTable, view: RuntimeView,
           *, pinned: str | None = None, sticky: str | None = None, context_tokens: int = 0,
           explain: bool = False) -> Decision:
    """Spec §5.6 in order: reject / async / sync, with the original's async-path bugs fixed. ``pinned`` (the
    client named it) and ``sticky`` (the conversation's model) are chosen whenever they can run, the pin first.
    ``context_tokens`` blocks every model whose ``maxContext`` is smaller; when that blocks all the task's
    candidates, the smallest models that hold the request are tried (an agent's summary has a 20k prompt)."""
    first = pinned if pinned is not None else sticky
    names = candidate_names(meta, task_type, table, first)
    if not names:
        return Decision("reject", None, "No configured model can satisfy this request", 0.0, (), (), (), status=503)
    preferred_index = table.preferred_index(meta) if meta.preferred_models else {}
    r = _request(meta, preferred_index, table, view, explain, context_tokens)
    fixed = table.fixed_parts(task_type, complexity)
    available, blocked = _evaluate_all(names, table, fixed, view, r)
    # Stable sort (reverse=True keeps it stable): ties keep candidate order (preferred, route, purpose).
    available.sort(key=_SCORE, reverse=True)
    if first is not None:
        available.sort(key=lambda c: c.name != first)
    holding: tuple[str, ...] = ()
    if not available and pinned is None and any(c.blocked == "context" for c in blocked):
        holding = table.holding(context_tokens, meta, names)
        available, more = _evaluate_all(holding, table, fixed, view, r)  # smallest first, whatever the score
        blocked += more
        names += holding
    ranked = tuple(available)
    blocked_t = tuple(blocked)
    top = ranked[0] if ranked else None
    busy = [c for c in blocked if c.blocked == "busy"]
    kept = sticky if pinned is None else None

    def make(action: str, c: Candidate | None, reason: str, heavy: bool = False) -> Decision:
        return Decision(action, c.name if c else None, reason, c.score if c else 0.0, names, ranked, blocked_t, heavy,
                        sticky=c is not None and c.name == kept)

    if meta.mode == "async":
        target = top or (busy[0] if busy else None)
        if target is not None:
            return make("async", target, "Request explicitly requested async mode")
    else:
        heavy = _heavy_load(table, view)
        preferred_busy = _preferred_busy(busy, names, set(preferred_index) | ({first} if first else set()))
        if meta.can_go_async and (heavy or preferred_busy is not None):
            target = preferred_busy or top
            if target is not None:
                reason = ("Preferred model is busy; accepted for async processing" if preferred_busy is not None
                          else "Heavy load detected")
                return make("async", target, reason, heavy)
        if top is not None:
            return make("sync", top, _selected(top, task_type, kept, context_tokens if holding else 0), heavy)
        if busy and meta.can_go_async:
            return make("async", busy[0], "Selected model is busy; accepted for async processing", heavy)
        if busy and meta.wait_when_busy:
            return make("sync", busy[0], f"Every candidate is busy; waiting in {busy[0].name}'s queue", heavy)
    reason = "; ".join(_block_summary(c, table.facts[c.name], context_tokens) for c in blocked) or "No model available"
    if any(c.blocked == "context" for c in blocked) and not table.holding(context_tokens, meta, ()):
        largest = max((table.facts[n] for n in table.by_size), key=lambda m: m.max_context)
        reason += f"; no configured model holds it (the largest, {largest.name}, holds {largest.max_context:,})"
    return Decision("reject", None, reason, 0.0, names, ranked, blocked_t, status=503)


def _evaluate_all(names: tuple[str, ...], table: RoutingTable, fixed: dict[str, _Fixed], view: RuntimeView,
                  r: _Request) -> tuple[list[Candidate], list[Candidate]]:
    """(available, blocked), each in ``names`` order."""
    available: list[Candidate] = []
    blocked: list[Candidate] = []
    states = view.models
    facts = table.facts
    for name in names:
        c = _evaluate(facts[name], fixed[name], states.get(name, IDLE), r)
        (available if c.blocked is None else blocked).append(c)
    return available, blocked


def _selected(top: Candidate, task_type: str, sticky: str | None, holding: int) -> str:
    """The reason for a sync choice; ``holding``: the tokens no candidate of the task could hold (0: none)."""
    if top.name == sticky:
        return f"Kept {top.name}, the conversation's model, for {task_type} (score {score_text(top.score)})"
    if holding:
        reason = (f"No {task_type} candidate holds ~{holding:,} tokens; selected {top.name}, the smallest model "
                  "that does")
    else:
        reason = f"Selected {top.name} for {task_type} with score {score_text(top.score)}"
    return reason if sticky is None else f"{reason}; the conversation's model {sticky} cannot take it now"


def context_reason(need: int, max_context: int) -> str:
    return f"context: needs ~{need:,} tokens, model holds {max_context:,}"


def _block_summary(c: Candidate, m: _ModelFacts, context_tokens: int) -> str:
    return f"{c.name}: " + (context_reason(context_tokens, m.max_context) if c.blocked == "context" else str(c.blocked))


def _heavy_load(table: RoutingTable, view: RuntimeView) -> bool:
    """Spec §5.6 step 3: requests waiting anywhere at the threshold, or free VRAM under its threshold."""
    gpu_free = view.gpu_free_mb
    gpu_heavy = gpu_free is not None and gpu_free < table.cfg.router.heavy_load_gpu_free_mb_threshold
    return view.total_waiting >= table.cfg.router.heavy_load_queue_depth or gpu_heavy


def _preferred_busy(busy: list[Candidate], names: tuple[str, ...], firsts: set[str]) -> Candidate | None:
    """The busy model the request preferred (or pinned), else the first candidate when it is busy."""
    if firsts:
        return next((c for c in busy if c.name in firsts), None)
    return busy[0] if busy and busy[0].name == names[0] else None
