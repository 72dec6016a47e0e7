"""``serve`` and ``simulate``: run the router (optionally against the embedded simulator) until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
from importlib import resources
from typing import Callable

from ..config.schema import Config
from ..log import Logger

PACKAGE = "ollama_agent_router"  # data/ sits at the package's top, not beside this module

BUNDLED_PROFILE = "gex44.yaml"


def bundled_config() -> Config:
    """The profile shipped inside the package: examples/gex44.yaml plus an embedding model."""
    from ..config.parse import parse_config
    from ..config.reader import load_yaml

    text = resources.files(PACKAGE).joinpath("data", BUNDLED_PROFILE).read_text(encoding="utf-8")
    return parse_config(load_yaml(text, source=BUNDLED_PROFILE), source=BUNDLED_PROFILE, text=text)


def _config_for_simulation(explicit: str | None) -> Config:
    from ..config.files import find_config, load_config_file
    from ..config.reader import ConfigError

    try:
        path = find_config(explicit)
    except ConfigError:
        if explicit is not None:
            raise
        return bundled_config()
    return load_config_file(path)


def _simulated(cfg: Config, sim_url: str) -> Config:
    """Point the config at the simulator and let the GPU probe read the simulator's fake GPU."""
    gpu = dataclasses.replace(
        cfg.gpu, provider="nvidia", vram_total_mb=cfg.gpu.vram_total_mb or 24576,
        monitor=dataclasses.replace(cfg.gpu.monitor, enabled=True),
    )
    ollama = dataclasses.replace(cfg.ollama, base_url=sim_url)
    return dataclasses.replace(cfg, ollama=ollama, gpu=gpu)


def dashboard_url(scheme: str, host: str, port: int, base_path: str) -> str:
    """Where the dashboard page is; a wildcard bind is shown as loopback, where a browser on this host finds it."""
    shown = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in shown:
        shown = f"[{shown}]"
    return f"{scheme}://{shown}:{port}{base_path.rstrip('/')}/ui/"


async def _wait_for_signal(on_hangup: Callable[[], None], ready: Callable[[], None] = lambda: None) -> None:
    """Until SIGINT or SIGTERM. ``ready`` runs once the handlers are in place: a supervisor that signals as
    soon as it reads the "listening" line must get a clean stop (exit 0), not death by the default handler."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    ready()
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)


async def _serve(cfg: Config, log: Logger, simulate: bool, host: str | None, port: int | None) -> int:
    from ..app import App

    for warning in cfg.warnings:  # unknown keys and the like: the config still starts, as the original's did
        log.warning("config_warning", message=warning)
    sim = None
    backend = None
    if simulate:
        from ..simulator.server import OllamaSimulator

        # The simulator's own access log would drown the router's: it only reports warnings.
        sim = OllamaSimulator.from_config(cfg, log=Logger("warning"))
        await sim.start()
        cfg = _simulated(cfg, sim.url)
        backend = sim.gpu_backend()
        names = ", ".join(m.name for m in cfg.models)
        print(f"Simulated Ollama listening on {sim.url} with models: {names}", flush=True)
    if host:  # the gate's Host check follows the address actually listened on
        cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, host=host))
    app = App(cfg, log=log, gpu_backend=backend)
    bound = await app.start(host, port)
    scheme = "https" if cfg.server.https.enabled else "http"

    def ready() -> None:
        log.info("listening", host=host or cfg.server.host, port=bound, basePath=cfg.server.base_path,
                 protocol=scheme, nodeId=cfg.server.node_id, configPath=cfg.path, simulate=simulate)
        print(f"Dashboard: {dashboard_url(scheme, host or cfg.server.host, bound, cfg.server.base_path)}", flush=True)

    try:
        await _wait_for_signal(app.reload_access, ready)
    finally:
        log.info("shutting_down", graceMs=cfg.server.shutdown_grace_ms, inFlight=app.server.in_flight)
        clean = await app.stop()
        if sim is not None:
            await sim.stop()
        log.info("stopped", clean=clean)
    return 0


def serve(config: str | None, *, simulate: bool, host: str | None, port: int | None, log_level: str) -> int:
    from ..config.files import load_config

    cfg = _config_for_simulation(config) if simulate else load_config(config)
    return asyncio.run(_serve(cfg, Logger(log_level), simulate, host, port))


async def _simulate(cfg: Config, host: str, port: int, log: Logger, fast: bool) -> int:
    # Both simulators log the bound URL (port 0 picks a free one) and serve until cancelled.
    if fast:
        from ..simulator.fast import run_fast_simulator

        running = asyncio.ensure_future(run_fast_simulator([m.name for m in cfg.models], host, port, log))
    else:
        from ..simulator.server import run_simulator

        running = asyncio.ensure_future(run_simulator(cfg, host, port, log))
    stop = asyncio.ensure_future(_wait_for_signal(lambda: None))  # nothing to reload: SIGHUP is ignored
    done, _ = await asyncio.wait((running, stop), return_when=asyncio.FIRST_COMPLETED)
    if running in done:
        stop.cancel()
        running.result()  # it ends by itself only on an error, such as an address in use
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    return 0


def simulate(config: str | None, host: str, port: int, log_level: str, *, fast: bool = False) -> int:
    """SIGINT or SIGTERM stop it and exit 0, like ``serve``."""
    return asyncio.run(_simulate(_config_for_simulation(config), host, port, Logger(log_level), fast))
