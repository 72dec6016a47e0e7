"""Command line: ``ollama-agent-router``, ``oar`` and ``python -m ollama_agent_router`` are this program.

Heavy modules (the server, ssl contexts, sqlite, YAML, pynvml) are imported inside the commands that need
them, so client commands start fast. Every error is one line on stderr (no traceback without ``--debug``)
and exits 1, usage errors included.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from . import __version__

TYPE_CHECKING = False  # typing costs start-up time that client commands do not need
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

class CliError(Exception):
    """A one-line error for stderr; exit code 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        # argparse exits 2 on usage errors; the original exits 1 with commander's wording.
        choice = re.match(r"argument command: invalid choice: '([^']*)'", message)
        missing = re.match(r"the following arguments are required: ([^,\s]+)", message)
        unknown = re.match(r"unrecognized arguments: (-\S*)", message)
        if choice:
            message = f"unknown command '{choice[1]}'"
        elif missing:
            message = f"missing required argument '{missing[1]}'"
        elif unknown:
            message = f"unknown option '{unknown[1]}'"
        raise CliError(f"error: {message}")


def _add_client_options(p: argparse.ArgumentParser, global_: bool) -> argparse.ArgumentParser:
    """Options for talking to a router. Given before the command (as in the original) or after it; after
    the command they default to SUPPRESS so that they never overwrite the values given before it."""

    def default(value: Any) -> Any:
        return value if global_ else argparse.SUPPRESS

    p.add_argument("-u", "--url", metavar="URL", default=default("http://127.0.0.1:11435"),
                   help="router URL for client commands (default http://127.0.0.1:11435)")
    p.add_argument("--base-path", metavar="PATH", default=default("/"),
                   help="API base path for client commands (default /)")
    p.add_argument("--api-key", metavar="KEY", default=default(os.environ.get("OAR_API_KEY")),
                   help="API key sent as a Bearer token (default: $OAR_API_KEY)")
    p.add_argument("--ca-cert", metavar="FILE", default=default(None),
                   help="CA certificate (PEM) to verify an HTTPS router")
    p.add_argument("--insecure", action="store_true", default=default(False),
                   help="do not verify the HTTPS router's certificate")
    p.add_argument("--timeout", metavar="SECONDS", type=float, default=default(30.0),
                   help="how long to wait for the router (default 30)")
    p.add_argument("--json", action="store_true", default=default(False),
                   help="print the router's JSON (2-space indent) instead of a table")
    return p


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ollama-agent-router", usage="ollama-agent-router|oar [options] [command]",
                description="Intelligent HTTP/CLI router for Ollama")
    p.add_argument("-v", "--version", action="version", version=__version__, help="print the version")
    p.add_argument("-c", "--config", metavar="PATH", help="config file path")
    _add_client_options(p, True)
    p.add_argument("--log-level", metavar="LEVEL",
                   help="debug, info, warning or error (default: $LOG_LEVEL, else info)")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="command", parser_class=_Parser, prog="ollama-agent-router")
    config_opt = argparse.ArgumentParser(add_help=False)
    config_opt.add_argument("-c", "--config", metavar="PATH", default=argparse.SUPPRESS, help="config file path")
    _add_server_commands(sub, config_opt)
    _add_setup_commands(sub, config_opt)
    _add_client_commands(sub)
    _add_key_commands(sub)
    help_ = sub.add_parser("help", help="show help for a command")
    help_.add_argument("topic", nargs="?", metavar="command")
    p.set_defaults(subparsers=sub)
    return p


def _add_server_commands(sub: Any, config_opt: argparse.ArgumentParser) -> None:
    serve = sub.add_parser("serve", parents=[config_opt], help="run the router")
    serve.add_argument("--simulate", action="store_true",
                       help="start the embedded Ollama simulator and route to it (no Ollama or GPU needed)")
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    serve.add_argument("--log-level", metavar="LEVEL", default=argparse.SUPPRESS, help="debug, info, warning or error")

    sim = sub.add_parser("simulate", parents=[config_opt], help="run only the embedded Ollama simulator")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=11434)
    sim.add_argument("--fast", action="store_true",
                     help="zero-delay replies and no scheduling, for measuring a router's overhead")


def _add_setup_commands(sub: Any, config_opt: argparse.ArgumentParser) -> None:
    init = sub.add_parser("init", help="write a starter config")
    init.add_argument("-o", "--output", default="./ollama-agent-router.yaml", help="where to write it")
    init.add_argument("--wizard", action="store_true", help="ask questions instead (like configure)")

    conf = sub.add_parser("configure", help="detect this host and write a config fitted to it")
    conf.add_argument("-o", "--output", default="./ollama-agent-router.yaml", help="where to write the config")
    conf.add_argument("--answers", help="YAML file with answers (server, ollama, gpu, models, routes, ...)")
    conf.add_argument("--non-interactive", action="store_true", help="ask nothing: detection plus answers")
    conf.add_argument("-y", "--yes", action="store_true", help="accept everything (implies --non-interactive)")
    conf.add_argument("--detect", action="store_true", help="only print what was detected")
    conf.add_argument("--dry-run", action="store_true", help="print the config instead of writing it")
    conf.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    conf.add_argument("--secure", action="store_true",
                      help="generate an API key and require keys on both planes (the key is printed once)")

    sub.add_parser("validate-config", parents=[config_opt],
                   help="check a config (and its managed access file) without writing anything")


