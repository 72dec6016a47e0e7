"""fsutil: YAML 1.2 text, and atomic_write_text (all or nothing, private mode, no litter)."""

from __future__ import annotations

import os
import stat

import pytest
import yaml

from ollama_agent_router import fsutil
from ollama_agent_router.config import yaml12
from ollama_agent_router.fsutil import atomic_write_text


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_creates_parents_and_writes(tmp_path):
    target = tmp_path / "a" / "b" / "access.yaml"
    atomic_write_text(str(target), "version: 1\n")
    assert target.read_text() == "version: 1\n"
    assert mode(target) == 0o600


def test_replaces_content_with_exact_mode_and_no_temp_file(tmp_path):
    target = tmp_path / "access.yaml"
    target.write_text("old\n")
    os.chmod(target, 0o644)
    old_umask = os.umask(0o077)
    try:
        atomic_write_text(str(target), "néw\n", mode=0o640)
    finally:
        os.umask(old_umask)
    assert target.read_text(encoding="utf-8") == "néw\n"
    assert mode(target) == 0o640
    assert os.listdir(tmp_path) == ["access.yaml"]
    atomic_write_text(str(target), "again\n")
    assert mode(target) == 0o600 and os.listdir(tmp_path) == ["access.yaml"]


@pytest.mark.parametrize("step", ["fsync", "replace"])
def test_failure_keeps_the_old_file_and_removes_the_temp(tmp_path, monkeypatch, step):
    target = tmp_path / "access.yaml"
    target.write_text("old\n")

    def broken(*args):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(fsutil.os, step, broken)
    with pytest.raises(OSError, match="Input/output error"):
        atomic_write_text(str(target), "new\n")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["access.yaml"]


def test_directory_fsync_unsupported_is_ignored(tmp_path, monkeypatch):
    real_fsync = os.fsync
    calls = []

    def fsync(fd):
        calls.append(fd)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(22, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(fsutil.os, "fsync", fsync)
    target = tmp_path / "access.yaml"
    atomic_write_text(str(target), "x\n")
    assert target.read_text() == "x\n" and len(calls) == 2


def test_writes_through_a_symlink(tmp_path):
    real = tmp_path / "real.yaml"
    real.write_text("old\n")
    link = tmp_path / "link.yaml"
    link.symlink_to(real)
    atomic_write_text(str(link), "new\n")
    assert link.is_symlink() and real.read_text() == "new\n"
    assert sorted(os.listdir(tmp_path)) == ["link.yaml", "real.yaml"]


AMBIGUOUS = ["yes", "on", "n", "1e5", "0o17", "017", "0x1F", "1:30", "2001-12-14", "null", "", "1.", "True", "-.inf"]


def test_yaml_dump_quotes_what_either_yaml_version_would_misread():
    data = {"ids": AMBIGUOUS, "plain": "qwen2.5-coder:7b", "when": yaml12.Quoted("2026-01-31T12:00:00.000Z")}
    text = yaml12.yaml_dump(data)
    assert 'when: "2026-01-31T12:00:00.000Z"' in text and "plain: qwen2.5-coder:7b" in text
    assert yaml12.yaml_load(text) == data
    assert yaml.safe_load(text) == data


def test_yaml_load_is_1_2_core():
    assert yaml12.yaml_load("[yes, on, 1:30, 017, 0o17, 0x1F, 1e3, .5, -.inf, ~, 2001-12-14, TRUE, 0b11]") == [
        "yes", "on", "1:30", 17, 15, 31, 1000.0, 0.5, float("-inf"), None, "2001-12-14", True, "0b11"]
    with pytest.raises(yaml.YAMLError, match="duplicate key 'a'"):
        yaml12.yaml_load("a: 1\na: 2\n")


def test_yaml_key_lines():
    lines = yaml12.yaml_key_lines("server:\n  port: 1\nmodels:\n  - name: a\n  - name: b\n    sizeGb: 0\n")
    assert lines[("server", "port")] == 2
    assert lines[("models", 1)] == 5 and lines[("models", 1, "sizeGb")] == 6
    assert yaml12.yaml_key_lines("a: [") == {} and yaml12.yaml_key_lines("") == {}
