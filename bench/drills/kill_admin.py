"""kill -9 during admin writes: the managed access file is always exactly the old or the new version.

    python bench/drills/kill_admin.py [--kills 200] [--seed N]

Each cycle runs the real router process (``serve``), sends a few acknowledged admin writes (add a key,
revoke it, in turn), then one more write and a SIGKILL at a random moment while that write is in flight:
uniformly within 1.5 times the measured write latency, so kills land before, inside and after the
write (temp file, fsync, rename, directory fsync). Then, for that cycle:

- the file parses and is exactly the version before the in-flight write or the one after it (the
  version number and the key list both match that version; an acknowledged write is never lost);
- the router restarts on it, and after the restart no temp file is left.

Figure: corrupt (or neither old nor new) out of all kills, and how many kills caught a temp file on disk.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import drillkit  # noqa: F401  (paths)
from test_admin_process import boot, keys_after, managed, op_request, read_statuses

from ollama_agent_router.config import parse as cfgmod


def file_state(tmp: Path) -> tuple[int, list[str]] | str:
    """(writes applied, key ids) from the managed file, or what is wrong with it."""
    try:
        policy = cfgmod.parse_managed_access(managed(tmp))
    except Exception as e:  # noqa: BLE001 - any failure to read it back is corruption
        return f"{type(e).__name__}: {e}"
    return policy.version - 1, [k.id for k in policy.api_keys]


def temp_files(tmp: Path) -> list[str]:
    return [name for name in os.listdir(tmp) if name.endswith(".tmp")]


def write_latency(port: int, first: int, n: int = 10) -> tuple[float, int]:
    """Median seconds per acknowledged write, over ``n`` writes starting at write number ``first``."""
    times = []
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        for i in range(first, first + n):
            started = time.perf_counter()
            sock.sendall(op_request(i))
            assert read_statuses(sock, 1)[0] in (200, 201)
            times.append(time.perf_counter() - started)
    return statistics.median(times), first + n


def run(kills: int, seed: int, tmp: Path) -> dict:
    rng = random.Random(seed)
    router = boot(tmp)
    latency, done = write_latency(router.port, 0)
    corrupt: list[str] = []
    outcomes = {"old": 0, "new": 0}
    temp_at_kill = 0
    temp_after_restart = 0
    started = time.monotonic()
    for cycle in range(kills):
        with socket.create_connection(("127.0.0.1", router.port), timeout=20) as sock:
            for _ in range(rng.randint(0, 3)):
                sock.sendall(op_request(done))
                assert read_statuses(sock, 1)[0] in (200, 201)
                done += 1
            sock.sendall(op_request(done))
            time.sleep(rng.uniform(0, 1.5 * latency))
            router.kill(signal.SIGKILL)
        temp_at_kill += bool(temp_files(tmp))
        state = file_state(tmp)
        if isinstance(state, str):
            corrupt.append(f"cycle {cycle}: {state}")
            break
        applied, ids = state
        if applied not in (done, done + 1) or ids != keys_after(applied):
            corrupt.append(f"cycle {cycle}: version {applied + 1} with keys {ids}; expected {done + 1} or {done + 2}")
            break
        outcomes["new" if applied == done + 1 else "old"] += 1
        done = applied
        router = router.start()
        if temp_files(tmp):
            temp_after_restart += 1
            corrupt.append(f"cycle {cycle}: temp files left after the restart: {temp_files(tmp)}")
        if file_state(tmp) != state:
            corrupt.append(f"cycle {cycle}: the restart changed the file")
    router.kill(signal.SIGTERM)
    return {"kills": kills, "corrupt": corrupt, "outcomes": outcomes, "temp_at_kill": temp_at_kill,
            "temp_after_restart": temp_after_restart, "writes": done, "latency_ms": round(latency * 1000, 2),
            "seconds": round(time.monotonic() - started, 1), "seed": seed}


def report(r: dict) -> str:
    return "\n".join([
        f"kills: {r['kills']}; corrupt or neither old nor new: {len(r['corrupt'])}; file was the old version "
        f"{r['outcomes']['old']} times, the new one {r['outcomes']['new']} times",
        f"kills that found a writer's temp file on disk: {r['temp_at_kill']}; temp files left after a restart: "
        f"{r['temp_after_restart']}",
        f"admin writes applied in all: {r['writes']}; median write latency {r['latency_ms']} ms; "
        f"{r['seconds']} s; seed {r['seed']}; {drillkit.machine()}",
    ] + [f"FAIL {c}" for c in r["corrupt"]])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    with tempfile.TemporaryDirectory() as tmp:
        r = run(args.kills, seed, Path(tmp))
    print(report(r))
    return 1 if r["corrupt"] else 0


if __name__ == "__main__":
    sys.exit(main())
