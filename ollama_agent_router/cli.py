"""Command line: ``ollama-agent-router``, ``oar`` and ``python -m ollama_agent_router`` are this program.

Heavy modules (the server, ssl, sqlite, pynvml) are imported inside the commands that need them, so
client commands start fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import __version__


class CliError(Exception):
    """A one-line error for stderr; exit code 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 on usage errors; the original exits 1
        raise CliError(f"error: {message}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ollama-agent-router", description="Intelligent HTTP/CLI router for Ollama")
    p.add_argument("-v", "--version", action="version", version=__version__)
    p.add_argument("-c", "--config", help="config file path")
    p.add_argument("--log-level", default=None, help="debug, info, warning or error (default info)")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    serve = sub.add_parser("serve", help="run the router")
    serve.add_argument("-c", "--config", dest="sub_config", help="config file path")
    serve.add_argument("--simulate", action="store_true",
                       help="start the embedded Ollama simulator and route to it (no Ollama or GPU needed)")
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    serve.add_argument("--log-level", dest="sub_log_level", help="debug, info, warning or error")

    sim = sub.add_parser("simulate", help="run only the embedded Ollama simulator")
    sim.add_argument("-c", "--config", dest="sub_config", help="take the simulated models from this config")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=11434)

    val = sub.add_parser("validate-config", help="check a config file without writing anything")
    val.add_argument("-c", "--config", dest="sub_config", help="config file path")
    return p


def _config_path(args: argparse.Namespace) -> str | None:
    return getattr(args, "sub_config", None) or args.config


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = None
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        if args.command == "serve":
            from .serve import serve

            return serve(_config_path(args), simulate=args.simulate, host=args.host, port=args.port,
                         log_level=args.sub_log_level or args.log_level or "info")
        if args.command == "simulate":
            from .serve import simulate

            return simulate(_config_path(args), args.host, args.port, args.log_level or "info")
        if args.command == "validate-config":
            from .config import find_config, load_config_file

            path = find_config(_config_path(args))
            load_config_file(path, bootstrap=False)
            print(f"Config is valid: {path}")
            return 0
        raise CliError(f"error: unknown command '{args.command}'")
    except CliError as e:
        print(str(e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if args is not None and args.debug:
            raise
        print(str(e) or type(e).__name__, file=sys.stderr)
        return 1
