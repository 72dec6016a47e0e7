"""Prometheus text exposition (format 0.0.4): counters and histograms kept in memory, gauges read from snapshots.

Label values come only from configuration (model names, task types, planes) or small fixed sets;
anything a client sends is folded into ``other`` first, so the series count stays bounded. Label text
is rendered once per series, and a histogram series keeps its lines until it next changes, so a scrape
costs about one string join per series that moved.
"""

from __future__ import annotations

import bisect
import time
from itertools import accumulate
from typing import Any, Callable, Iterable

# Per-model histograms multiply by the model count, so each keeps about a dozen buckets over its own range.
REQUEST_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
QUEUE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
DECISION_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01)
TPS_BUCKETS = (1, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The last minute's latency buckets: 1 ms to about 9 minutes, each 25 % wider than the one before.
RECENT_BOUNDS = tuple(0.001 * 1.25 ** i for i in range(60))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(v: float) -> str:
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "+Inf" if v > 0 else "-Inf"
    return str(int(v)) if float(v).is_integer() else repr(float(v))


class Counter:
    def __init__(self, name: str, help: str, labels: tuple[str, ...] = ()) -> None:
        self.name, self.help, self.labels = name, help, labels
        self.values: dict[tuple[str, ...], float] = {}
        self._prefix: dict[tuple[str, ...], str] = {}

    def inc(self, *values: str, amount: float = 1.0) -> None:
        if values not in self.values:
            self._prefix[values] = f"{self.name}{_labels(self.labels, values)} "
            self.values[values] = 0.0
        self.values[values] += amount

    def get(self, *values: str) -> float:
        return self.values.get(values, 0.0)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        prefix = self._prefix
        for values, v in self.values.items():
            yield prefix[values] + _num(v)


def _le(bound: str) -> str:
    return 'le="' + bound + '"'


class _Series:
    """One label set of a histogram: its lines are a format template, and their text is kept until it changes."""

    __slots__ = ("counts", "sum", "count", "template", "text")

    def __init__(self, name: str, names: tuple[str, ...], values: tuple[str, ...], buckets: tuple[float, ...]) -> None:
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0
        plain = _labels(names, values)
        lines = [f"{name}_bucket{_labels(names, values, _le(_num(b)))} " for b in buckets]
        lines += [f"{name}_bucket{_labels(names, values, _le('+Inf'))} ", f"{name}_sum{plain} ",
                  f"{name}_count{plain} "]
        self.template = "\n".join(line.replace("%", "%%") + "%s" for line in lines)  # %-format: the fastest
        self.text: str | None = None

    def render(self) -> str:
        if self.text is None:
            self.text = self.template % (*accumulate(self.counts), self.count, _num(self.sum), self.count)
        return self.text


class Histogram:
    def __init__(self, name: str, help: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> None:
        self.name, self.help, self.labels, self.buckets = name, help, labels, buckets
        self.series: dict[tuple[str, ...], _Series] = {}

    def observe(self, value: float, *values: str) -> None:
        s = self.series.get(values)
        if s is None:
            s = self.series[values] = _Series(self.name, self.labels, values, self.buckets)
        i = bisect.bisect_left(self.buckets, value)
        if i < len(self.buckets):
            s.counts[i] += 1
        s.sum += value
        s.count += 1
        s.text = None

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        for s in self.series.values():
            yield s.render()


def gauge(name: str, help: str, samples: Iterable[tuple[dict[str, str], float]]) -> Iterable[str]:
    yield f"# HELP {name} {help}"
    yield f"# TYPE {name} gauge"
    for labels, v in samples:
        names = tuple(labels)
        yield f"{name}{_labels(names, tuple(labels[n] for n in names))} {_num(v)}"


def generation_rate(usage: Any, seconds: float, first_byte: float | None, chunks: int = 0) -> float | None:
    """Tokens per second of one reply, from the best evidence at hand.

    Ollama-native usage carries ``eval_count``/``eval_duration`` (exact). OpenAI usage carries
    ``completion_tokens`` (Anthropic and Responses: ``output_tokens``), timed from the first byte when streamed. Without usage, a stream's chunk
    count stands in for its token count (Ollama flushes one token per chunk).
    """
    if isinstance(usage, dict):
        count, duration = usage.get("eval_count"), usage.get("eval_duration")
        if isinstance(count, int) and isinstance(duration, (int, float)) and count > 0 and duration > 0:
            return count / (duration / 1e9)
        tokens = usage.get("completion_tokens", usage.get("output_tokens"))
    else:
        tokens = None
    if not isinstance(tokens, int) or isinstance(tokens, bool):
        tokens = chunks
    elapsed = seconds - first_byte if first_byte is not None and seconds > first_byte else seconds
    if tokens <= 0 or elapsed <= 0:
        return None
    return tokens / elapsed


class _Second:
    __slots__ = ("stamp", "requests", "status_429", "status_503", "latency")

    def __init__(self, stamp: int) -> None:
        self.stamp = stamp
        self.requests = self.status_429 = self.status_503 = 0
        self.latency = [0] * (len(RECENT_BOUNDS) + 1)


class RecentRequests:
    """The last minute of answered requests, in one-second slots of counts and latency buckets.

    Fixed memory (60 slots) and a few increments per request, so it runs whether or not anyone watches;
    percentiles are bucketed, so they are exact to within one bucket (25 %).
    """

    def __init__(self, seconds: int = 60, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self.started = clock()
        self.slots = [_Second(-1) for _ in range(seconds)]

    def add(self, status: int, latency: float | None) -> None:
        """One answered request; ``latency`` when it ran a model to the end."""
        now = int(self.clock())
        slot = self.slots[now % self.seconds]
        if slot.stamp != now:
            slot = self.slots[now % self.seconds] = _Second(now)
        slot.requests += 1
        if status == 429:
            slot.status_429 += 1
        elif status == 503:
            slot.status_503 += 1
        if latency is not None:
            slot.latency[bisect.bisect_left(RECENT_BOUNDS, latency)] += 1

    def summary(self) -> dict[str, Any]:
        now = self.clock()
        window = max(1.0, min(float(self.seconds), now - self.started))
        live = [s for s in self.slots if now - s.stamp < self.seconds]
        latency = [sum(column) for column in zip(*(s.latency for s in live))] if live else []
        requests = sum(s.requests for s in live)
        return {
            "windowSeconds": round(window, 1),
            "requests": requests,
            "perSecond": round(requests / window, 2),
            "p50Ms": _quantile_ms(latency, 0.5),
            "p95Ms": _quantile_ms(latency, 0.95),
            "status429": sum(s.status_429 for s in live),
            "status503": sum(s.status_503 for s in live),
        }


def _quantile_ms(counts: list[int], q: float) -> float | None:
    """The upper bound of the bucket holding the ``q`` quantile, in ms (None without samples)."""
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    for i, running in enumerate(accumulate(counts)):
        if running >= rank:
            bound = RECENT_BOUNDS[i] if i < len(RECENT_BOUNDS) else RECENT_BOUNDS[-1]
            return round(bound * 1000, 1)
    return None


class Metrics:
    def __init__(self, model_names: Iterable[str], task_types: Iterable[str]) -> None:
        self.models = frozenset(model_names)
        self.task_types = frozenset(task_types)
        self.requests = Counter(
            "oar_requests_total", "Requests answered, by plane, task type, model, mode, HTTP status and API.",
            ("plane", "task_type", "model", "mode", "status", "api"),
        )
        self.upstream_errors = Counter("oar_upstream_errors_total", "Failed upstream exchanges, by model and kind.",
                                       ("model", "kind"))
        self.failovers = Counter("oar_failovers_total", "Sync requests that moved to another model after a failure.",
                                 ("from_model", "to_model"))
        self.cooldowns = Counter("oar_model_cooldowns_total", "Times a model entered cooldown after repeated failures.",
                                 ("model",))
        self.request_seconds = Histogram("oar_request_duration_seconds", "Total request time, routed requests.",
                                         ("model",), REQUEST_BUCKETS)
        self.queue_seconds = Histogram("oar_queue_wait_seconds", "Time spent waiting for a model slot.", ("model",),
                                       QUEUE_BUCKETS)
        self.ttft_seconds = Histogram("oar_time_to_first_token_seconds", "Time to the first streamed byte.",
                                      ("model",), TTFT_BUCKETS)
        self.decision_seconds = Histogram("oar_routing_decision_seconds", "Classification plus scoring time.", (),
                                          DECISION_BUCKETS)
        self.tokens_per_second = Histogram("oar_tokens_per_second",
                                           "Generation speed, from upstream usage or streamed chunk counts.",
                                           ("model",), TPS_BUCKETS)
        self.auth_denials = Counter("oar_auth_denials_total",
                                    "Requests refused by access control, by plane and reason.", ("plane", "reason"))
        self.rate_limited = Counter("oar_rate_limited_total", "Requests refused by a rate limit, by plane.", ("plane",))
        self.jobs_finished = Counter("oar_jobs_finished_total", "Jobs that left queued/running, by final status.",
                                     ("status",))
        self.loads_avoided = Counter("oar_model_loads_avoided_total",
                                     "Loads held back so a loaded model could serve its waiting requests first.",
                                     ("model",))
        self.keep_alive_refreshes = Counter("oar_keep_alive_refreshes_total",
                                            "Load-only requests sent to keep a model loaded, by model.", ("model",))
        self.recent = RecentRequests()
        self.families: list = [
            self.requests, self.upstream_errors, self.failovers, self.cooldowns, self.request_seconds,
            self.queue_seconds, self.ttft_seconds, self.decision_seconds, self.tokens_per_second,
            self.auth_denials, self.rate_limited, self.jobs_finished, self.loads_avoided, self.keep_alive_refreshes,
        ]

    def model_label(self, name: str | None) -> str:
        return name if name in self.models else ("none" if name is None else "other")

    def task_label(self, task: str | None) -> str:
        return task if task in self.task_types else ("none" if task is None else "other")

    def observe_request(self, plane: str, task: str | None, model: str | None, mode: str, status: int,
                        seconds: float, *, api: str, first_byte: float | None = None, usage: Any = None,
                        chunks: int = 0) -> None:
        """One answered request: the request counter, and for requests that ran a model, its timings.
        ``api`` is the door it came in by (a fixed set, named in code)."""
        label = self.model_label(model)
        self.requests.inc(plane, self.task_label(task), label, mode, str(status), api)
        if model is None or mode not in ("sync", "stream") or status >= 400:
            self.recent.add(status, None)
            return
        self.recent.add(status, seconds)
        self.request_seconds.observe(seconds, label)
        if first_byte is not None:
            self.ttft_seconds.observe(first_byte, label)
        rate = generation_rate(usage, seconds, first_byte, chunks)
        if rate is not None:
            self.tokens_per_second.observe(rate, label)

    def refused_by_rate_limit(self, plane: str) -> None:
        """A request access control turned away with 429 (counted in the last minute's 429s too)."""
        self.rate_limited.inc(plane)
        self.recent.add(429, None)

    def mean_tokens_per_second(self, model: str) -> float | None:
        """The model's average generation speed so far (None before its first measured reply)."""
        series = self.tokens_per_second.series.get((self.model_label(model),))
        return series.sum / series.count if series is not None and series.count else None

    def render(self, gauges: Iterable[Iterable[str]] = ()) -> str:
        lines: list[str] = []
        for g in gauges:
            lines.extend(g)
        for family in self.families:
            lines.extend(family.render())
        return "\n".join(lines) + "\n"
