"""Start-up cost of a client command such as ``oar status``.

    python bench/startup_bench.py [--runs 20] [--budget-ms 150]

Each run starts a fresh interpreter. It reports, as median and minimum:
- ``import``: importing what a client command imports (``ollama_agent_router.cli`` and ``.client``);
- ``python -c pass``: the interpreter alone, for scale;
- ``--version`` and ``status`` (against a closed port, so no router time is counted): whole commands.

It fails (exit 1) when the median import time is over the budget, or when the client path imports a heavy
module (asyncio, the server, ssl contexts of our own, sqlite3, YAML, pynvml).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("asyncio", "sqlite3", "yaml", "pynvml", "ollama_agent_router.config.parse",
         "ollama_agent_router.config.reader", "ollama_agent_router.http.server", "ollama_agent_router.app",
         "ollama_agent_router.gpu")
_PROBE = (
    "import sys, time, json\n"
    "t = time.perf_counter()\n"
    "import ollama_agent_router.cli, ollama_agent_router.commands.client\n"
    "ms = (time.perf_counter() - t) * 1000\n"
    f"print(json.dumps({{'ms': ms, 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))\n"
)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _wall(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return (time.perf_counter() - start) * 1000


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--budget-ms", type=float, default=150.0)
    args = parser.parse_args()
    py = sys.executable
    # One warm-up run writes the bytecode caches, so every measured run reads them like an installed copy.
    subprocess.run([py, "-c", _PROBE], env=_env(), capture_output=True, check=True)
    imports, heavy = [], set()
    for _ in range(args.runs):
        out = json.loads(subprocess.run([py, "-c", _PROBE], env=_env(), capture_output=True, check=True,
                                        text=True).stdout)
        imports.append(out["ms"])
        heavy.update(out["heavy"])
    url = f"http://127.0.0.1:{_closed_port()}"
    rows = {
        "import (cli + client)": imports,
        "python -c pass": [_wall([py, "-c", "pass"]) for _ in range(args.runs)],
        "oar --version": [_wall([py, "-m", "ollama_agent_router", "--version"]) for _ in range(args.runs)],
        "oar status (refused)": [_wall([py, "-m", "ollama_agent_router", "-u", url, "status"])
                                 for _ in range(args.runs)],
    }
    print(f"python {sys.version.split()[0]}, {args.runs} runs, {os.cpu_count()} CPUs")
    for name, values in rows.items():
        print(f"  {name:<24} median {statistics.median(values):6.1f} ms   min {min(values):6.1f} ms")
    print(f"  heavy modules on the client path: {', '.join(sorted(heavy)) or 'none'}")
    median = statistics.median(imports)
    if median > args.budget_ms or heavy:
        print(f"FAIL: budget {args.budget_ms:.0f} ms for the import, and no heavy module")
        return 1
    print(f"OK: median import {median:.1f} ms <= {args.budget_ms:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
