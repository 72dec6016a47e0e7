"""Client commands: one blocking HTTP request to a running router, printed as a table or as pretty JSON.

``http.client`` rather than ``urllib.request``: it imports faster, and it never sends a request for a
loopback router through an ``http_proxy`` configured for the rest of the host.
"""

from __future__ import annotations

import http.client
import json
import sys
from urllib.parse import quote, urlsplit

from .. import __version__

# typing and dataclasses (through inspect) would cost more start-up time than the rest of this module.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

DEFAULT_URL = "http://127.0.0.1:11435"


class ClientError(Exception):
    """The request could not be made or answered; the message is one line for stderr."""


class Target:
    """Where the router is and how to reach it."""

    def __init__(self, url: str = DEFAULT_URL, base_path: str = "/", api_key: str | None = None,
                 ca_cert: str | None = None, insecure: bool = False, timeout: float = 30.0) -> None:
        self.url = url
        self.base_path = base_path
        self.api_key = api_key
        self.ca_cert = ca_cert
        self.insecure = insecure
        self.timeout = timeout

    def endpoint(self, path: str) -> str:
        return join_url(self.url, self.base_path, path)


def join_url(url: str, base_path: str, path: str) -> str:
    """``--url`` path segments, then ``--base-path``, then the endpoint, each trimmed and joined by one ``/``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ClientError(f"invalid --url {url!r}: expected http://host:port or https://host:port")
    pieces = [p.strip("/") for p in (parts.path, base_path, path)]
    return f"{parts.scheme}://{parts.netloc}/" + "/".join(p for p in pieces if p)


def fetch(method: str, url: str, *, body: Any = None, headers: dict[str, str] | None = None,
          timeout: float = 30.0, ca_cert: str | None = None, insecure: bool = False) -> tuple[int, bytes]:
    """One request on a fresh connection: (status, body). Raises ClientError when no answer comes."""
    parts = urlsplit(url)
    try:
        host, port = parts.hostname, parts.port
    except ValueError as e:  # a port that is not a number
        raise ClientError(f"invalid URL {url!r}: {e}") from None
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, port, timeout=timeout, context=_tls_context(ca_cert, insecure))
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    sent = {"Accept": "application/json", "User-Agent": f"ollama-agent-router/{__version__}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        sent["Content-Type"] = "application/json"
    sent.update(headers or {})
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request(method, target, body=data, headers=sent)
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException) as e:
        raise ClientError(f"fetch failed: {method} {url}: {_reason(e)}") from None
    finally:
        conn.close()


def _tls_context(ca_cert: str | None, insecure: bool) -> Any:
    import ssl

    try:
        ctx = ssl.create_default_context(cafile=ca_cert)
    except OSError as e:
        raise ClientError(f"cannot read --ca-cert {ca_cert}: {e.strerror or e}") from None
    except ssl.SSLError as e:
        raise ClientError(f"--ca-cert {ca_cert} is not a PEM certificate file: {e}") from None
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _reason(e: BaseException) -> str:
    import ssl

    if isinstance(e, ssl.SSLCertVerificationError):
        return f"{e.verify_message or e} (pass --ca-cert FILE, or --insecure to skip verification)"
    if isinstance(e, TimeoutError):
        return "timed out"
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


# --- Commands -----------------------------------------------------------------------------------------


class Command:
    def __init__(self, method: str, path: str, render: Callable[[Any, str | None], str], body: Any = None) -> None:
        self.method = method
        self.path = path  # with {id} for job commands
        self.render = render
        self.body = body


def run(target: Target, command: Command, *, job_id: str | None = None, as_json: bool = False) -> int:
    """Make the request and print the answer. Every 2xx succeeds (a pending job result is 202); otherwise one
    line goes to stderr (``error_line``) and the exit code is 1."""
    path = command.path.replace("{id}", quote(job_id or "", safe=""))
    headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
    status, raw = fetch(command.method, target.endpoint(path), body=command.body, headers=headers,
                        timeout=target.timeout, ca_cert=target.ca_cert, insecure=target.insecure)
    text = raw.decode("utf-8", "replace")
    if not 200 <= status < 300:
        print(error_line(status, text), file=sys.stderr)
        return 1
    try:
        data = json.loads(text, parse_float=_js_number)
    except ValueError:
        print(text, end="" if text.endswith("\n") else "\n")
        return 0
    print(pretty(data) if as_json else command.render(data, job_id))
    return 0


def error_line(status: int, text: str) -> str:
    """A failed answer as one readable line, never raw JSON: ``error: 404 job_not_found: Job not found``."""
    try:
        data = json.loads(text)
    except ValueError:  # not JSON (a proxy's HTML page, say): its text
        detail = text
    else:
        detail = _error_detail(data) if isinstance(data, dict) else "(no error message in the reply)"
    detail = " ".join(detail.split())  # one line, whatever the server put in the message
    if len(detail) > _MAX_ERROR_CHARS:
        detail = detail[:_MAX_ERROR_CHARS] + "..."
    return f"error: {status} {detail}" if detail else f"error: HTTP {status}"


_MAX_ERROR_CHARS = 500


def _error_detail(data: dict) -> str:
    """``code: message`` from the OpenAI envelope, a failed job's ``{status, error}``, or a bare ``error``."""
    prefix = f"job {data['status']}: " if data.get("status") == "failed" else ""
    error: Any = data
    while isinstance(error, dict) and isinstance(error.get("error"), (dict, str)):
        error = error["error"]
    if isinstance(error, str):
        return prefix + error
    message, code = error.get("message"), error.get("code")
    if not isinstance(message, str):
        return prefix + (str(code) if code else "(no message)")
    return prefix + (f"{code}: {message}" if code else message)


