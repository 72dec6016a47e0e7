"""``configure``: detection with fake probes, generation from plain data, exact layouts, the wizard's flow,
and end to end against the simulator on a custom OLLAMA_HOST."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import QWEN, VIBE, chat_body
from test_cli import Served, cli_env, post_json, run_cli

from ollama_agent_router.access.keys import hash_key
from ollama_agent_router.commands.configure import Options, Prompter, configure, render_detection, render_summary
from ollama_agent_router.commands.detect import (
    Detection,
    Gpu,
    Host,
    OllamaModel,
    detect,
    ollama_base_url,
)
from ollama_agent_router.commands.generate import (
    NO_MODELS,
    ConfigureError,
    access_section,
    generate,
    infer_role,
    load_answers,
    to_yaml,
)
from ollama_agent_router.config.parse import parse_config
from ollama_agent_router.config.reader import ConfigError, load_yaml
from ollama_agent_router.gpu import GpuDevice, GpuUnavailable

FIXTURES = Path(__file__).parent / "fixtures" / "nvidia-h200"
MODELS = (OllamaModel("qwen2.5-coder:7b", 4.7), OllamaModel("gpt-oss:20b", 14), OllamaModel("llama3.2:3b", 2),
          OllamaModel("deepseek-coder:6.7b", 3.8))
H200 = Gpu(name="NVIDIA H200", vram_total_mb=143771, count=1, source="nvml", smi_path="/usr/bin/nvidia-smi")


def detection(**kw) -> Detection:
    base = Detection(binary="/usr/bin/ollama", binary_confidence="high", base_url="http://127.0.0.1:11434",
                     base_url_source="default", reachable=True, models=MODELS, loaded=(), gpu=None,
                     platform="linux", arch="x64", cpu_cores=8, ram_mb=32768)
    return replace(base, **kw)


def valid(config: dict) -> None:
    text = to_yaml(config)
    parse_config(load_yaml(text), source="/tmp/generated.yaml", text=text)


# --- OLLAMA_HOST, binary, probes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,url",
    [
        ("", "http://127.0.0.1:11434"),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("0.0.0.0:8080", "http://127.0.0.1:8080"),
        (":11434", "http://127.0.0.1:11434"),
        ("example.com", "http://example.com:11434"),
        ("http://10.0.0.5:11434", "http://10.0.0.5:11434"),
        ("http://ollama.lan", "http://ollama.lan:80"),  # with a scheme Ollama takes the scheme's port
        ("https://ollama.lan", "https://ollama.lan:443"),
        ("[::]:11434", "http://[::1]:11434"),
        ("::1", "http://[::1]:11434"),
        ("host:notaport", "http://host:11434"),
        ("  http://h:1/prefix ", "http://h:1/prefix"),
    ],
)
def test_ollama_host_like_ollama(value, url):
    assert ollama_base_url(value) == url


def fake_host(**kw) -> Host:
    def no_nvml():
        raise GpuUnavailable("no driver")

    def no_http(method, url, body, timeout):
        raise OSError("connection refused")

    defaults = {"env": {"PATH": "/nowhere"}, "platform": "linux", "machine": "x86_64", "cpu_count": lambda: 8,
                "ram_mb": lambda: 32768, "is_executable": lambda path: False, "http_json": no_http,
                "run": lambda argv, timeout: (1, ""), "nvml_devices": no_nvml}
    return Host(**{**defaults, **kw})


def test_binary_lookup():
    found = {"/opt/bin/ollama", "/usr/local/bin/ollama"}
    det = detect(fake_host(env={"PATH": "/a:/opt/bin"}, is_executable=found.__contains__))
    assert (det.binary, det.binary_confidence) == ("/opt/bin/ollama", "high")
    det = detect(fake_host(is_executable=found.__contains__))
    assert (det.binary, det.binary_confidence) == ("/usr/local/bin/ollama", "medium")
    det = detect(fake_host())
    assert (det.binary, det.binary_confidence, det.reachable, det.models) == (None, "low", False, ())
    assert (det.platform, det.arch, det.cpu_cores, det.ram_mb, det.gpu) == ("linux", "x64", 8, 32768, None)


def test_gpu_nvml_first_then_nvidia_smi():
    def never(*_):
        raise AssertionError("nvidia-smi must not run when NVML works")

    device = GpuDevice(0, "NVIDIA H200", None, 143771.0, 0.0, 143156.0, 0.0)
    det = detect(fake_host(nvml_devices=lambda: [device, device], run=never))
    assert det.gpu == Gpu(name="2 x NVIDIA H200", vram_total_mb=287542, count=2, source="nvml", smi_path=None)

    smi = "/usr/bin/nvidia-smi"
    calls = []

    def run(argv, timeout):
        calls.append(argv)
        return 0, (FIXTURES / "query-gpu.csv").read_text()

    det = detect(fake_host(env={"PATH": "/usr/bin"}, is_executable=lambda p: p == smi, run=run))
    assert det.gpu == Gpu(name="NVIDIA H200", vram_total_mb=143771, count=1, source="nvidia-smi", smi_path=smi)
    assert calls[0][0] == smi and calls[0][1].startswith("--query-gpu=")


def test_macos_skips_nvidia_probes():
    def never():
        raise AssertionError("no NVIDIA probe on macOS")

    det = detect(fake_host(platform="darwin", machine="arm64", nvml_devices=never, ram_mb=lambda: 32768))
    assert det.gpu is None and det.apple_silicon
    config = generate(det, {"models": {"items": [{"name": "llama3.2:3b"}]}})
    assert config["gpu"]["name"] == "Apple Silicon / macOS GPU" and config["gpu"]["vramTotalMb"] == 21845
    # Unified memory is a GPU: not the CPU-only profile.
    assert config["models"][0]["maxConcurrent"] == 2 and config["router"]["syncMaxQueueTimeMs"] == 250


def ollama_api(show: dict | None, calls: list):
    tags = {"models": [{"name": "qwen2.5-coder:7b", "size": 4_683_087_332}, {"name": "nomic-embed-text:latest",
                                                                              "size": 274_302_450},
                       {"name": "mystery:13b", "size": 7_400_000_000}]}

    def http_json(method, url, body, timeout):
        calls.append((method, url.rsplit("/api/", 1)[1], body))
        if url.endswith("/api/tags"):
            return 200, tags
        if url.endswith("/api/ps"):
            return 200, {"models": [{"name": "qwen2.5-coder:7b"}]}
        if show is None:
            return 404, {"error": "not found"}
        return 200, show[body["model"]]

    return http_json


def test_models_with_capabilities():
    show = {
        "qwen2.5-coder:7b": {"capabilities": ["completion", "tools", "insert"], "model_info": {"qwen2.context_length": 32768}},
        "nomic-embed-text:latest": {"capabilities": ["embedding"]},
        "mystery:13b": {"capabilities": ["completion", "insert"], "model_info": {"llama.context_length": 16384}},
    }
    calls: list = []
    det = detect(fake_host(env={"OLLAMA_HOST": "0.0.0.0:11500"}, http_json=ollama_api(show, calls)))
    assert (det.base_url, det.base_url_source, det.reachable) == ("http://127.0.0.1:11500", "env", True)
    assert det.models == (OllamaModel("qwen2.5-coder:7b", 4.7, ("completion", "tools", "insert"), 32768),
                          OllamaModel("nomic-embed-text:latest", 0.3, ("embedding",), None),
                          OllamaModel("mystery:13b", 7.4, ("completion", "insert"), 16384))
    assert det.loaded == ("qwen2.5-coder:7b",)
    assert calls[0] == ("GET", "tags", None) and calls[1] == ("POST", "show", {"model": "qwen2.5-coder:7b"})
    models = generate(det, {})["models"]
    # The embedding model cannot chat; "insert" makes a code model of an unknown name; no "tools", no tool_use.
    assert [m["name"] for m in models] == ["qwen2.5-coder:7b", "mystery:13b"]
    assert models[1]["purpose"] == ["code_generate", "code_fix"] and models[1]["priority"] == 70
    assert models[1]["maxContext"] == 16384 and models[0]["maxContext"] == 32768


def test_show_is_not_retried_on_an_old_server():
    calls: list = []
    det = detect(fake_host(http_json=ollama_api(None, calls)))
    assert [c[1] for c in calls] == ["tags", "show", "ps"]
    assert all(m.capabilities is None for m in det.models) and len(det.models) == 3


# --- Generation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,size,capabilities,role",
    [
        ("qwen2.5-coder:7b", 4.7, None, "code"),
        ("gpt-oss:20b", 14, None, "heavy"),
        ("llama3.2:3b", 2, None, "fast"),
        ("qwen3:32b", 20, None, "heavy"),  # the original called every qwen and deepseek a code model
        ("deepseek-r1:70b", 42, None, "heavy"),
        ("qwen3:8b", 5.2, ("completion", "tools", "thinking"), "fast"),
        ("granite:8b", 4.9, ("completion", "insert"), "code"),
        ("code-reviewer:7b", 4, None, "review"),
        ("toolformer:3b", 2, None, "tool"),
    ],
)
def test_infer_role(name, size, capabilities, role):
    assert infer_role(name, size, capabilities) == role


def test_nvidia_host():
    config = generate(detection(gpu=H200, cpu_cores=32, ram_mb=256000), {})
    gpu = config["gpu"]
    assert (gpu["provider"], gpu["vramTotalMb"], gpu["vramSafetyReserveMb"], gpu["requireGpuOnlyByDefault"]) == \
        ("nvidia", 143771, 2048, True)
    assert gpu["monitor"] == {"enabled": True, "intervalMs": 5000, "nvidiaSmiPath": "/usr/bin/nvidia-smi"}
    assert config["routes"]["agentic_reasoning"][0] == "gpt-oss:20b"
    assert config["routes"]["code_review"] == ["qwen2.5-coder:7b", "deepseek-coder:6.7b"]
    assert config["router"]["heavyLoadGpuFreeMbThreshold"] == 4096 and config["router"]["heavyLoadQueueDepth"] == 3
    assert config["queue"]["globalMaxConcurrent"] == 4  # large machine; 5 model slots
    assert [m["name"] for m in config["models"]] == [m.name for m in MODELS]
    assert list(config) == ["server", "access", "ollama", "gpu", "router", "jobs", "models", "routes", "queue"]
    valid(config)


def test_cpu_only_host_is_cpu_friendly():
    config = generate(detection(models=MODELS[2:]), {})
    assert config["gpu"]["provider"] == "none" and config["gpu"]["monitor"]["enabled"] is False
    assert config["queue"] | {} == {"globalMaxConcurrent": 1, "globalMaxQueued": 50, "perUserMaxQueued": 10,
                                    "defaultPriority": "normal", "timeoutMs": 180000}
    router = config["router"]
    assert (router["defaultMode"], router["syncMaxQueueTimeMs"], router["heavyLoadQueueDepth"]) == ("auto", 100, 1)
    assert all(m["maxConcurrent"] == 1 for m in config["models"])
    valid(config)


def test_no_models():
    with pytest.raises(ConfigureError, match=NO_MODELS):
        generate(detection(models=()), {})
    with pytest.raises(ConfigureError, match=NO_MODELS):
        generate(detection(), {"models": {"mode": "manual"}})


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "answers.yaml"
    path.write_text(text)
    return str(path)


def test_answers_honour_every_model_field(tmp_path):
    answers, warnings = load_answers(write(tmp_path, """\
