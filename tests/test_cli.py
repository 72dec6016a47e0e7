"""The command line, run as users run it: real processes, exit codes, stdout and stderr.

Client commands talk to a live router (the ``stack`` fixture) over loopback HTTP.
"""

from __future__ import annotations

import hashlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import QWEN, VIBE, chat_body, wait_for

from ollama_agent_router import __version__
from ollama_agent_router.cli import CliError, log_level
from ollama_agent_router.commands.client import join_url, render_gpu, render_route, render_status
from ollama_agent_router.commands.serve import bundled_config
from ollama_agent_router.simulator.run import Fault

ROOT = Path(__file__).resolve().parent.parent
CONFIG_YAML = """\
server: {host: 127.0.0.1, port: 11435, requestBodyLimit: 1mb}
ollama: {baseUrl: "http://127.0.0.1:11434", requestTimeoutMs: 10000}
gpu: {vramTotalMb: 0, vramSafetyReserveMb: 0, maxGpuUtilizationPct: 95, monitor: {intervalMs: 5000}}
router:
  syncMaxQueueTimeMs: 250
  heavyLoadQueueDepth: 4
  heavyLoadGpuFreeMbThreshold: 1024
  classification: {classifierTimeoutMs: 1500}
jobs: {resultTtlSeconds: 60, maxAttempts: 1, cleanupIntervalMs: 1000}
models:
  - {name: "llama3.2:3b", sizeGb: 2, maxConcurrent: 1, defaultContext: 4096, maxContext: 8192, timeoutMs: 10000}
routes: {unknown: ["llama3.2:3b"]}
queue: {globalMaxConcurrent: 1, globalMaxQueued: 10, perUserMaxQueued: 5, timeoutMs: 10000}
"""
KEY = "test-key-0123456789abcdef"
SECURED = {"access": {"managed": {
    "planes": {plane: {"auth": {"requireApiKey": True, "anonymous": "reject"}} for plane in ("standalone", "runtimeAgent")},
    "apiKeys": [{"id": "cli", "keyHash": "sha256:" + hashlib.sha256(KEY.encode()).hexdigest(),
                 "scopes": ["standalone", "runtimeAgent"]}],
}}}


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OAR_API_KEY", "OLLAMA_HOST")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def run_cli(*args: str, cwd: str | Path | None = None, env: dict[str, str] | None = None, stdin: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
    """``python -m ollama_agent_router ARGS`` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "ollama_agent_router", *args], cwd=cwd, env=env or cli_env(),
                          input=stdin, capture_output=True, text=True, timeout=timeout, check=False)


class Served:
    """A ``serve`` (or ``simulate``) process, its port read from its ``listening`` log line."""

    def __init__(self, argv: list[str], *, cwd: str | Path | None = None, env: dict[str, str] | None = None,
                 timeout: float = 30, event: str = "listening") -> None:
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env or cli_env(), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, bufsize=0)
        self.output = b""
        self.port = self._wait_listening(timeout, event)

    def _wait_listening(self, timeout: float, event: str) -> int:
        # Raw reads: a buffered readline could hold the line we wait for while select() sees an empty pipe.
        fd = self.proc.stderr.fileno()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while time.monotonic() < deadline and sel.select(deadline - time.monotonic()):
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                self.output += chunk
                for line in self.output.decode("utf-8", "replace").splitlines():
                    if f'"event":"{event}"' in line:
                        entry = json.loads(line)
                        return entry["port"] if "port" in entry else int(entry["url"].rsplit(":", 1)[1])
        self.proc.kill()
        self.proc.wait()
        raise AssertionError("serve did not start:\n" + self.output.decode("utf-8", "replace"))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        finally:
            self.proc.stderr.close()


def post_json(port: int, path: str, body: dict) -> tuple[int, dict]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", path, body=json.dumps(body), headers={"content-type": "application/json"})
    response = conn.getresponse()
    data = json.loads(response.read())
    conn.close()
    return response.status, data


# --- Program, version, usage ----------------------------------------------------------------------------


def test_version_from_every_entry_point():
    for flag in ("-v", "--version"):
        done = run_cli(flag)
        assert (done.returncode, done.stdout, done.stderr) == (0, f"{__version__}\n", "")
    code = "import sys; from ollama_agent_router.cli import main; sys.exit(main())"
    done = subprocess.run([sys.executable, "-c", code, "--version"], env=cli_env(), capture_output=True, text=True,
                          check=False)
    assert (done.returncode, done.stdout) == (0, f"{__version__}\n")


def test_client_path_stays_light():
    """What ``oar status`` and ``oar top`` import: no server, no asyncio, no YAML, no sqlite, no pynvml
    (bench/startup_bench.py measures the time)."""
    heavy = ("asyncio", "yaml", "sqlite3", "pynvml", "ollama_agent_router.config.parse",
             "ollama_agent_router.config.reader", "ollama_agent_router.http.server")
    modules = "ollama_agent_router.cli, ollama_agent_router.commands.client, ollama_agent_router.commands.top"
    code = f"import sys, {modules}; print([m for m in {heavy!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, check=True)
    assert done.stdout == "[]\n"


@pytest.mark.parametrize("script", ["ollama-agent-router", "oar"])
def test_console_scripts(script):
    """The installed console scripts (CI installs the checkout editable) run this tree's code."""
    path = Path(sys.executable).parent / script
    if not path.exists():
        pytest.skip(f"{script} is not installed next to {sys.executable}")
    done = subprocess.run([str(path), "--version"], env=cli_env(), capture_output=True, text=True, timeout=60,
                          check=False)
    assert (done.returncode, done.stdout) == (0, f"{__version__}\n")
    done = subprocess.run([str(path), "nope"], env=cli_env(), capture_output=True, text=True, timeout=60,
                          check=False)
    assert (done.returncode, done.stderr) == (1, "error: unknown command 'nope'\n")


