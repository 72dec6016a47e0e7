"""``oar top``: the live feed as a full-screen terminal view, like ``htop``: GPU memory, the model table,
the last decisions and the jobs, redrawn as events arrive; ``q`` quits.

``--once`` prints one frame and exits (for scripts and tests). When stdout is not a terminal the frames
are printed as plain text, one every few seconds. The view is drawn from the same events as the dashboard
page (``api/events.py`` describes them); this module only keeps them and lays them out.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections import deque

from .client import ClientError, Target, table
from .feed import Feed

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

KEEP_DECISIONS = 200
PLAIN_EVERY_S = 2.0
SOURCES = {"nvml": "NVML", "nvidia-smi": "nvidia-smi", "static": "static (from the config)", "simulated": "simulator"}
# Bar characters: loaded models, other use, driver reserved, safety reserve, free.
BAR = (("models", "#", "loaded models"), ("used", "=", "other use"), ("driver", "~", "driver reserved"),
       ("reserve", "!", "safety reserve"), ("free", ".", "free"))


class View:
    """What the feed has said so far."""

    def __init__(self) -> None:
        self.hello: dict | None = None
        self.runtime: dict = {}
        self.state: dict = {}
        self.decisions: deque[dict] = deque(maxlen=KEEP_DECISIONS)  # newest first
        self.jobs: dict[str, dict] = {}
        self.dropped = 0

    def apply(self, kind: str, data: Any) -> None:
        if kind == "hello":
            self.hello = data
            self.runtime = data.get("runtime") or {}
            self.state = data.get("state") or {}
            self.decisions = deque(reversed(data.get("decisions") or []), maxlen=KEEP_DECISIONS)
            self.jobs = {j["id"]: j for j in data.get("jobs") or []}
        elif kind == "decision":
            self.decisions.appendleft(data)
        elif kind == "job":
            self.jobs[data["id"]] = data
        elif kind == "runtime":
            self.runtime = data
        elif kind == "state":
            self.state = data
        elif kind == "dropped":
            self.dropped = data.get("dropped", 0)


# ---- laying out one frame ---------------------------------------------------------------------------------
def mb(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    return f"{value / 1024:.1f} GB" if value >= 1024 else f"{round(value)} MB"


def ms(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    if value < 1000:
        return f"{value:.1f} ms" if value < 10 else f"{round(value)} ms"
    return f"{value / 1000:.2f} s" if value < 10000 else f"{value / 1000:.1f} s"


def clock(epoch_ms: Any) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch_ms / 1000)) if isinstance(epoch_ms, (int, float)) else "-"


def ago(epoch_ms: Any, now_ms: float) -> str:
    if not isinstance(epoch_ms, (int, float)):
        return "-"
    s = max(0, round((now_ms - epoch_ms) / 1000))
    return f"{s} s ago" if s < 60 else f"{s // 60} min ago" if s < 3600 else f"{s // 3600} h ago"


def gpu_segments(device: dict, models_mb: float, reserve_mb: float) -> list[tuple[str, float]]:
    """The parts of one GPU's memory, as the page draws them: loaded models, other use, driver, reserve, free."""
    total = device.get("totalMb") or 0
    used = device.get("usedMb") or 0
    free = device.get("freeMb") if device.get("freeMb") is not None else max(0, total - used)
    models = min(models_mb, used)
    reserve = min(reserve_mb, free)
    return [("models", models), ("used", used - models), ("driver", max(0, total - used - free)),
            ("reserve", reserve), ("free", free - reserve)]


def gpu_lines(view: View, width: int) -> list[str]:
    gpu = view.runtime.get("gpu")
    if not gpu:
        provider = (view.hello or {}).get("gpuProvider", "none")
        return ["GPU: " + ("none configured (gpu.provider: none)" if provider == "none" else "no reading yet")]
    devices = gpu.get("devices") or [{"index": 0, "name": gpu.get("name"), "totalMb": gpu.get("vramTotalMb"),
                                      "usedMb": gpu.get("vramUsedMb"), "freeMb": gpu.get("vramFreeMb")}]
    models_mb = sum(m.get("sizeVramBytes") or 0 for m in view.runtime.get("loadedModels") or []) / (1024 * 1024)
    reserve = (view.hello or {}).get("reserveMb") or 0
    lines = [f"GPU (source: {SOURCES.get(gpu.get('source'), gpu.get('source'))})"]
    for d in devices:
        parts = gpu_segments(d, models_mb if len(devices) == 1 else 0, reserve)
        total = d.get("totalMb") or 1
        cells = max(10, min(60, width - 40))
        bar = "".join(char * round(cells * value / total) for (_, char, _), (_, value) in zip(BAR, parts))
        util = f", {round(d['utilizationPct'])}% busy" if isinstance(d.get("utilizationPct"), (int, float)) else ""
        lines.append(f"  {d.get('index', 0)} {d.get('name') or ''} [{bar[:cells].ljust(cells, '.')}] {mb(total)}{util}")
        legend = [f"{char} {label} {mb(value)}" for (_, char, label), (_, value) in zip(BAR, parts) if value > 0.5]
        lines.append("    " + "  ".join(legend))
    return lines


def rates_line(view: View) -> str:
    r = view.state.get("rates")
    if not r:
        return "Requests: -"
    q = view.state.get("queue") or {}
    return (f"Requests (last {round(r['windowSeconds'])} s): {r['perSecond']} req/s  p50 {ms(r['p50Ms'])}  "
            f"p95 {ms(r['p95Ms'])}  429: {r['status429']}  503: {r['status503']}  "
            f"queued {q.get('queued', 0)} / running {q.get('running', 0)}")