server: {nodeId: gex44-a, port: 11500, https: false}
gpu: {provider: nvidia, name: RTX 4000 SFF Ada, vramTotalMb: 20480, monitor: {nvidiaSmiPath: /opt/nvidia-smi}}
queue: {globalMaxQueued: 7}
models:
  mode: manual
  items:
    - {name: "qwen2.5-coder:7b", role: code, sizeGb: 4.7, priority: 71, maxConcurrent: 3, tags: [code],
       aliases: [coder], purpose: [code_generate, planning], costClass: low, timeoutMs: 1234, pinned: true}
    - {name: "vibe:1.5b"}
routes:
  planning: ["qwen2.5-coder:7b"]
extra: 1
rutes: {}
"""))
    assert warnings == [f"{tmp_path / 'answers.yaml'}:12: extra: unknown key, ignored",
                        f"{tmp_path / 'answers.yaml'}:13: rutes: unknown key (did you mean 'routes'?), ignored"]
    config = generate(detection(), answers)
    qwen, vibe = config["models"]
    assert qwen == {"name": "qwen2.5-coder:7b", "sizeGb": 4.7, "purpose": ["code_generate", "planning"], "priority": 71,
                    "maxConcurrent": 3, "defaultContext": 8192, "maxContext": 32768, "timeoutMs": 1234,
                    "costClass": "low", "exclusive": False, "allowWhenBusy": True, "tags": ["code"],
                    "aliases": ["coder"], "pinned": True}
    assert (vibe["sizeGb"], vibe["costClass"], vibe["maxConcurrent"]) == (2, "low", 2)
    assert config["routes"]["planning"] == ["qwen2.5-coder:7b"]  # beyond the core task types, kept
    assert config["server"]["nodeId"] == "gex44-a" and config["server"]["https"] == {"enabled": False}
    # Merged one level deep: the answer sets the path, detection (no GPU here) keeps the monitor off.
    assert config["gpu"]["monitor"] == {"enabled": False, "intervalMs": 5000, "nvidiaSmiPath": "/opt/nvidia-smi"}
    assert config["queue"]["globalMaxQueued"] == 7
    valid(config)


def test_route_fallback_has_no_duplicates():
    models = (OllamaModel("a:1b", 1), OllamaModel("b:1b", 1))
    routes = generate(detection(models=models), {})["routes"]
    assert routes["code_generate"] == ["a:1b", "b:1b"] and routes["agentic_reasoning"] == ["a:1b", "b:1b"]


@pytest.mark.parametrize(
    "text,error",
    [
        ("models:\n  items:\n    - name: x\n      role: wizard\n",
         "answers.yaml:4: models.items[0].role: unknown role 'wizard' (expected fast, code, review, heavy, tool)"),
        ("models:\n  items:\n    - sizeGb: 2\n", "answers.yaml:3: models.items[0].name: is required"),
        ("server: 3\n", "answers.yaml:1: server: must be a mapping"),
        ("models: {mode: auto}\n", "answers.yaml:1: models.mode: must be manual or detected"),
        ("routes: {triage: x}\n", "answers.yaml:1: routes.triage: must be a list of model names"),
        ("server: {https: yes}\n", "answers.yaml:1: server.https: must be true, false or a mapping"),
        ("- a\n", "answers.yaml:1: (top level): must be a mapping of sections"),
    ],
)
def test_answers_errors_name_line_and_key(tmp_path, text, error):
    with pytest.raises(ConfigError) as e:
        load_answers(write(tmp_path, text))
    assert e.value.errors == [str(tmp_path / error)]


def test_secured_access_holds_hashes_only():
    entry = {"id": "local-client", "name": "Local client", "keyHash": "sha256:" + "ab" * 32, "enabled": True,
             "scopes": ["standalone", "runtimeAgent"]}
    config = generate(detection(), {}, [entry])
    planes = config["access"]["managed"]["planes"]
    assert all(p["auth"] == {"requireApiKey": True, "anonymous": "reject"} for p in planes.values())
    assert config["access"]["managed"]["apiKeys"] == [entry]
    assert access_section([])["managed"]["planes"]["standalone"]["auth"] == {"requireApiKey": False, "anonymous": "allow"}
    valid(config)


# --- Exact layouts ------------------------------------------------------------------------------------


def test_detection_layout():
    det = detection(gpu=replace(H200, source="nvidia-smi"), models=MODELS[:2], ram_mb=64000, cpu_cores=16)
    assert render_detection(det) == """\