@pytest.mark.parametrize(
    "args,stderr",
    [
        (["frobnicate"], "error: unknown command 'frobnicate'\n"),
        (["job"], "error: missing required argument 'jobId'\n"),
        (["result"], "error: missing required argument 'jobId'\n"),
        (["status", "--frob"], "error: unknown option '--frob'\n"),
        (["help", "nope"], "error: unknown command 'nope'\n"),
    ],
)
def test_usage_errors_exit_1_with_one_line(args, stderr):
    done = run_cli(*args)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", stderr)


def test_help():
    done = run_cli("--help")
    assert done.returncode == 0
    assert done.stdout.startswith("usage: ollama-agent-router|oar [options] [command]")
    assert "Intelligent HTTP/CLI router for Ollama" in done.stdout
    done = run_cli("help", "configure")
    assert done.returncode == 0 and "--non-interactive" in done.stdout and "--answers" in done.stdout


def test_errors_have_no_traceback_unless_debug(tmp_path):
    (tmp_path / "bad.yaml").write_text("server: [\n")
    done = run_cli("validate-config", "-c", str(tmp_path / "bad.yaml"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"{tmp_path / 'bad.yaml'}:")
    assert len(done.stderr.splitlines()) == 1
    done = run_cli("--url", "ftp://x", "--debug", "status")
    assert done.returncode == 1 and "Traceback" in done.stderr and "ClientError" in done.stderr


# --- validate-config, init, serve ---------------------------------------------------------------------


def listing(directory: Path) -> list[tuple[str, int, float]]:
    return sorted((str(p.relative_to(directory)), p.stat().st_size, p.stat().st_mtime) for p in directory.rglob("*"))


def test_validate_config_is_read_only(tmp_path):
    """The managed file would be bootstrapped by serve; validate-config writes nothing, with or without -c."""
    (tmp_path / "ollama-agent-router.yaml").write_text(CONFIG_YAML + "access: {managedConfigPath: state/access.yaml}\n")
    before = listing(tmp_path)
    for args in (["validate-config"], ["validate-config", "-c", "ollama-agent-router.yaml"],
                 ["-c", "ollama-agent-router.yaml", "validate-config"]):
        done = run_cli(*args, cwd=tmp_path)
        assert (done.returncode, done.stdout) == (0, f"Config is valid: {tmp_path / 'ollama-agent-router.yaml'}\n")
        assert listing(tmp_path) == before


def test_validate_config_reads_the_managed_file_and_names_lines(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG_YAML + "access: {managedConfigPath: access.yaml}\n")
    (tmp_path / "access.yaml").write_text("version: 1\napiKeys:\n  - id: k\n    keyHash: nope\n    scopes: [standalone]\n")
    done = run_cli("validate-config", "-c", str(cfg))
    assert done.returncode == 1
    assert done.stderr.startswith(f"{tmp_path / 'access.yaml'}:4: apiKeys[0].keyHash: keyHash must use sha256:")
    cfg.write_text(CONFIG_YAML.replace("port: 11435", 'port: "x"'))
    done = run_cli("validate-config", "-c", str(cfg))
    assert done.returncode == 1
    assert done.stderr == f"{cfg}:1: server.port: must be an integer >= 1 and <= 65535, got a string\n"


def test_validate_config_refuses_unknown_keys_and_prints_warnings(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG_YAML.replace("port: 11435", "port: 11435, prot: 8080")
                   .replace("sizeGb: 2,", "sizeGb: 2, priorty: 50,"))
    done = run_cli("validate-config", "-c", str(cfg))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (f"{cfg}:1: server.prot: unknown key (did you mean 'port'?)\n"
                           f"{cfg}:11: models[0].priorty: unknown key (did you mean 'priority'?)\n")
    cfg.write_text(CONFIG_YAML.replace("sizeGb: 2,", "sizeGb: 2, purpose: [sumarize],"))
    done = run_cli("validate-config", "-c", str(cfg))
    assert (done.returncode, done.stdout) == (0, f"Config is valid: {cfg}\n")
    assert done.stderr.startswith(f"warning: {cfg}:11: models[0].purpose[0]: 'sumarize' is neither a core task type")
    assert done.stderr.endswith(" (did you mean 'summarize'?)\n") and done.stderr.count("\n") == 1


def test_serve_starts_with_unknown_keys_and_warns_once_per_key(tmp_path):
    (tmp_path / "c.yaml").write_text(CONFIG_YAML.replace("port: 11435", "port: 11435, prot: 8080")
                                     + "logging: {level: debug}\n")
    served = Served([sys.executable, "-m", "ollama_agent_router", "serve", "-c", "c.yaml", "--simulate",
                     "--port", "0"], cwd=tmp_path)
    try:
        records = [json.loads(line) for line in served.output.decode().splitlines() if line.startswith("{")]
        warnings = [r["message"] for r in records if r["event"] == "config_warning"]
        assert warnings == [f"{tmp_path / 'c.yaml'}:14: logging: unknown key",
                            f"{tmp_path / 'c.yaml'}:1: server.prot: unknown key (did you mean 'port'?)"]
    finally:
        assert served.stop() == 0


def test_config_lookup_errors(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = cli_env(HOME=str(home))
    done = run_cli("validate-config", cwd=tmp_path, env=env)
    tried = ", ".join([str(tmp_path / "ollama-agent-router.yaml"), str(home / ".config/ollama-agent-router/config.yaml"),
                       "/etc/ollama-agent-router/config.yaml"])
    assert (done.returncode, done.stderr) == (1, f"No config file found. Tried: {tried}\n")
    done = run_cli("serve", cwd=tmp_path, env=env)
    assert (done.returncode, done.stderr) == (1, f"No config file found. Tried: {tried}\n")
    # An explicit path that does not exist is an error, even when a default location has a config.
    (tmp_path / "ollama-agent-router.yaml").write_text(CONFIG_YAML)
    for args in (["serve", "-c", "missing.yaml"], ["--config", "missing.yaml", "serve"],
                 ["validate-config", "-c", "missing.yaml"]):
        done = run_cli(*args, cwd=tmp_path, env=env)
        assert (done.returncode, done.stderr) == (1, f"Config file not found: {tmp_path / 'missing.yaml'}\n")


def test_init_writes_a_valid_starter_and_refuses_to_overwrite(tmp_path):
    done = run_cli("init", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "Wrote ./ollama-agent-router.yaml\n")
    assert run_cli("validate-config", cwd=tmp_path).returncode == 0
    done = run_cli("init", "-o", "sub/x.yaml", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "Wrote sub/x.yaml\n")
    assert run_cli("validate-config", "-c", "sub/x.yaml", cwd=tmp_path).returncode == 0
    before = (tmp_path / "sub/x.yaml").read_text()
    done = run_cli("init", "-o", "sub/x.yaml", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (1, f"Refusing to overwrite existing config: {tmp_path / 'sub/x.yaml'}\n")
    assert (tmp_path / "sub/x.yaml").read_text() == before


def test_log_level_comes_from_the_flag_then_LOG_LEVEL_then_info(monkeypatch):
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    assert log_level(None) == "info" and log_level("DEBUG") == "debug"
    monkeypatch.setenv("LOG_LEVEL", "warn")
    assert log_level(None) == "warn" and log_level("error") == "error"
    monkeypatch.setenv("LOG_LEVEL", "trace")  # pino's names, as the original's users set them
    assert log_level(None) == "debug"
    monkeypatch.setenv("LOG_LEVEL", "verbose")
    with pytest.raises(CliError, match=r"^error: unknown log level 'verbose' \(LOG_LEVEL\): use debug, info"):
        log_level(None)
    assert log_level("info") == "info"  # the flag wins even over a bad variable
    done = run_cli("serve", env=cli_env(LOG_LEVEL="verbose"))
    assert (done.returncode, done.stderr) == (1, "error: unknown log level 'verbose' (LOG_LEVEL): use debug, info,"
                                                 " warning or error\n")


def test_serve_overrides_and_graceful_stop(tmp_path):
    (tmp_path / "c.yaml").write_text(CONFIG_YAML)
    # The "listening" line is at info: seen only because --log-level wins over LOG_LEVEL.
    served = Served([sys.executable, "-m", "ollama_agent_router", "serve", "-c", "c.yaml", "--simulate",
                     "--host", "127.0.0.1", "--port", "0", "--log-level", "debug"], cwd=tmp_path,
                    env=cli_env(LOG_LEVEL="error"))
    try:
        status, body = post_json(served.port, "/v1/chat/completions", chat_body("Hello there"))
        assert status == 200 and body["router"]["selectedModel"] == "llama3.2:3b"
    finally:
        assert served.stop() == 0


# --- Client commands ----------------------------------------------------------------------------------


def test_join_url_like_the_original():
    assert join_url("http://h:1/prefix", "/api/", "/v1/jobs") == "http://h:1/prefix/api/v1/jobs"
    assert join_url("http://h:1/", "/", "/v1/jobs") == "http://h:1/v1/jobs"
    assert join_url("https://[::1]:9", "x", "v1/router/status") == "https://[::1]:9/x/v1/router/status"


def client(stack, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run_cli("-u", f"http://127.0.0.1:{stack.port}", *args, env=env)


def test_status_models_gpu_tables_and_json(stack):
    done = client(stack, "status")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Node: test-node (http, base path /)\nOllama: reachable\n"
                                  "Queue: 0 waiting, 0 running\nGPU: Test GPU, 20480 MB total, ")
    assert done.stdout.splitlines()[3].endswith(" (simulated)")
    assert "MODEL" in done.stdout and VIBE in done.stdout
    done = client(stack, "models")
    assert done.returncode == 0
    header, *rows = done.stdout.splitlines()
    assert header.split()[:3] == ["MODEL", "SIZE", "GB"] and len(rows) == 4
    assert rows[0].split()[:3] == [VIBE, "3.6", "low"] and " yes " in rows[0]  # installed in the simulator
    done = client(stack, "gpu")
    assert done.returncode == 0 and "Test GPU: simulated" in done.stdout and "20480 MB" in done.stdout
    for command, path in (("status", "/v1/router/status"), ("models", "/v1/router/models"), ("gpu", "/v1/router/gpu")):
        done = client(stack, "--json", command)
        assert done.returncode == 0 and done.stdout.startswith("{\n  ")
        assert set(json.loads(done.stdout)) == set(stack.request("GET", path).json())


def test_status_says_first_that_ollama_is_down_and_never_shows_a_static_gpu_as_measured(stack_factory):
    """Issue 14 part 5: the configured "RTX 4000, 20480 MB free" on a host without a GPU is no reading."""
    stack = stack_factory({"gpu": {"name": "RTX 4000"}}, simulated_gpu=False)  # monitor off: a static snapshot
    stack.call(stack.sim.stop())
    stack.app.snapshot.poke()
    wait_for(lambda: not stack.app.snapshot.ollama_reachable)
    done = client(stack, "status")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Ollama: NOT REACHABLE from the router; requests fail until it answers")
    assert lines[3] == "GPU: RTX 4000, 20480 MB total (from the config, not measured)"
    done = client(stack, "gpu")
    assert done.stdout.startswith("RTX 4000: from the config, not measured\n")
    assert done.stdout.splitlines()[3].split() == ["0", "RTX", "4000", "20480", "MB", "-", "-", "-"]


def test_gpu_figures_name_their_source():
    gpu = {"name": "H100", "vramTotalMb": 81559, "vramFreeMb": 60000, "utilizationPct": 12, "snapshotAgeMs": 40}
    body = {"nodeId": "n", "ollama": {"reachable": True}, "queue": {}, "config": {}}
    for source, said in (("nvml", "measured by NVML"), ("nvidia-smi", "measured by nvidia-smi")):
        text = render_status({**body, "gpu": {**gpu, "source": source}})
        assert text.splitlines()[3] == f"GPU: H100, 81559 MB total, 60000 MB free, 12% busy ({said})"
        assert render_gpu({**gpu, "source": source}).startswith(f"H100: {said}, read 40 ms ago\n")
    assert render_status({**body, "gpu": gpu}).splitlines()[3] == "GPU: H100, 81559 MB total, 60000 MB free, 12% busy"


def async_job(stack) -> str:
    reply = stack.request("POST", "/v1/chat/completions", chat_body("Write a Python function", mode="async"))
    assert reply.status == 202
    return reply.json()["id"]


def wait_until_finished(stack, job_id: str) -> str:
    def finished() -> str | None:
        status = stack.request("GET", f"/v1/jobs/{job_id}").json()["status"]
        return status if status not in ("queued", "running") else None

    return wait_for(finished, 20)


def test_job_commands(stack):
    stack.sim.inject(QWEN, Fault(first_byte_delay_s=30, times=None))  # keeps the job pending
    job_id = async_job(stack)
    done = client(stack, "jobs")
    assert done.returncode == 0 and done.stdout.startswith("ID ") and job_id in done.stdout
    done = client(stack, "job", job_id)
    assert done.returncode == 0 and f"id:             {job_id}\n" in done.stdout
    # A pending result counts as success, as in the original.
    done = client(stack, "result", job_id)
    assert done.returncode == 0 and done.stdout in (f"Job {job_id} is queued; no result yet.\n",
                                                    f"Job {job_id} is running; no result yet.\n")
    done = client(stack, "--json", "result", job_id)
    assert done.returncode == 0 and json.loads(done.stdout)["status"] in ("queued", "running")
    done = client(stack, "cancel", job_id)
    assert (done.returncode, done.stdout) == (0, f"Job {job_id}: cancelled\n")
    # --json is the original's pretty JSON of the body, byte for byte.
    done = client(stack, "job", job_id, "--json")
    assert done.stdout == json.dumps(stack.request("GET", f"/v1/jobs/{job_id}").json(), indent=2) + "\n"
    assert json.loads(done.stdout)["status"] == "cancelled"


def test_finished_job_results(stack):
    job_id = async_job(stack)
    assert wait_until_finished(stack, job_id) == "succeeded"
    done = client(stack, "result", job_id)
    assert (done.returncode, done.stdout) == (0, f"Simulated reply from {QWEN}.\n")
    done = client(stack, "--json", "result", job_id)
    assert done.returncode == 0 and json.loads(done.stdout)["choices"][0]["message"]["content"]

    stack.sim.inject(QWEN, Fault(status=500, times=None))
    failed = async_job(stack)
    assert wait_until_finished(stack, failed) == "failed"
    done = client(stack, "result", failed)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("error: 500 job failed: ") and done.stderr.count("\n") == 1
    assert "{" not in done.stderr, done.stderr  # a readable line, never the raw JSON


def test_unknown_job_and_url_encoded_ids(stack):
    for job_id in ("job_nope", "a/../../v1/router/status", "x?y#z"):
        done = client(stack, "job", job_id)
        assert (done.returncode, done.stdout, done.stderr) == (1, "", "error: 404 job_not_found: Job not found\n")


def test_base_path_and_url_prefix(stack_factory):
    stack = stack_factory({"server": {"basePath": "/api"}})
    assert client(stack, "status").returncode == 1
    assert client(stack, "--base-path", "/api/", "status").returncode == 0
    assert run_cli("-u", f"http://127.0.0.1:{stack.port}/api", "status").returncode == 0


def test_connection_failure_is_one_line():
    done = run_cli("-u", "http://127.0.0.1:9", "--timeout", "5", "status")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("fetch failed: GET http://127.0.0.1:9/v1/router/status: ")
    assert len(done.stderr.splitlines()) == 1


def test_client_commands_on_a_secured_router(stack_factory):
    stack = stack_factory(SECURED)
    for args, env in ((["--api-key", KEY, "status"], None), (["status", "--api-key", KEY], None),
                      (["status"], cli_env(OAR_API_KEY=KEY)), (["--api-key", KEY, "jobs"], None)):
        done = client(stack, *args, env=env)
        assert done.returncode == 0, done.stderr
    assert not any(KEY in line for line in stack.log_lines)
    for args in (["status"], ["models"], ["jobs"], ["job", "j1"], ["cancel", "j1"], ["route", "hi"]):
        done = client(stack, *args)
        assert (done.returncode, done.stderr) == (1, "error: 401 api_key_required: API key required\n"), args
    wrong = client(stack, "--api-key", "wrong-key-0123456789", "status")
    assert (wrong.returncode, wrong.stderr) == (1, "error: 401 invalid_api_key: Invalid API key\n")


def test_https_router(stack_factory, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    stack = stack_factory({"server": {"https": {"enabled": True, "certPath": str(cert), "keyPath": str(key)}}})
    url = f"https://127.0.0.1:{stack.port}"
    done = run_cli("-u", url, "status")
    assert done.returncode == 1 and "certificate" in done.stderr and "--ca-cert" in done.stderr
    assert run_cli("-u", url, "--ca-cert", str(cert), "status").returncode == 0
    assert run_cli("-u", url, "--insecure", "status").returncode == 0
    done = run_cli("-u", url, "--ca-cert", str(tmp_path / "missing.pem"), "status")
    assert done.returncode == 1 and done.stderr.startswith(f"cannot read --ca-cert {tmp_path / 'missing.pem'}")


def test_route_command(stack):
    done = client(stack, "route", "Write a Python function", "--task-type", "code_generate")
    assert done.returncode == 0, done.stderr
    assert "code_generate" in done.stdout
    done = client(stack, "--json", "route", "Hello there")
    assert done.returncode == 0 and isinstance(json.loads(done.stdout), dict)


def test_route_rendering_shows_whatever_the_router_sends():
    text = render_route({
        "taskType": "code_generate", "complexity": "medium", "signals": ["code"], "mode": "sync",
        "candidates": [
            {"model": QWEN, "score": 281.5, "components": {"routePosition": 50, "priority": 70, "tag": 0, "loaded": 20},
             "loaded": True},
            {"model": VIBE, "score": 200.125, "components": {"routePosition": 0, "priority": 50, "tag": 0, "loaded": 0},
             "loaded": False}],
        "blocked": [{"model": "gpt-oss:20b", "reason": "busy"}],
    })
    lines = text.splitlines()
    assert lines[:4] == ["taskType: code_generate", "complexity: medium", "signals: code", "mode: sync"]
    assert lines[5] == "candidates:"
    # All-zero parts are left out; a part named like a field is qualified.
    assert lines[6].split() == ["model", "score", "routePosition", "priority", "components.loaded", "loaded"]
    assert lines[7].split() == [QWEN, "281.5", "50", "70", "20", "yes"]
    assert lines[8].split() == [VIBE, "200.125", "0", "50", "0", "no"]
    assert lines[-1].split() == ["gpt-oss:20b", "busy"]


# --- API keys -----------------------------------------------------------------------------------------


def test_gen_key_and_hash_key():
    done = run_cli("gen-key")
    assert done.returncode == 0 and "shown only now" in done.stderr
    fields = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert set(fields) == {"key", "keyHash"}
    assert fields["keyHash"] == "sha256:" + hashlib.sha256(fields["key"].encode()).hexdigest()
    done = run_cli("hash-key", fields["key"])
    assert (done.returncode, done.stdout) == (0, fields["keyHash"] + "\n")
    done = run_cli("hash-key", stdin=fields["key"] + "\n")  # from stdin: not in the shell history
    assert (done.returncode, done.stdout) == (0, fields["keyHash"] + "\n")
    generated = json.loads(run_cli("gen-key", "--json").stdout)
    assert set(generated) == {"key", "keyHash"}


def test_hash_key_refuses_short_keys():
    done = run_cli("hash-key", "short")
    assert done.returncode == 1 and done.stdout == "" and "at least 16" in done.stderr


def test_simulate_command(tmp_path):
    served = Served([sys.executable, "-m", "ollama_agent_router", "simulate", "--port", "0"], cwd=tmp_path,
                    event="simulator_listening")
    try:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
        conn.request("GET", "/api/tags")
        response = conn.getresponse()
        assert response.status == 200 and len(json.loads(response.read())["models"]) == len(bundled_config().models)
        conn.close()
    finally:
        assert served.stop() == 0
    done = run_cli("simulate", "--host", "203.0.113.1", "--port", "1", cwd=tmp_path)  # not this host's address
    assert done.returncode == 1 and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
