"""``configure`` and ``init``: detect the host, merge an answers file and the user's answers, and write a
config that passes validation.

The config itself is ``generate``'s pure work; this module holds the wizard's I/O: questions, key
generation, the summaries and writing the file.
"""

from __future__ import annotations

import ipaddress
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from ..config.schema import PLANES
from ..fsutil import atomic_write_text
from .detect import Detection, detect
from .generate import ConfigureError, generate, generate_models, gpu_section, load_answers, to_yaml, validate

PACKAGE = "ollama_agent_router"  # data/ sits at the package's top, not beside this module

DEFAULT_OUTPUT = "./ollama-agent-router.yaml"


# --- Rendering ----------------------------------------------------------------------------------------


def render_detection(det: Detection) -> str:
    gpu = gpu_section(det)
    if det.gpu is None:
        monitor = "disabled"
    else:
        monitor = "enabled through " + ("NVML" if det.gpu.source == "nvml" else det.gpu.smi_path or "nvidia-smi")
    binary_source = "command" if det.binary else "not_found"
    return "\n".join([
        "Detected environment",
        "",
        "Ollama:",
        f"  binary: {det.binary or 'not found'} ({binary_source}, {det.binary_confidence})",
        f"  base URL: {det.base_url} ({det.base_url_source})",
        f"  reachable: {'yes' if det.reachable else 'no'}",
        f"  models: {len(det.models)} found",
        "",
        "GPU:",
        f"  provider: {gpu['provider']}",
        f"  name: {gpu['name'] or 'not detected'}",
        f"  VRAM: {gpu['vramTotalMb']} MB",
        f"  monitor: {monitor}",
        "",
        "Machine:",
        f"  OS: {det.platform} {det.arch}",
        f"  CPU cores: {det.cpu_cores}",
        f"  RAM: {det.ram_mb} MB",
    ])


def render_summary(config: dict[str, Any], output: str, det: Detection) -> str:
    server, gpu, queue, jobs = config["server"], config["gpu"], config["queue"], config["jobs"]
    scheme = "https" if (server.get("https") or {}).get("enabled") else "http"
    heavy = next((m["name"] for m in config["models"] if m.get("exclusive") is True), "none")
    lines = [
        "",
        "Configuration summary",
        "",
        f"Output: {output}",
        f"Server: {scheme}://{server.get('host')}:{server.get('port')}{server.get('basePath')}",
        f"Ollama: {config['ollama'].get('baseUrl')}",
        f"GPU: {gpu.get('provider')}" + (f", {gpu['name']}" if gpu.get("name") else "")
        + f", {gpu.get('vramTotalMb')} MB VRAM",
        f"Models: {len(config['models'])} configured",
        f"Heavy model: {heavy}",
        f"Queue: global concurrency {queue.get('globalMaxConcurrent')}, max queued {queue.get('globalMaxQueued')}",
        f"Jobs: {jobs.get('store')} store, result TTL {jobs.get('resultTtlSeconds')}s",
    ]
    keys = config["access"].get("managed", {}).get("apiKeys") or []
    if keys:
        lines.append(f"Access: API key required on {', '.join(PLANES)} ({len(keys)} key{'s' * (len(keys) > 1)})")
    lines += ["", "Detected:", f"  Ollama models: {len(det.models)}", f"  Machine: {det.platform} {det.arch}", ""]
    return "\n".join(lines)


# --- The wizard ---------------------------------------------------------------------------------------


class Prompter:
    """Questions on stdin/stdout. A piped stdin works too, one answer a line."""

    def __init__(self, read: Callable[[str], str] = input) -> None:
        self._read = read

    def _line(self, prompt: str) -> str:
        try:
            return self._read(prompt).strip()
        except EOFError:
            raise ConfigureError(
                "No answer (input ended); use --non-interactive or -y to configure without questions") from None

    def confirm(self, question: str, default: bool) -> bool:
        answer = self._line(f"{question} {'[Y/n]' if default else '[y/N]'} ").lower()
        return default if not answer else answer in ("y", "yes")

    def ask(self, question: str, default: Any, parse: Callable[[str], Any] = str) -> Any:
        while True:
            answer = self._line(f"{question} ({default}): ")
            if not answer:
                return default
            try:
                return parse(answer)
            except ValueError as e:
                print(f"  {e}")

    def optional(self, question: str) -> str:
        """A free answer; empty when the user just presses Enter."""
        return self._line(f"{question}: ")


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError("a port is a number from 1 to 65535")
    return int(text)


def _non_negative(text: str) -> int:
    if not text.isdigit():
        raise ValueError("enter a whole number of megabytes")
    return int(text)