Detected environment

Ollama:
  binary: /usr/bin/ollama (command, high)
  base URL: http://127.0.0.1:11434 (default)
  reachable: yes
  models: 2 found

GPU:
  provider: nvidia
  name: NVIDIA H200
  VRAM: 143771 MB
  monitor: enabled through /usr/bin/nvidia-smi

Machine:
  OS: linux x64
  CPU cores: 16
  RAM: 64000 MB"""
    lines = render_detection(detection(binary=None, binary_confidence="low", reachable=False)).splitlines()
    assert lines[3] == "  binary: not found (not_found, low)" and lines[5] == "  reachable: no"
    assert lines[9:13] == ["  provider: none", "  name: No NVIDIA GPU detected", "  VRAM: 0 MB", "  monitor: disabled"]


def test_summary_layout():
    det = detection(gpu=H200)
    assert render_summary(generate(det, {}), "./out.yaml", det) == """
Configuration summary

Output: ./out.yaml
Server: http://127.0.0.1:11435/
Ollama: http://127.0.0.1:11434
GPU: nvidia, NVIDIA H200, 143771 MB VRAM
Models: 4 configured
Heavy model: gpt-oss:20b
Queue: global concurrency 3, max queued 100
Jobs: memory store, result TTL 86400s

Detected:
  Ollama models: 4
  Machine: linux x64
