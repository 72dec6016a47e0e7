"""Train the task classifier's weights on the labelled development set.

    python tools/train_classifier.py                      # train on the dev set, write the package's model file
    python tools/train_classifier.py --cv 5 --no-write    # k-fold accuracy on the dev set only (for tuning)

The model is a multinomial logistic regression over the sparse binary features of
``ollama_agent_router.classifier.extract_features``, fitted with AdaGrad and L2. Only labels that depend on the
content are learned: ``tool_use`` and ``large_context`` are structural rules in the classifier. The held-out file
(``tests/data/classifier_holdout.jsonl``) is never read here.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ollama_agent_router.classifier import TASK_TYPES, extract_features

# Labels the model learns; large_context and tool_use are decided by size and structure, never by words.
LABELS = tuple(t for t in TASK_TYPES if t not in ("large_context", "tool_use"))
DEV_SET = ROOT / "tests" / "data" / "classifier_dev.jsonl"
MODEL_FILE = ROOT / "ollama_agent_router" / "classifier_model.json"

Example = tuple[tuple[str, ...], int]


def load_examples(path: Path) -> list[Example]:
    examples = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            case = json.loads(line)
            if case["label"] not in LABELS:
                continue  # tool_use and large_context are rules on the request's shape
            features = extract_features(case["body"].get("messages"))
            if features is not None:
                # Sorted so float sums, and so the weights, do not depend on the string hash seed.
                examples.append((tuple(sorted(features)), LABELS.index(case["label"])))
    return examples


def _softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def train(examples: list[Example], epochs: int, rate: float, l2: float, min_df: int) -> tuple[list[float], dict]:
    df = Counter(f for features, _ in examples for f in features)
    vocabulary = {f for f, n in df.items() if n >= min_df or ":" in f}
    k = len(LABELS)
    weights = {f: [0.0] * k for f in sorted(vocabulary)}
    squares = {f: [1e-8] * k for f in weights}
    bias, bias_squares = [0.0] * k, [1e-8] * k
    data = [(tuple(f for f in features if f in weights), y) for features, y in examples]
    order = list(range(len(data)))
    rng = random.Random(0)
    for _ in range(epochs):
        rng.shuffle(order)
        for i in order:
            features, y = data[i]
            rows = [weights[f] for f in features]
            probs = _softmax([bias[c] + sum(row[c] for row in rows) for c in range(k)])
            for c in range(k):
                g = probs[c] - (c == y)
                bias_squares[c] += g * g
                bias[c] -= rate * g / math.sqrt(bias_squares[c])
                for f, row in zip(features, rows):
                    grad = g + l2 * row[c]
                    sq = squares[f]
                    sq[c] += grad * grad
                    row[c] -= rate * grad / math.sqrt(sq[c])
    return bias, weights


def predict(bias: list[float], weights: dict, features: tuple[str, ...]) -> int:
    scores = list(bias)
    for f in features:
        row = weights.get(f)
        if row:
            scores = [s + w for s, w in zip(scores, row)]
    return max(range(len(scores)), key=scores.__getitem__)


def prune(weights: dict, threshold: float) -> dict[str, list[float]]:
    return {f: [round(w, 3) for w in row] for f, row in weights.items() if max(abs(w) for w in row) >= threshold}


def cross_validate(examples: list[Example], folds: int, **params) -> float:
    rng = random.Random(1)
    order = list(range(len(examples)))
    rng.shuffle(order)
    correct = 0
    mistakes = Counter()
    for fold in range(folds):
        test = set(order[fold::folds])
        bias, weights = train([e for i, e in enumerate(examples) if i not in test], **params)
        for i in test:
            features, y = examples[i]
            guess = predict(bias, weights, features)
            correct += guess == y
            if guess != y:
                mistakes[(LABELS[y], LABELS[guess])] += 1
    for (gold, guess), n in mistakes.most_common(12):
        print(f"  cv mistake {gold:>18} -> {guess:<18} x{n}")
    return correct / len(examples)


def write_model(path: Path, bias: list[float], weights: dict[str, list[float]], trained_on: int) -> None:
    # One feature per line keeps diffs of the model file readable.
    lines = [
        "{",
        f'"format": 1, "trained_on": {trained_on},',
        f'"labels": {json.dumps(list(LABELS))},',
        f'"bias": {json.dumps([round(b, 3) for b in bias])},',
        '"weights": {',
    ]
    entries = [f"{json.dumps(f, ensure_ascii=False)}: {json.dumps(row)}" for f, row in sorted(weights.items())]
    lines.append(",\n".join(entries))
    lines.append("}}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", nargs="?", type=Path, default=DEV_SET)
    parser.add_argument("--out", type=Path, default=MODEL_FILE)
    parser.add_argument("--cv", type=int, default=0, help="also report k-fold accuracy on the dataset")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--rate", type=float, default=0.03)
    parser.add_argument("--l2", type=float, default=0.0)
    parser.add_argument("--min-df", type=int, default=2)
    parser.add_argument("--prune", type=float, default=0.05)
    args = parser.parse_args(argv)

    examples = load_examples(args.dataset)
    params = {"epochs": args.epochs, "rate": args.rate, "l2": args.l2, "min_df": args.min_df}
    print(f"{len(examples)} examples, labels {dict(Counter(LABELS[y] for _, y in examples))}")
    if args.cv:
        print(f"{args.cv}-fold accuracy: {cross_validate(examples, args.cv, **params):.3f}")
    if not args.no_write:
        bias, weights = train(examples, **params)
        kept = prune(weights, args.prune)
        write_model(args.out, bias, kept, len(examples))
        print(f"wrote {args.out} ({len(kept)} features)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
