"""The single-file zipapp runs on a bare CPython: ``-I -S`` means no site-packages and no environment."""

from __future__ import annotations

import ast
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

from ollama_agent_router import __main__ as entry
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


def old_interpreters() -> list[str]:
    """Python 3s older than 3.10 on this host (pyenv's or on PATH), to run the real refusal with."""
    candidates = [shutil.which(f"python3.{minor}") for minor in range(6, 10)]
    candidates += glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python"))  # the archive says python3
    found = []
    for candidate in filter(None, candidates):
        done = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2] < (3, 10))"],
                              capture_output=True, text=True, check=False)
        if done.stdout.strip() == "True":
            found.append(candidate)
    return found


def test_old_python_is_refused_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(sys, "version_info", (3, 9, 18, "final", 0))
    assert entry.main() == 1
    out, err = capsys.readouterr()
    assert out == "" and err == f"ollama-agent-router needs Python 3.10 or newer, but {sys.executable} is Python 3.9\n"
    monkeypatch.undo()
    monkeypatch.setattr(sys, "argv", ["ollama-agent-router", "--version"])
    assert entry.main() == 0 and capsys.readouterr().out == f"{__version__}\n"


def test_the_entry_points_parse_on_old_pythons(pyz):
    """What an old interpreter reads before the check (the package's ``__init__`` and ``__main__``) has no
    syntax newer than 3.7, the oldest ``ast`` checks for; the zipapp's ``__main__`` is the same file."""
    package = Path(entry.__file__).parent
    for name in ("__init__.py", "__main__.py"):
        source = (package / name).read_text()
        ast.parse(source, filename=name, feature_version=(3, 7))
        assert "from __future__" not in source  # `annotations` is a SyntaxError before 3.7
    assert zipfile.ZipFile(pyz).read("__main__.py") == (package / "__main__.py").read_bytes()


@pytest.mark.parametrize("python", old_interpreters() or [pytest.param(None, marks=pytest.mark.skip("no old Python"))])
def test_old_pythons_get_one_line(pyz, python, tmp_path):
    expected = "ollama-agent-router needs Python 3.10 or newer, but "
    done = bare(python, pyz, "--version", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (1, "") and done.stderr.startswith(expected)
    assert done.stderr.count("\n") == 1
    done = subprocess.run([python, "-m", "ollama_agent_router", "--version"], cwd=Path(entry.__file__).parent.parent,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 1 and done.stderr.startswith(expected) and done.stderr.count("\n") == 1


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