"""


# --- The wizard's flow (in process) -------------------------------------------------------------------


class Script:
    """Scripted answers for the Prompter; records the questions."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.questions: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.questions.append(prompt)
        if not self.answers:
            raise EOFError
        return self.answers.pop(0)


def test_overwrite_check_comes_before_any_question(tmp_path):
    out = tmp_path / "c.yaml"
    out.write_text("keep")
    script = Script()
    with pytest.raises(ConfigureError, match=f"Refusing to overwrite existing config: {out}"):
        configure(Options(output=str(out)), prompter=Prompter(script), detector=detection)
    assert script.questions == [] and out.read_text() == "keep"


def printed_keys(out: str) -> list[str]:
    return [line.strip() for line in out.split("shown only this once; the config holds its hash:\n")[1:]
            for line in line.splitlines()[:1]]


def test_interactive_corrections_and_keys(tmp_path, capsys):
    out = tmp_path / "deep" / "c.yaml"
    script = Script("n", "", "0.0.0.0", "99999", "8080", "/r/", "1000", "", "y", "")
    assert configure(Options(output=str(out)), prompter=Prompter(script), detector=detection) == 0
    assert script.questions == [
        "Use these detected values? [Y/n] ", "Ollama base URL (http://127.0.0.1:11434): ", "Server host (127.0.0.1): ",
        "Server port (11435): ", "Server port (11435): ", "Server base path (/): ", "GPU VRAM total MB (0): ",
        # Listening beyond loopback: securing is the default.
        "Require an API key on both planes (the key is generated and shown once)? [Y/n] ",
        "Also a separate key for a gateway such as Kong (runtimeAgent plane only)? [y/N] ",
        "Write this config? [Y/n] ",
    ]
    text = out.read_text()
    config = parse_config(load_yaml(text), source=str(out), text=text)
    assert (config.server.host, config.server.port, config.server.base_path) == ("0.0.0.0", 8080, "/r")
    assert config.gpu.vram_total_mb == 1000 and config.access.managed.planes["standalone"].auth.require_api_key
    printed = capsys.readouterr().out
    keys = printed_keys(printed)
    assert len(keys) == 2 and all(printed.count(key) == 1 and key not in text for key in keys)
    assert [k.id for k in config.access.managed.api_keys] == ["local-client", "gateway"]
    assert [k.key_hash for k in config.access.managed.api_keys] == [hash_key(key) for key in keys]
    assert "a port is a number from 1 to 65535" in printed and f"Wrote {out}" in printed


