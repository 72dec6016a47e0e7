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
    from ..config.parse import load_yaml, parse_config

    text = resources.files(PACKAGE).joinpath("data", BUNDLED_PROFILE).read_text(encoding="utf-8")
    return parse_config(load_yaml(text, source=BUNDLED_PROFILE), source=BUNDLED_PROFILE, text=text)


def _config_for_simulation(explicit: str | None) -> Config:
    from ..config.parse import ConfigError, find_config, load_config_file

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


async def _wait_for_signal(on_hangup: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)


async def _serve(cfg: Config, log: Logger, simulate: bool, host: str | None, port: int | None) -> int:
    from ..app import App

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
    log.info("listening", host=host or cfg.server.host, port=bound, basePath=cfg.server.base_path,
             protocol=scheme, nodeId=cfg.server.node_id, configPath=cfg.path, simulate=simulate)
    try:
        await _wait_for_signal(app.reload_access)
    finally:
        log.info("shutting_down", graceMs=cfg.server.shutdown_grace_ms, inFlight=app.server.in_flight)
        clean = await app.stop()
        if sim is not None:
            await sim.stop()
        log.info("stopped", clean=clean)
    return 0


def serve(config: str | None, *, simulate: bool, host: str | None, port: int | None, log_level: str) -> int:
    from ..config.parse import load_config

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