def _size_gb(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise ValueError("the size is a number of gigabytes above 0, such as 4.7")
    return value


def _url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("enter a URL such as http://127.0.0.1:11434")
    return text


def _corrections(p: Prompter, det: Detection, answers: dict[str, Any]) -> dict[str, Any]:
    """The original's correction questions; the answers overlay the answers file."""
    server = dict(answers.get("server") or {})
    ollama = dict(answers.get("ollama") or {})
    gpu = dict(answers.get("gpu") or {})
    ollama["baseUrl"] = p.ask("Ollama base URL", ollama.get("baseUrl", det.base_url), _url)
    server["host"] = p.ask("Server host", server.get("host", "127.0.0.1"))
    server["port"] = p.ask("Server port", server.get("port", 11435), _port)
    server["basePath"] = p.ask("Server base path", server.get("basePath", "/"))
    gpu["vramTotalMb"] = p.ask("GPU VRAM total MB", gpu.get("vramTotalMb", gpu_section(det)["vramTotalMb"]),
                               _non_negative)
    return {**answers, "server": server, "ollama": ollama, "gpu": gpu}


def _no_models(det: Detection) -> str:
    if not det.reachable:
        return f"No models detected: Ollama did not answer at {det.base_url}"
    return f"No models: neither Ollama at {det.base_url} nor the answers file gave a chat model"


def _ask_models(p: Prompter, det: Detection) -> dict[str, Any]:
    """Without Ollama (not running yet, or on another host) the user names the models; roles follow from
    the names and sizes, as for detected ones."""
    print(f"{_no_models(det)}. Name the models to route to, as Ollama names them; an empty name ends the list.")
    items: list[dict[str, Any]] = []
    name = p.ask("Model name", "llama3.2:3b")
    while name:
        items.append({"name": name, "sizeGb": p.ask(f"Size of {name} in GB", 2, _size_gb)})
        name = p.optional("Another model name (empty when done)")
    return {"mode": "manual", "items": items}


def _is_loopback(host: Any) -> bool:
    try:
        return ipaddress.ip_address(str(host)).is_loopback
    except ValueError:
        return str(host) == "localhost"


@dataclass(frozen=True)
class NewKey:
    id: str
    scopes: tuple[str, ...]
    key: str  # shown once, never written
    entry: dict[str, Any] = field(repr=False)  # what goes into the config: the hash, not the key


def new_keys(specs: list[tuple[str, str, tuple[str, ...]]]) -> list[NewKey]:
    """(id, name, scopes) -> fresh keys with their config entries."""
    from ..access.keys import generate_key

    out = []
    for key_id, name, scopes in specs:
        key, key_hash = generate_key()
        entry = {"id": key_id, "name": name, "keyHash": key_hash, "enabled": True, "scopes": list(scopes)}
        out.append(NewKey(key_id, scopes, key, entry))
    return out


LOCAL_KEY = ("local-client", "Local client", tuple(PLANES))
GATEWAY_KEY = ("gateway", "Gateway (Kong)", ("runtimeAgent",))


@dataclass(frozen=True)
class Options:
    output: str = DEFAULT_OUTPUT
    answers: str | None = None
    interactive: bool = True
    detect_only: bool = False
    dry_run: bool = False
    overwrite: bool = False
    secure: bool = False


def refuse_existing(path: str, overwrite: bool, shown: str) -> None:
    if os.path.exists(path) and not overwrite:
        raise ConfigureError(f"Refusing to overwrite existing config: {shown}")


def _questions(p: Prompter, det: Detection, answers: dict[str, Any],
               specs: list[tuple[str, str, tuple[str, ...]]]) -> tuple[dict[str, Any], list]:
    """The interactive part: corrections, models when none are known, keys. Returns (answers, key specs)."""
    print(render_detection(det) + "\n")
    if not p.confirm("Use these detected values?", True):
        answers = _corrections(p, det, answers)
    if not generate_models(det, answers, cpu_only=False):
        answers = {**answers, "models": _ask_models(p, det)}
    host = (answers.get("server") or {}).get("host", "127.0.0.1")
    if not p.confirm("Require an API key on both planes (the key is generated and shown once)?",
                     bool(specs) or not _is_loopback(host)):
        return answers, []
    specs = [LOCAL_KEY]
    if p.confirm("Also a separate key for a gateway such as Kong (runtimeAgent plane only)?", False):
        specs.append(GATEWAY_KEY)
    return answers, specs


def configure(opts: Options, *, prompter: Prompter | None = None,
              detector: Callable[[], Detection] = detect) -> int:
    if not (opts.detect_only or opts.dry_run):
        # Before any question: nobody should answer a wizard only to be told the file exists.
        refuse_existing(opts.output, opts.overwrite, opts.output)
    answers: dict[str, Any] = {}
    if opts.answers:
        answers, warnings = load_answers(opts.answers)
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
    det = detector()
    if opts.detect_only:
        print(render_detection(det))
        return 0
    specs = [LOCAL_KEY] if opts.secure or answers.get("secure") is True else []
    p = prompter or Prompter()
    if opts.interactive:
        answers, specs = _questions(p, det, answers, specs)
    elif not generate_models(det, answers, cpu_only=False):
        raise ConfigureError(
            f"{_no_models(det)}. Start Ollama and run configure again, list the models in an answers file"
            " (--answers; models: {mode: manual, items: [{name: llama3.2:3b, sizeGb: 2}]}), or run configure"
            " without -y/--non-interactive to type them in.")
    keys = new_keys(specs) if specs else []
    config = generate(det, answers, [k.entry for k in keys])
    text = to_yaml(config)
    validate(text, opts.output)
    print(render_summary(config, opts.output, det))
    if opts.dry_run:
        print(text, end="")
        _print_keys(keys)
        return 0
    if opts.interactive and not p.confirm("Write this config?", True):
        raise ConfigureError("Configuration cancelled")
    refuse_existing(opts.output, opts.overwrite, opts.output)
    atomic_write_text(opts.output, text, mode=0o644)
    print(f"Wrote {opts.output}")
    _print_keys(keys)
    return 0


def _print_keys(keys: list[NewKey]) -> None:
    for k in keys:
        print(f"\nAPI key {k.id} ({', '.join(k.scopes)}), shown only this once; the config holds its hash:\n  {k.key}")
    if keys:
        print("\nClients send it as 'Authorization: Bearer <key>'; the CLI takes --api-key or OAR_API_KEY.")


def init(output: str, *, wizard: bool) -> int:
    """``init``: the starter config (or, with ``--wizard``, the interactive ``configure``)."""
    if wizard:
        return configure(Options(output=output))
    refuse_existing(output, False, os.path.abspath(output))
    text = resources.files(PACKAGE).joinpath("data", "starter.yaml").read_text(encoding="utf-8")
    atomic_write_text(output, text, mode=0o644)
    print(f"Wrote {output}")
    return 0