def test_declining_writes_nothing(tmp_path):
    out = tmp_path / "c.yaml"
    with pytest.raises(ConfigureError, match="Configuration cancelled"):
        configure(Options(output=str(out)), prompter=Prompter(Script("", "", "n")), detector=detection)
    assert not out.exists()
    with pytest.raises(ConfigureError, match="input ended"):
        configure(Options(output=str(out)), prompter=Prompter(Script()), detector=detection)


def test_without_ollama_the_wizard_asks_for_the_models(tmp_path, capsys):
    """Issue 14 part 5: no Ollama answering is no reason to stop; the user names the models."""
    out = tmp_path / "c.yaml"
    script = Script("", "phi3:mini", "2.2 GB", "2.2", "qwen2.5-coder:14b", "9", "", "n", "y")
    assert configure(Options(output=str(out)), prompter=Prompter(script),
                     detector=lambda: detection(models=(), reachable=False)) == 0
    assert script.questions[1:-2] == [
        "Model name (llama3.2:3b): ", "Size of phi3:mini in GB (2): ", "Size of phi3:mini in GB (2): ",
        "Another model name (empty when done): ", "Size of qwen2.5-coder:14b in GB (2): ",
        "Another model name (empty when done): "]
    printed = capsys.readouterr().out
    assert "No models detected: Ollama did not answer at http://127.0.0.1:11434. Name the models" in printed
    assert "the size is a number of gigabytes above 0, such as 4.7" in printed
    config = load_yaml(out.read_text())
    assert [(m["name"], m["sizeGb"], m["costClass"]) for m in config["models"]] == [
        ("phi3:mini", 2.2, "low"), ("qwen2.5-coder:14b", 9, "medium")]
    assert config["routes"]["code_generate"] == ["qwen2.5-coder:14b"]


