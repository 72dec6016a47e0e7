"""Finding, reading and loading the config file and the managed access file it names."""

from __future__ import annotations

import os
from dataclasses import replace

from ..fsutil import atomic_write_text
from .parse import dump_managed_access, parse_config, parse_managed_file
from .reader import ConfigError, load_yaml
from .schema import Config


def lookup_paths(explicit: str | None) -> list[str]:
    """Where the config is looked for. An explicit path is the only candidate: no silent fallback."""
    if explicit is not None:
        return [os.path.abspath(os.path.expanduser(explicit))]
    return [
        os.path.abspath("ollama-agent-router.yaml"),
        os.path.expanduser("~/.config/ollama-agent-router/config.yaml"),
        "/etc/ollama-agent-router/config.yaml",
    ]


def find_config(explicit: str | None) -> str:
    paths = lookup_paths(explicit)
    for path in paths:
        if os.path.isfile(path):
            return path
    if explicit is not None:
        raise ConfigError(f"Config file not found: {paths[0]}")
    raise ConfigError(f"No config file found. Tried: {', '.join(paths)}")


def load_config(explicit: str | None = None, *, bootstrap: bool = True, strict: bool = False) -> Config:
    """Find, read and validate the config, then load the managed access file.

    With ``bootstrap`` (``serve``) a missing managed file is created from the inline policy. Without it
    (``validate-config``) nothing is written: what exists is validated. ``strict`` (``validate-config``)
    makes unknown keys errors; otherwise they are among ``Config.warnings``, the managed file's included.
    """
    return load_config_file(find_config(explicit), bootstrap=bootstrap, strict=strict)


def load_config_file(path: str, *, bootstrap: bool = True, strict: bool = False) -> Config:
    path = os.path.abspath(path)
    text = _read(path)
    if text is None:
        raise ConfigError(f"Config file not found: {path}")
    config = parse_config(load_yaml(text, source=path), source=path, text=text, strict=strict)
    return _with_managed_file(config, bootstrap=bootstrap, strict=strict)


def _read(path: str) -> str | None:
    """The file's text, or None when it does not exist."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None


def _with_managed_file(config: Config, *, bootstrap: bool, strict: bool) -> Config:
    access = config.access
    path = access.managed_config_path
    if path is None:
        return config
    text = _read(path)
    warnings: tuple[str, ...] = ()
    if text is not None:
        managed, warnings = parse_managed_file(text, path, strict=strict)
        directory = os.path.dirname(path)
        if bootstrap and access.admin.enabled and not os.access(directory, os.W_OK | os.X_OK):
            # Found at boot rather than on the first admin change (e.g. /etc under systemd's ProtectSystem).
            raise ConfigError(
                f"access.managedConfigPath: the directory {directory} is not writable, so admin changes could not"
                " be saved; use a writable place such as /var/lib/ollama-agent-router/access.yaml"
            )
    elif not access.bootstrap_if_missing:
        raise ConfigError(f"Managed access file not found: {path} (access.bootstrapIfMissing is false)")
    else:
        managed = access.managed
        if bootstrap:
            try:
                atomic_write_text(path, dump_managed_access(managed), mode=0o600)
            except OSError as e:
                raise ConfigError(f"Cannot create the managed access file {path}: {e.strerror or e}") from None
    return replace(config, access=replace(access, managed=managed), warnings=config.warnings + warnings)