def _js_number(text: str) -> int | float:
    """Integral floats print as JavaScript prints them (``14``, not ``14.0``), like the original's output."""
    value = float(text)
    return int(value) if value.is_integer() and abs(value) < 1e21 else value


def pretty(data: Any) -> str:
    """The original's ``JSON.stringify(data, null, 2)``."""
    return json.dumps(data, indent=2, ensure_ascii=False)


# --- Human output -------------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = [headers] + cells
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return str(round(value, 3)).removesuffix(".0")
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return " ".join(f"{k}={_cell(v)}" for k, v in value.items()) or "-"
    return str(value)


def _mb(value: Any) -> str:
    return f"{_cell(value)} MB" if isinstance(value, (int, float)) else "-"


def _loaded_names(data: dict) -> dict[str, str]:
    """Loaded model name (with and without ``:latest``) -> where it runs (``100% GPU``, or ``yes``)."""
    out: dict[str, str] = {}
    for m in data.get("loadedModels") or data.get("loaded") or []:
        if isinstance(m, dict) and isinstance(m.get("name"), str):
            where = str(m.get("processor") or "yes")
            out[m["name"]] = where
            out.setdefault(m["name"].removesuffix(":latest"), where)
    return out


def render_status(data: Any, _: str | None = None) -> str:
    if not isinstance(data, dict):
        return pretty(data)
    cfg = data.get("config") or {}
    queue = data.get("queue") or {}
    lines = [
        f"Node: {data.get('nodeId', '-')} ({cfg.get('protocol', 'http')}, base path {cfg.get('basePath', '/')})",
        f"Queue: {queue.get('globalQueued', 0)} waiting, {queue.get('globalRunning', 0)} running",
        "GPU: " + _gpu_line(data.get("gpu")),
    ]
    reachable = (data.get("ollama") or {}).get("reachable")  # absent from the original's status
    if reachable is False:
        # First, before anything that looks fine: no request can be answered until this is fixed.
        lines.insert(0, "Ollama: NOT REACHABLE from the router; requests fail until it answers"
                        " (is Ollama running? is ollama.baseUrl right?)")
    elif reachable:
        lines.insert(1, "Ollama: reachable")
    loaded = _loaded_names(data)
    rows = [[q.get("model"), q.get("queued"), q.get("running"), q.get("concurrency"), loaded.get(q.get("model"), "no")]
            for q in queue.get("byModel") or [] if isinstance(q, dict)]
    if rows:
        lines += ["", table(["MODEL", "WAITING", "RUNNING", "CONCURRENCY", "LOADED"], rows)]
    return "\n".join(lines)