def test_without_ollama_the_answers_file_gives_the_models(tmp_path):
    answers = write(tmp_path, "models: {items: [{name: phi3:mini, sizeGb: 2.2}]}\n")
    out = tmp_path / "c.yaml"
    assert configure(Options(output=str(out), answers=answers, interactive=False),
                     detector=lambda: detection(models=(), reachable=False)) == 0
    assert load_yaml(out.read_text())["models"][0]["name"] == "phi3:mini"


def test_dry_run_prints_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "c.yaml"
    assert configure(Options(output=str(out), interactive=False, dry_run=True), detector=detection) == 0
    printed = capsys.readouterr().out
    assert "\nConfiguration summary\n" in printed and "\nmodels:\n- name: qwen2.5-coder:7b\n" in printed
    assert not out.exists()


# --- End to end: real processes, the simulator as Ollama ----------------------------------------------


def test_detect_against_a_simulator_on_a_custom_ollama_host(stack):
    for value in (f"127.0.0.1:{stack.sim.port}", f"0.0.0.0:{stack.sim.port}", f"http://127.0.0.1:{stack.sim.port}"):
        done = run_cli("configure", "--detect", env=cli_env(OLLAMA_HOST=value))
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[:3] == ["Detected environment", "", "Ollama:"]
        assert lines[4:7] == [f"  base URL: http://127.0.0.1:{stack.sim.port} (env)", "  reachable: yes",
                              "  models: 4 found"]
    done = run_cli("configure", "--detect", env=cli_env(OLLAMA_HOST="127.0.0.1:9"))
    assert done.returncode == 0 and "  reachable: no\n  models: 0 found\n" in done.stdout


