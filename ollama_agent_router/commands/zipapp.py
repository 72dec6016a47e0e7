"""Build ``dist/ollama-agent-router.pyz``: one file that runs on a host with nothing but CPython >= 3.10.

It carries the package (with its data files) and the two runtime dependencies in pure-Python form:
PyYAML without its C extension (``yaml`` falls back to its Python code when ``_yaml`` is missing) and
nvidia-ml-py's ``pynvml.py`` (it loads the NVIDIA driver library with ctypes when the GPU is read).

    python -m ollama_agent_router.commands.zipapp [-o dist/ollama-agent-router.pyz]
    python3 dist/ollama-agent-router.pyz serve --config config.yaml
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import zipapp
from importlib import metadata

DEFAULT_OUTPUT = os.path.join("dist", "ollama-agent-router.pyz")
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", "*.so", "*.pyd", "*.dylib")
# Distribution name -> the importable module or package it provides.
_DEPENDENCIES = {"PyYAML": "yaml", "nvidia-ml-py": "pynvml"}


def _source(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise SystemExit(f"error: {module} is not installed here; install it (pip install PyYAML nvidia-ml-py) first")
    # A package's origin is its __init__.py; copy the whole directory.
    return os.path.dirname(spec.origin) if spec.submodule_search_locations else spec.origin


def _copy(source: str, stage: str) -> None:
    target = os.path.join(stage, os.path.basename(source))
    if os.path.isdir(source):
        shutil.copytree(source, target, ignore=_SKIP)
    else:
        shutil.copy2(source, target)


def _licences(stage: str) -> None:
    """Ship the dependencies' licence texts next to their code."""
    for dist_name in _DEPENDENCIES:
        try:
            files = metadata.files(dist_name) or []
        except metadata.PackageNotFoundError:
            continue
        for f in files:
            if "licen" in f.name.lower() and f.name.lower() != "licenses":
                os.makedirs(os.path.join(stage, "licenses"), exist_ok=True)
                shutil.copy2(f.locate(), os.path.join(stage, "licenses", f"{dist_name}-{f.name}"))


def build(output: str = DEFAULT_OUTPUT) -> str:
    """Write the zipapp and return its path."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the whole package, not commands/
    with tempfile.TemporaryDirectory() as stage:
        _copy(package, stage)
        for module in _DEPENDENCIES.values():
            _copy(_source(module), stage)
        _licences(stage)
        # The package's own entry point, version check first, runs the archive too.
        shutil.copy2(os.path.join(package, "__main__.py"), os.path.join(stage, "__main__.py"))
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        zipapp.create_archive(stage, output, interpreter="/usr/bin/env python3", compressed=True)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ollama_agent_router.commands.zipapp", description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--output", default=DEFAULT_OUTPUT, help=f"where to write it (default {DEFAULT_OUTPUT})")
    args = parser.parse_args(argv)
    path = build(args.output)
    print(f"Wrote {path} ({os.path.getsize(path) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
