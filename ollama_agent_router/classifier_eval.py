"""Accuracy and latency report for the task classifier on labelled request files.

    python -m ollama_agent_router.classifier_eval tests/data/classifier_dev.jsonl [MORE.jsonl ...]

Each line holds ``{"label": ..., "body": {"model": "auto", "messages": [...], "tools": [...]}}``. A line of the
agent sets (tests/data/agents/) also says the door it came in by (``"path": "/v1/messages"`` or
``"/v1/responses"``), and its body is read the way that door reads it; the parts the set stores once are in
``harness.json`` beside the file, referenced as ``{"$ref": key}``. The report gives
accuracy, per-label precision, recall and F1, the confusion matrix (rows: true label, columns: predicted), the
median and p99 time of one classification, and the misclassified cases with the signals that decided them.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .api import anthropic, responses
from .classifier import TASK_TYPES, Classification, classify

TYPICAL_TOKENS = 512  # about 2 KB of text: the size the latency target is about
_TIMING_CALLS = 5  # per case, back to back; the fastest counts


@dataclass(frozen=True)
class Case:
    label: str
    body: dict
    path: str = "/v1/chat/completions"  # the door the body came in by
    id: str = ""
    headers: dict | None = None
    turn: str = "ask"  # agent sets: ask (the newest turn is the user's) or loop (it is a tool result)


@dataclass(frozen=True)
class LabelScore:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Mistake:
    case: Case
    predicted: Classification


@dataclass(frozen=True)
class Report:
    labels: tuple[str, ...]
    total: int
    correct: int
    per_label: dict[str, LabelScore]
    confusion: dict[tuple[str, str], int]  # (true, predicted) -> count
    mistakes: tuple[Mistake, ...]
    asks: int  # cases whose newest turn is the user's
    asks_correct: int
    median_us: float
    p99_us: float
    typical_median_us: float
    typical_p99_us: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


def resolve(value: object, parts: dict) -> object:
    """``value`` with every ``{"$ref": key}`` replaced by ``parts[key]``."""
    if isinstance(value, dict):
        if set(value) == {"$ref"}:
            return parts[value["$ref"]]
        return {k: resolve(v, parts) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, parts) for v in value]
    return value


def load_cases(path: str | Path) -> list[Case]:
    shared = Path(path).with_name("harness.json")
    parts = json.loads(shared.read_text(encoding="utf-8")) if shared.exists() else {}
    cases = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                raw = json.loads(line)
                cases.append(Case(label=raw["label"], body=resolve(raw["body"], parts),
                                  path=raw.get("path", Case.path).split("?")[0], id=raw.get("id", ""),
                                  headers=raw.get("headers"), turn=raw.get("turn", "ask")))
    return cases


def request_args(body: dict, path: str = Case.path) -> tuple[object, object, object]:
    """The classify() arguments a body carries, read as its door reads it: messages, tools, router.taskType."""
    router = body.get("router")
    explicit = router.get("taskType") if isinstance(router, dict) else None
    if path == "/v1/messages":
        body = anthropic.classifier_input(body)
    elif path == "/v1/responses":
        body = responses.classifier_input(body)
    return body.get("messages"), body.get("tools"), explicit


def _timed(args: tuple) -> tuple[Classification, float]:
    best = float("inf")
    for _ in range(_TIMING_CALLS):
        start = time.perf_counter_ns()
        result = classify(*args)
        best = min(best, time.perf_counter_ns() - start)
    return result, best / 1000


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else 0.0


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _score(tp: int, predicted: int, actual: int) -> LabelScore:
    precision = tp / predicted if predicted else 0.0
    recall = tp / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return LabelScore(precision, recall, f1, actual)


def evaluate(cases: list[Case]) -> Report:
    confusion: dict[tuple[str, str], int] = {}
    mistakes = []
    timings, typical = [], []
    for case in cases:
        result, micros = _timed(request_args(case.body, case.path))
        timings.append(micros)
        if result.token_estimate <= TYPICAL_TOKENS:
            typical.append(micros)
        key = (case.label, result.task_type)
        confusion[key] = confusion.get(key, 0) + 1
        if result.task_type != case.label:
            mistakes.append(Mistake(case, result))
    seen = {label for pair in confusion for label in pair}
    labels = tuple(t for t in TASK_TYPES if t in seen) + tuple(sorted(seen - set(TASK_TYPES)))
    per_label = {}
    for label in labels:
        tp = confusion.get((label, label), 0)
        predicted = sum(n for (_, guess), n in confusion.items() if guess == label)
        actual = sum(n for (gold, _), n in confusion.items() if gold == label)
        per_label[label] = _score(tp, predicted, actual)
    return Report(
        labels=labels,
        total=len(cases),
        correct=len(cases) - len(mistakes),
        per_label=per_label,
        confusion=confusion,
        mistakes=tuple(mistakes),
        asks=sum(c.turn == "ask" for c in cases),
        asks_correct=sum(c.turn == "ask" for c in cases) - sum(m.case.turn == "ask" for m in mistakes),
        median_us=_median(timings),
        p99_us=_p99(timings),
        typical_median_us=_median(typical),
        typical_p99_us=_p99(typical),
    )


def _last_user_text(case: Case) -> str:
    if case.id:
        return case.id
    messages = case.body.get("messages")
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


def format_report(report: Report, max_mistakes: int = 30) -> str:
    lines = [f"cases {report.total}, accuracy {report.accuracy:.3f} ({report.correct}/{report.total})", ""]
    if report.asks < report.total:  # an agent set: the user's own turns apart from the model's tool loop
        lines[-1:-1] = [f"newest turn the user's: {report.asks_correct}/{report.asks}; "
                        f"mid-loop: {report.correct - report.asks_correct}/{report.total - report.asks}"]
    lines.append(f"{'label':<18} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>8}")
    for label in report.labels:
        s = report.per_label[label]
        lines.append(f"{label:<18} {s.precision:>9.3f} {s.recall:>7.3f} {s.f1:>6.3f} {s.support:>8}")
    lines += ["", "confusion matrix (rows: true, columns: predicted)"]
    short = [label[:6] for label in report.labels]
    lines.append(" " * 18 + "".join(f"{s:>7}" for s in short))
    for gold in report.labels:
        counts = "".join(f"{report.confusion.get((gold, guess), 0):>7}" for guess in report.labels)
        lines.append(f"{gold:<18}{counts}")
    lines += [
        "",
        f"classification time, all cases: median {report.median_us:.1f} us, p99 {report.p99_us:.1f} us",
        (
            f"classification time, <= 2 KB of text: median {report.typical_median_us:.1f} us, "
            f"p99 {report.typical_p99_us:.1f} us"
        ),
    ]
    if report.mistakes:
        lines += ["", f"mistakes ({len(report.mistakes)}, first {min(max_mistakes, len(report.mistakes))})"]
        for m in report.mistakes[:max_mistakes]:
            text = " ".join(_last_user_text(m.case).split())[:90]
            lines.append(f"  {m.case.label} -> {m.predicted.task_type} {list(m.predicted.signals)}: {text}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: python -m ollama_agent_router.classifier_eval FILE.jsonl [FILE.jsonl ...]", file=sys.stderr)
        return 2
    for path in paths:
        print(f"== {path}")
        print(format_report(evaluate(load_cases(path))))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
