"""Model residency over time, one panel per policy, as an SVG written by hand (no plotting library).

Each model is a row: grey where it is not loaded, orange while it loads, pale blue while it is resident and
idle, dark blue while it generates.
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

WIDTH, LEFT, ROW, GAP, TOP = 1100, 190, 16, 4, 30
COLOURS = {"loading": "#f0a030", "loaded": "#b8d4ee", "busy": "#1f5f9f"}


def intervals(timeline: list, end: float) -> dict[str, list[tuple[float, float, str]]]:
    """Per model, (start, stop, state) spans from the simulator's (time, model, state) events."""
    spans: dict[str, list[tuple[float, float, str]]] = {}
    current: dict[str, tuple[float, str]] = {}
    for t, model, state in timeline:
        if model in current:
            since, was = current.pop(model)
            spans.setdefault(model, []).append((since, t, was))
        if state != "gone":
            current[model] = (t, state)
    for model, (since, was) in current.items():
        spans.setdefault(model, []).append((since, end, was))
    return spans


def panel(title: str, run: dict, models: list[str], y: float, end: float) -> tuple[list[str], float]:
    scale = (WIDTH - LEFT - 20) / end
    out = [f'<text x="10" y="{y + 12:.0f}" font-weight="bold">{escape(title)}: {run["gpu"]["loads"]} loads, '
           f'{run["gpu"]["load_seconds"]:.0f} s loading</text>']
    y += 20
    spans = intervals(run["timeline"], end)
    for i, model in enumerate(models):
        top = y + i * (ROW + GAP)
        out.append(f'<text x="10" y="{top + ROW - 4:.0f}">{escape(model)}</text>')
        out.append(f'<rect x="{LEFT}" y="{top:.0f}" width="{WIDTH - LEFT - 20}" height="{ROW}" fill="#f6f6f6"/>')
        for start, stop, state in spans.get(model, []):
            x, w = LEFT + start * scale, max(0.5, (stop - start) * scale)
            out.append(f'<rect x="{x:.1f}" y="{top:.0f}" width="{w:.1f}" height="{ROW}" fill="{COLOURS[state]}"/>')
    return out, y + len(models) * (ROW + GAP) + 16


def axis(y: float, end: float) -> list[str]:
    scale = (WIDTH - LEFT - 20) / end
    out = [f'<line x1="{LEFT}" y1="{y:.0f}" x2="{WIDTH - 20}" y2="{y:.0f}" stroke="#444"/>']
    step = 300 if end > 1200 else 60
    for t in range(0, int(end) + 1, step):
        x = LEFT + t * scale
        out.append(f'<line x1="{x:.1f}" y1="{y:.0f}" x2="{x:.1f}" y2="{y + 5:.0f}" stroke="#444"/>')
        out.append(f'<text x="{x:.1f}" y="{y + 18:.0f}" text-anchor="middle">{t // 60} min</text>')
    legend = [("loading", "loading"), ("loaded", "resident, idle"), ("busy", "generating")]
    for i, (state, label) in enumerate(legend):
        x = LEFT + i * 160
        out.append(f'<rect x="{x}" y="{y + 28:.0f}" width="14" height="10" fill="{COLOURS[state]}"/>')
        out.append(f'<text x="{x + 20}" y="{y + 37:.0f}">{label}</text>')
    return out


def write_svg(path: Path, runs: list[tuple[str, dict]], models: list[str]) -> None:
    """One panel per (policy, run with a timeline), one row per model, on one time axis."""
    end = max(r["makespan"] for _, r in runs)
    body: list[str] = [f'<text x="10" y="18" font-size="14" font-weight="bold">Model residency over time '
                       f'(seed {runs[0][1]["seed"]}, simulated time)</text>']
    y = float(TOP)
    for title, run in runs:
        parts, y = panel(title, run, models, y, end)
        body += parts
    body += axis(y, end)
    height = y + 50
    path.write_text(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0f}" '
        f'font-family="sans-serif" font-size="12">\n<rect width="100%" height="100%" fill="white"/>\n'
        + "\n".join(body) + "\n</svg>\n")