def models_table(view: View, now_ms: float) -> str:
    rows = []
    for m in view.state.get("models") or []:
        q = m["queued"]
        rows.append([m["name"], (m["processor"] or "yes") if m["loaded"] else "no",
                     mb(m["vramMb"]) if m["vramMb"] is not None else "~" + mb(m["sizeMb"]),
                     f"{m['running']}/{m['maxConcurrent']}", f"{q['high']}/{q['normal']}/{q['low']}",
                     ms(m["cooldownMs"]) if m["cooldownMs"] is not None else "-",
                     "in use" if m["running"] else ago(m["lastUsed"], now_ms)])
    return table(["MODEL", "LOADED", "VRAM", "RUN", "QUEUED H/N/L", "COOLDOWN", "LAST USED"], rows)


def decisions_table(view: View, limit: int) -> str:
    rows = [[clock(d["at"]), d.get("api") or "-", d.get("task") or "-", d.get("model") or "-", d["mode"],
             ms(d["queueMs"]), ms(d["durationMs"]), d["status"], d.get("reason") or ""]
            for d in list(view.decisions)[:limit]]
    return table(["TIME", "DOOR", "TASK", "MODEL", "MODE", "WAIT", "DURATION", "STATUS", "REASON"], rows)


def jobs_table(view: View, limit: int, now_ms: float) -> str:
    progress = {p["id"]: p for p in (view.state.get("jobs") or {}).get("progress") or []}
    order = {"running": 0, "queued": 1}
    jobs = sorted(view.jobs.values(), key=lambda j: (order.get(j["status"], 2), -(j.get("createdAt") or 0)))
    rows = []
    for job in jobs[:limit]:
        p = progress.get(job["id"])
        if job["status"] == "running" and p:
            shown = "tokens unknown yet" if p["tokens"] is None else f"~{p['tokens']} tokens"
            detail = f"{shown}, {ms(p['elapsedMs'])}"
        elif job["status"] == "queued":
            detail = "waiting " + ms(now_ms - job["createdAt"])
        elif job.get("finishedAt") and job.get("startedAt"):
            detail = "ran " + ms(job["finishedAt"] - job["startedAt"])
        else:
            detail = "-"
        rows.append([job["id"], job["status"], job["model"], job["task"], detail])
    return table(["JOB", "STATUS", "MODEL", "TASK", "PROGRESS"], rows)


def frame(view: View, width: int = 120, height: int | None = None) -> list[str]:
    """One screen of text. With a ``height`` the decisions get the rows the other sections leave."""
    hello = view.hello or {}
    now_ms = view.state.get("at") or time.time() * 1000
    summary = view.state.get("jobs") or {}
    title = f"oar top - node {hello.get('node', '?')} - {clock(now_ms)}"
    if view.dropped:
        title += f" - {view.dropped} events dropped (slow reader)"
    head = [title, *gpu_lines(view, width), rates_line(view), "", "MODELS", *models_table(view, now_ms).splitlines()]
    counts = (f"JOBS ({summary.get('queued', 0)} queued, {summary.get('running', 0)} running, "
              f"{summary.get('succeededRetained', 0)} succeeded, {summary.get('failedRetained', 0)} failed)")
    jobs = ["", counts, *jobs_table(view, 8, now_ms).splitlines()]
    room = 10 if height is None else max(1, height - len(head) - len(jobs) - 3)
    decisions = ["", f"DECISIONS (newest first, {len(view.decisions)} kept)",
                 *decisions_table(view, room).splitlines()]
    return [line[:width] for line in head + decisions + jobs]


# ---- running ---------------------------------------------------------------------------------------------
def run(target: Target, *, once: bool = False) -> int:
    feed = Feed(target)
    try:
        view = View()
        deadline = time.monotonic() + target.timeout
        while view.hello is None:
            if time.monotonic() > deadline:
                raise ClientError("the feed sent no snapshot in time")
            for kind, data in feed.events(deadline - time.monotonic()):
                view.apply(kind, data)
        if once:
            print("\n".join(frame(view, _width())))
        elif sys.stdout.isatty():
            _full_screen(feed, view)
        else:
            _plain(feed, view)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        feed.close()


def _width() -> int:
    return shutil.get_terminal_size((120, 40)).columns


def _plain(feed: Feed, view: View) -> None:
    """Not a terminal: a plain-text frame every few seconds, until the feed ends."""
    while True:
        print("\n".join(frame(view, _width())) + "\n", flush=True)
        until = time.monotonic() + PLAIN_EVERY_S
        while time.monotonic() < until:
            for kind, data in feed.events(until - time.monotonic()):
                view.apply(kind, data)


def _full_screen(feed: Feed, view: View) -> None:
    import curses

    def loop(screen: Any) -> None:
        try:
            curses.curs_set(0)
        except curses.error:  # a terminal that cannot hide its cursor
            pass
        screen.nodelay(True)
        drawn_at = 0.0
        changed = True
        while True:
            for kind, data in feed.events(0.2):
                view.apply(kind, data)
                changed = True
            key = screen.getch()
            if key in (ord("q"), ord("Q")):
                return
            if changed or key == curses.KEY_RESIZE or time.monotonic() - drawn_at > 1:
                _draw(screen, view)
                drawn_at, changed = time.monotonic(), False

    curses.wrapper(loop)


def _draw(screen: Any, view: View) -> None:
    import curses

    height, width = screen.getmaxyx()
    screen.erase()
    for row, line in enumerate(frame(view, width - 1, height - 1)[: height - 1]):
        bold = row == 0 or line.isupper() or line.startswith(("MODELS", "DECISIONS", "JOBS", "GPU"))
        screen.addnstr(row, 0, line, width - 1, curses.A_BOLD if bold else curses.A_NORMAL)
    screen.addnstr(height - 1, 0, "q: quit", width - 1, curses.A_DIM)
    screen.refresh()