def _add_client_commands(sub: Any) -> None:
    client = _add_client_options(argparse.ArgumentParser(add_help=False), False)
    for name, text in (("status", "router status"), ("models", "configured, installed and loaded models"),
                       ("gpu", "GPU snapshot"), ("jobs", "recent async jobs")):
        sub.add_parser(name, parents=[client], help=text)
    for name, text in (("job", "one job"), ("result", "a job's result (pending counts as success)"),
                       ("cancel", "cancel a job")):
        sub.add_parser(name, parents=[client], help=text).add_argument("job_id", metavar="jobId")
    top = sub.add_parser("top", parents=[client], help="live view of GPU, models, decisions and jobs (q quits)")
    top.add_argument("--once", action="store_true", help="print one frame and exit")
    route = sub.add_parser("route", parents=[client], help="explain how the router would route a prompt")
    route.add_argument("prompt", help="the prompt text")
    route.add_argument("--task-type", help="give the task type instead of letting the router classify")
    route.add_argument("--priority", choices=("low", "normal", "high"))


def _add_key_commands(sub: Any) -> None:
    gen = sub.add_parser("gen-key", help="generate an API key and its hash for the config")
    gen.add_argument("--scheme", default="sha256", help="hash scheme: sha256 (default), pbkdf2-sha256 or scrypt")
    gen.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print {key, keyHash}")
    hk = sub.add_parser("hash-key", help="hash an API key for the config (reads it from stdin without an argument)")
    hk.add_argument("key", nargs="?", help="the key; omit it to keep it out of the shell history")
    hk.add_argument("--scheme", default="sha256", help="hash scheme: sha256 (default), pbkdf2-sha256 or scrypt")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = None
    try:
        args = parser.parse_args(argv)
        return _dispatch(parser, args)
    except SystemExit as e:  # --help and --version
        return e.code if isinstance(e.code, int) else 0
    except KeyboardInterrupt:
        print(file=sys.stderr)  # end the line a question was left on
        return 130
    except BrokenPipeError:
        # The reader went away (``oar jobs | head``): not an error, and nothing more can be written.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:
        if args is not None and args.debug:
            raise
        print(str(e) or type(e).__name__, file=sys.stderr)
        return 1


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    command = args.command
    if command is None:
        parser.print_help()
        return 0
    if command == "help":
        chosen = args.subparsers.choices.get(args.topic) if args.topic else parser
        if chosen is None:
            raise CliError(f"error: unknown command '{args.topic}'")
        chosen.print_help()
        return 0
    if command == "serve":
        from .commands.serve import serve

        return serve(args.config, simulate=args.simulate, host=args.host, port=args.port,
                     log_level=log_level(args.log_level))
    if command == "simulate":
        from .commands.serve import simulate

        return simulate(args.config, args.host, args.port, log_level(args.log_level), fast=args.fast)
    if command in ("init", "configure"):
        return _configure(args)
    if command == "validate-config":
        from .config.files import find_config, load_config_file

        path = find_config(args.config)
        for warning in load_config_file(path, bootstrap=False, strict=True).warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(f"Config is valid: {path}")
        return 0
    if command in ("gen-key", "hash-key"):
        return _keys(args)
    from .commands import client

    target = client.Target(url=args.url, base_path=args.base_path, api_key=args.api_key or None,
                           ca_cert=args.ca_cert, insecure=args.insecure, timeout=args.timeout)
    if command == "top":
        from .commands import top

        return top.run(target, once=args.once)
    if command == "route":
        router = {k: v for k, v in (("taskType", args.task_type), ("priority", args.priority)) if v}
        return client.run(target, client.route_command(args.prompt, router), as_json=args.json)
    return client.run(target, client.COMMANDS[command], job_id=getattr(args, "job_id", None), as_json=args.json)


# The original's pino names that ours lack; "silent" has nothing to show below critical.
_PINO_LEVELS = {"trace": "debug", "fatal": "critical", "silent": "critical"}


def log_level(flag: str | None) -> str:
    """``--log-level``, else ``$LOG_LEVEL`` (the original's variable), else info."""
    from .log import LEVELS

    value = flag or os.environ.get("LOG_LEVEL") or "info"
    level = _PINO_LEVELS.get(value.strip().lower(), value.strip().lower())
    if level not in LEVELS:
        origin = "--log-level" if flag else "LOG_LEVEL"
        raise CliError(f"error: unknown log level {value!r} ({origin}): use debug, info, warning or error")
    return level


def _configure(args: argparse.Namespace) -> int:
    from .commands import configure

    if args.command == "init":
        return configure.init(args.output, wizard=args.wizard)
    opts = configure.Options(
        output=args.output, answers=args.answers, interactive=not (args.non_interactive or args.yes),
        detect_only=args.detect, dry_run=args.dry_run, overwrite=args.overwrite, secure=args.secure,
    )
    return configure.configure(opts)


def _keys(args: argparse.Namespace) -> int:
    from .access.keys import generate_key, hash_key

    if args.command == "gen-key":
        key, key_hash = generate_key()
        if args.scheme != "sha256":
            key_hash = hash_key(key, scheme=args.scheme)
        if args.json:
            from .commands.client import pretty

            print(pretty({"key": key, "keyHash": key_hash}))
        else:
            print(f"key: {key}\nkeyHash: {key_hash}")
        print("The key is shown only now: give it to the client and put only keyHash in the config.", file=sys.stderr)
        return 0
    key = args.key if args.key not in (None, "-") else _read_key()
    print(hash_key(key, scheme=args.scheme))  # refuses keys too short to be safe behind a plain hash
    return 0


def _read_key() -> str:
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("API key: ").strip()
    return sys.stdin.readline().strip()