# Where a GPU snapshot's figures come from, as the router reports it (``source``).
_GPU_SOURCES = {"nvml": "measured by NVML", "nvidia-smi": "measured by nvidia-smi", "simulated": "simulated",
                "static": "from the config, not measured"}


def _gpu_line(gpu: Any) -> str:
    if not isinstance(gpu, dict) or gpu.get("available") is False or not gpu.get("vramTotalMb"):
        return "none"
    parts = [str(gpu.get("name") or gpu.get("provider") or "GPU"), f"{_mb(gpu.get('vramTotalMb'))} total"]
    static = gpu.get("source") == "static"
    # A static snapshot's "all free, 0% busy" is the config restated, not a reading: do not show it as one.
    if gpu.get("vramFreeMb") is not None and not static:
        parts.append(f"{_mb(gpu['vramFreeMb'])} free")
    if gpu.get("utilizationPct") is not None and not static:
        parts.append(f"{_cell(gpu['utilizationPct'])}% busy")
    source = gpu.get("source")
    return ", ".join(parts) + (f" ({_GPU_SOURCES.get(source, source)})" if source else "")


def render_models(data: Any, _: str | None = None) -> str:
    if not isinstance(data, dict):
        return pretty(data)
    installed = {m.get("name") for m in (data.get("ollama") or {}).get("models") or [] if isinstance(m, dict)}
    installed |= {n.removesuffix(":latest") for n in installed if isinstance(n, str)}
    loaded = _loaded_names(data)
    rows = [
        [m.get("name"), m.get("sizeGb"), m.get("costClass"), m.get("maxConcurrent"), m.get("maxContext"),
         m.get("purpose"), m.get("name") in installed, loaded.get(m.get("name"), "no")]
        for m in data.get("configured") or [] if isinstance(m, dict)
    ]
    return table(["MODEL", "SIZE GB", "COST", "CONCURRENCY", "MAX CONTEXT", "PURPOSE", "INSTALLED", "LOADED"], rows)


def render_gpu(data: Any, _: str | None = None) -> str:
    if not isinstance(data, dict):
        return pretty(data)
    if data.get("available") is False:
        return f"No GPU information (provider {data.get('provider', 'none')})"
    source = data.get("source", data.get("provider", "-"))
    head = f"{data.get('name', 'GPU')}: {_GPU_SOURCES.get(source, source)}"
    if isinstance(data.get("snapshotAgeMs"), (int, float)) and source != "static":
        head += f", read {data['snapshotAgeMs']} ms ago"
    devices = [d for d in data.get("devices") or [] if isinstance(d, dict)]
    rows = [[d.get("index"), d.get("name"), _mb(d.get("totalMb")), *_device_figures(d, source)] for d in devices]
    if not rows:
        rows = [[0, data.get("name"), _mb(data.get("vramTotalMb")), _mb(data.get("vramUsedMb")),
                 _mb(data.get("vramFreeMb")), data.get("utilizationPct")]]
    return head + "\n\n" + table(["GPU", "NAME", "TOTAL", "USED", "FREE", "UTIL %"], rows)


def _device_figures(device: dict, source: str) -> list[Any]:
    """Used, free and busy; a static snapshot has none worth a column (all free and idle, by assumption)."""
    if source == "static":
        return [None, None, None]
    return [_mb(device.get("usedMb")), _mb(device.get("freeMb")), device.get("utilizationPct")]


