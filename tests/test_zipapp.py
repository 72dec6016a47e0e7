"""The single-file zipapp runs on a bare CPython: ``-I -S`` means no site-packages and no environment."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import pytest
from conftest import chat_body
from test_cli import CONFIG_YAML, Served, post_json

from ollama_agent_router import __version__
from ollama_agent_router.commands.zipapp import build


def interpreters() -> list[str]:
    """This interpreter, plus a Python 3.10 (the oldest supported) where the host has one."""
    found = [sys.executable]
    candidates = [shutil.which("python3.10"), *glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/python"))]
    for candidate in filter(None, candidates):
        done = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 10))"],
                              capture_output=True, text=True, check=False)
        if done.stdout.strip() == "True" and sys.version_info[:2] != (3, 10):
            return found + [candidate]
    return found


@pytest.fixture(scope="module")
def pyz(tmp_path_factory) -> Path:
    return Path(build(str(tmp_path_factory.mktemp("dist") / "ollama-agent-router.pyz")))


def bare(python: str, pyz: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(cwd)}  # -I ignores PYTHONPATH; be sure anyway
    return subprocess.run([python, "-I", "-S", str(pyz), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def test_contents(pyz):
    names = set(zipfile.ZipFile(pyz).namelist())
    assert {"__main__.py", "pynvml.py", "yaml/__init__.py", "yaml/cyaml.py", "ollama_agent_router/cli.py",
            "ollama_agent_router/data/gex44.yaml", "ollama_agent_router/data/starter.yaml",
            "ollama_agent_router/data/dashboard.html",
            "ollama_agent_router/classifier_model.json"} <= names
    assert not [n for n in names if n.endswith((".so", ".pyc", ".pyd"))]


@pytest.mark.parametrize("python", interpreters())
def test_runs_on_a_bare_python(pyz, python, tmp_path):
    done = bare(python, pyz, "--version", cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{__version__}\n", "")
    (tmp_path / "c.yaml").write_text(CONFIG_YAML)
    done = bare(python, pyz, "validate-config", "-c", "c.yaml", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, f"Config is valid: {tmp_path / 'c.yaml'}\n"), done.stderr
    done = bare(python, pyz, "init", "-o", "starter.yaml", cwd=tmp_path)  # package data read from the archive
    assert done.returncode == 0 and bare(python, pyz, "validate-config", "-c", "starter.yaml", cwd=tmp_path).returncode == 0
    served = Served([python, "-I", "-S", str(pyz), "serve", "--simulate", "-c", "c.yaml", "--port", "0"], cwd=tmp_path,
                    env={"PATH": os.environ.get("PATH", "")})
    try:
        status, body = post_json(served.port, "/v1/chat/completions", chat_body("Hello there"))
        assert status == 200 and body["router"]["selectedModel"] == "llama3.2:3b"
        done = bare(python, pyz, "-u", f"http://127.0.0.1:{served.port}", "status", cwd=tmp_path)
        assert done.returncode == 0 and "llama3.2:3b" in done.stdout
        with urllib.request.urlopen(f"http://127.0.0.1:{served.port}/ui/", timeout=10) as page:  # package data
            assert page.status == 200 and b"<title>ollama-agent-router</title>" in page.read()
        done = bare(python, pyz, "-u", f"http://127.0.0.1:{served.port}", "top", "--once", cwd=tmp_path)
        assert done.returncode == 0 and "MODELS" in done.stdout and "llama3.2:3b" in done.stdout, done.stderr
    finally:
        assert served.stop() == 0