def test_generated_from_detection_validates(stack, tmp_path):
    done = run_cli("configure", "-y", "-o", "gen.yaml", cwd=tmp_path, env=cli_env(OLLAMA_HOST=f"127.0.0.1:{stack.sim.port}"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("\nConfiguration summary\n\nOutput: gen.yaml\n") and done.stdout.endswith("Wrote gen.yaml\n")
    assert "Models: 4 configured" in done.stdout
    assert run_cli("validate-config", "-c", "gen.yaml", cwd=tmp_path).returncode == 0
    done = run_cli("configure", "-y", "-o", "gen.yaml", cwd=tmp_path, env=cli_env(OLLAMA_HOST="127.0.0.1:9"))
    assert (done.returncode, done.stderr) == (1, "Refusing to overwrite existing config: gen.yaml\n")


ANSWERS = f"""\
server: {{nodeId: lab-1, port: 11435}}
jobs: {{resultTtlSeconds: 600}}
models:
  mode: manual
  items:
    - {{name: "{VIBE}", role: fast, sizeGb: 3.6}}
    - {{name: "{QWEN}", role: code, sizeGb: 4.7, priority: 80, tags: [code]}}
"""


def test_non_interactive_answers_output_is_valid_and_serves(tmp_path):
    (tmp_path / "answers.yaml").write_text(ANSWERS)
    env = cli_env(OLLAMA_HOST="127.0.0.1:9")  # nothing there: answers only
    done = run_cli("configure", "--non-interactive", "--answers", "answers.yaml", "-o", "conf/router.yaml",
                   cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "Models: 2 configured\n" in done.stdout and "Jobs: memory store, result TTL 600s\n" in done.stdout
    assert run_cli("validate-config", "-c", "conf/router.yaml", cwd=tmp_path).returncode == 0
    served = Served([sys.executable, "-m", "ollama_agent_router", "serve", "--simulate", "-c", "conf/router.yaml",
                     "--port", "0"], cwd=tmp_path)
    try:
        status, body = post_json(served.port, "/v1/chat/completions", chat_body("Write a Python function"))
        assert status == 200 and body["router"]["selectedModel"] == QWEN
    finally:
        assert served.stop() == 0
    done = run_cli("configure", "-y", "--answers", "answers.yaml", "--dry-run", "-o", "conf/router.yaml",
                   cwd=tmp_path, env=env)
    assert done.returncode == 0 and "nodeId: lab-1" in done.stdout and "Wrote" not in done.stdout


def test_command_line_errors(tmp_path):
    env = cli_env(OLLAMA_HOST="127.0.0.1:9")
    (tmp_path / "bad.yaml").write_text("models:\n  items:\n    - {name: x, role: wizard}\n")
    done = run_cli("configure", "-y", "--answers", "bad.yaml", cwd=tmp_path, env=env)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == ("bad.yaml:3: models.items[0].role: unknown role 'wizard'"
                           " (expected fast, code, review, heavy, tool)\n")
    done = run_cli("configure", "-y", cwd=tmp_path, env=env)
    assert (done.returncode, done.stderr) == (1, (
        "No models detected: Ollama did not answer at http://127.0.0.1:9. Start Ollama and run configure again,"
        " list the models in an answers file (--answers; models: {mode: manual, items: [{name: llama3.2:3b,"
        " sizeGb: 2}]}), or run configure without -y/--non-interactive to type them in.\n"))
    assert list(tmp_path.iterdir()) == [tmp_path / "bad.yaml"]


def test_interactive_over_a_pipe(tmp_path):
    (tmp_path / "answers.yaml").write_text(ANSWERS)
    done = run_cli("configure", "--answers", "answers.yaml", "-o", "c.yaml", cwd=tmp_path,
                   env=cli_env(OLLAMA_HOST="127.0.0.1:9"), stdin="y\nn\ny\n")
    assert done.returncode == 0, done.stderr
    assert "Use these detected values? [Y/n] " in done.stdout and "Write this config? [Y/n] Wrote c.yaml\n" in done.stdout
    done = run_cli("init", "--wizard", "-o", "c.yaml", cwd=tmp_path, stdin="")
    assert (done.returncode, done.stderr) == (1, "Refusing to overwrite existing config: c.yaml\n")


def test_secure_configuration_serves_with_its_key(tmp_path):
    (tmp_path / "answers.yaml").write_text(ANSWERS)
    done = run_cli("configure", "-y", "--secure", "--answers", "answers.yaml", "-o", "c.yaml", cwd=tmp_path,
                   env=cli_env(OLLAMA_HOST="127.0.0.1:9"))
    assert done.returncode == 0, done.stderr
    [key] = printed_keys(done.stdout)
    assert key not in (tmp_path / "c.yaml").read_text()
    served = Served([sys.executable, "-m", "ollama_agent_router", "serve", "--simulate", "-c", "c.yaml", "--port", "0"],
                    cwd=tmp_path)
    try:
        url = f"http://127.0.0.1:{served.port}"
        assert run_cli("-u", url, "--api-key", key, "status").returncode == 0
        assert run_cli("-u", url, "status").returncode == 1
    finally:
        assert served.stop() == 0