def render_jobs(data: Any, _: str | None = None) -> str:
    jobs = data.get("jobs") if isinstance(data, dict) else None
    if not isinstance(jobs, list):
        return pretty(data)
    if not jobs:
        return "No jobs."
    rows = [[j.get("id"), j.get("status"), j.get("task_type"), j.get("selected_model"), j.get("created_at"),
             j.get("finished_at")] for j in jobs if isinstance(j, dict)]
    return table(["ID", "STATUS", "TASK", "MODEL", "CREATED", "FINISHED"], rows)


_JOB_FIELDS = ("id", "status", "task_type", "selected_model", "priority", "attempts", "created_at", "started_at",
               "finished_at", "expires_at")


def render_job(data: Any, _: str | None = None) -> str:
    if not isinstance(data, dict) or "id" not in data:
        return pretty(data)
    lines = [f"{key + ':':<16}{_cell(data.get(key))}" for key in _JOB_FIELDS if key in data]
    error = _error_message(data.get("error_json"))
    if error:
        lines.append(f"{'error:':<16}{error}")
    return "\n".join(lines)


def _error_message(error_json: Any) -> str | None:
    if not isinstance(error_json, str):
        return None
    try:
        error = json.loads(error_json)
    except ValueError:
        return error_json
    return str(error.get("message", error_json)) if isinstance(error, dict) else error_json


def render_result(data: Any, job_id: str | None = None) -> str:
    """A finished chat job prints its reply; a pending one says where it is."""
    if isinstance(data, dict) and set(data) == {"status"}:
        return f"Job {job_id} is {data['status']}; no result yet."
    choices = data.get("choices") if isinstance(data, dict) else None
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = choices[0].get("message") or {}
        if isinstance(message.get("content"), str):
            return message["content"]
    return pretty(data)


def render_cancel(data: Any, job_id: str | None = None) -> str:
    if isinstance(data, dict) and "status" in data:
        return f"Job {data.get('id', job_id)}: {data['status']}"
    return pretty(data)


def render_route(data: Any, _: str | None = None) -> str:
    """The routing explanation: scalars as ``key: value``, lists of records as tables (nested records, such
    as score components, become columns). Renders whatever keys the router sends."""
    if not isinstance(data, dict):
        return pretty(data)
    scalars, blocks = [], []
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            blocks.append(f"{key}:\n" + _records_table(value))
        elif isinstance(value, dict) and any(isinstance(v, dict) for v in value.values()):
            blocks.append(f"{key}:\n" + render_route(value))
        else:
            scalars.append(f"{key}: {_cell(value)}")
    return "\n\n".join(p for p in ("\n".join(scalars), *blocks) if p)


def _records_table(records: list[dict]) -> str:
    found: dict[tuple[str, ...], None] = {}
    for record in records:
        for key, value in record.items():
            if isinstance(value, dict):
                found.update({(key, sub): None for sub in value})
            else:
                found[(key,)] = None
    # A nested part (a score component) that is 0 in every row explains nothing.
    columns = [c for c in found if len(c) == 1 or any(_at(r, c) not in (0, None) for r in records)]
    plain = {c[0] for c in columns if len(c) == 1}
    headers = [".".join(c) if len(c) > 1 and c[-1] in plain else c[-1] for c in columns]
    return table(headers, [[_at(record, c) for c in columns] for record in records])


def _at(record: dict, path: tuple[str, ...]) -> Any:
    value: Any = record
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


COMMANDS: dict[str, Command] = {
    "status": Command("GET", "/v1/router/status", render_status),
    "models": Command("GET", "/v1/router/models", render_models),
    "gpu": Command("GET", "/v1/router/gpu", render_gpu),
    "jobs": Command("GET", "/v1/jobs", render_jobs),
    "job": Command("GET", "/v1/jobs/{id}", render_job),
    "result": Command("GET", "/v1/jobs/{id}/result", render_result),
    "cancel": Command("DELETE", "/v1/jobs/{id}", render_cancel),
}


def route_command(prompt: str, router: dict[str, Any]) -> Command:
    """``route``: ask the router what it would do with a prompt, without running it."""
    body: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": prompt}]}
    if router:
        body["router"] = router
    return Command("POST", "/v1/router/route", render_route, body)
