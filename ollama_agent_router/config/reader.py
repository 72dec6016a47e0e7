"""Reading parsed YAML into checked values, with every problem located as ``<file>:<line>: <yaml.path>: ...``.

``Section`` reads one mapping; problems are collected (not only the first) so that one run reports them all.
The schemas themselves live in ``parse`` (the main config) and ``access`` (the access section).
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import MISSING, fields
from typing import Any, Callable, Iterable, TypeVar

import yaml

from .yaml12 import yaml_key_lines, yaml_load


class ConfigError(Exception):
    """A configuration that cannot be used. ``errors`` holds one line per problem."""

    def __init__(self, errors: str | list[str]) -> None:
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("\n".join(self.errors))


def load_yaml(text: str, *, source: str | None = None) -> Any:
    """Parse one YAML document with 1.2 core semantics; bad YAML is a ConfigError naming the line."""
    try:
        return yaml_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(located(source, line, f"invalid YAML: {e.problem or e.context}")) from None
    except yaml.YAMLError as e:
        raise ConfigError(located(source, None, f"invalid YAML: {e}")) from None


YamlPath = tuple[Any, ...]


def located(source: str | None, line: int | None, message: str) -> str:
    if source and line:
        return f"{source}:{line}: {message}"
    if source:
        return f"{source}: {message}"
    if line:
        return f"line {line}: {message}"
    return message


def format_path(path: YamlPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'port'?)`` for the closest choice, or nothing when none is close."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- Reading values ---------------------------------------------------------------------------------


class Context:
    """One document being read: its problems, its warnings, and the keys each mapping was asked for.

    ``strict`` makes a key that no reader asked for an error (``validate-config``); otherwise it is a
    warning and the document is still used (``serve``: a config the original accepted still starts).
    """

    def __init__(self, source: str | None, text: str | None, *, strict: bool = False) -> None:
        self.source = source
        self.strict = strict
        self.lines = yaml_key_lines(text) if text is not None else {}
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self._mappings: dict[YamlPath, tuple[dict[Any, Any], set[Any]]] = {}  # path -> (data, keys asked for)

    def line(self, path: YamlPath) -> int | None:
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None

    def error(self, path: YamlPath, problem: str) -> None:
        self.errors.append(self.at(path, problem))

    def warn(self, path: YamlPath, problem: str) -> None:
        self.warnings.append(self.at(path, problem))

    def at(self, path: YamlPath, problem: str) -> str:
        return located(self.source, self.line(path), f"{format_path(path)}: {problem}")

    def message(self, path: YamlPath, message: str) -> None:
        """Record a message that already names its setting (the original's cross-field messages)."""
        self.errors.append(located(self.source, self.line(path), message))

    def keys_asked(self, path: YamlPath, data: dict[Any, Any]) -> set[Any]:
        """The set a reader of the mapping at ``path`` adds each key it looks up to."""
        return self._mappings.setdefault(path, (data, set()))[1]

    def unknown_key(self, path: YamlPath, key: Any, known: Iterable[Any]) -> str:
        """``<file>:<line>: server.prot: unknown key (did you mean 'port'?)``."""
        if not isinstance(key, str):
            return self.at(path, f"unknown key {key!r}")
        return self.at(path + (key,), "unknown key" + did_you_mean(key, (k for k in known if isinstance(k, str))))

    def finish(self) -> tuple[str, ...]:
        """Report the keys no reader asked for, raise ConfigError if anything is wrong, else the warnings."""
        for path, (data, known) in self._mappings.items():
            unknown = [self.unknown_key(path, key, known) for key in data if key not in known]
            (self.errors if self.strict else self.warnings).extend(unknown)
        if self.errors:
            raise ConfigError(self.errors)
        return tuple(self.warnings)


_REQUIRED: Any = object()
_T = TypeVar("_T")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    for types, name in ((bool, "a boolean"), ((int, float), "a number"), (str, "a string"), (list, "a list")):
        if isinstance(value, types):
            return name
    return "a mapping" if isinstance(value, dict) else f"a {type(value).__name__}"


def _bounds(gt: float | None, ge: float | None, le: float | None) -> str:
    parts = [f"{op} {v}" for op, v in ((">", gt), (">=", ge), ("<=", le)) if v is not None]
    return (" " + " and ".join(parts)) if parts else ""


def _as_number(value: Any, *, integral: bool, gt: Any, ge: Any, le: Any) -> int | float:
    """A YAML number within bounds; integral floats become ints so JSON output matches the original."""
    what = ("an integer" if integral else "a number") + _bounds(gt, ge, le)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be {what}, got {_kind(value)}")
    if isinstance(value, float):
        if not math.isfinite(value) or (integral and not value.is_integer()):
            raise ValueError(f"must be {what}, got {value}")
        if value.is_integer():
            value = int(value)
    if (gt is not None and value <= gt) or (ge is not None and value < ge) or (le is not None and value > le):
        raise ValueError(f"must be {what}, got {value}")
    return value


class Section:
    """A mapping being read at ``path``. Problems are recorded and reading goes on, so that all are reported.

    A null value counts as absent. A section under a missing or broken parent is ``quiet``: it yields
    defaults without repeating errors the parent already reported.
    """

    def __init__(self, ctx: Context, data: Any, path: YamlPath, *, quiet: bool = False) -> None:
        self.ctx = ctx
        self.path = path
        self.quiet = quiet
        self.data: dict[Any, Any] = data if isinstance(data, dict) else {}
        self.known = ctx.keys_asked(path, self.data) if self.data and not quiet else set()
        if not isinstance(data, dict) and not quiet:
            ctx.error(path, f"must be a mapping, got {_kind(data)}")
            self.quiet = True

    def raw(self, key: Any) -> Any:
        """The value as written (None when absent). Every lookup goes through here: a key nobody looks up is
        unknown (a typo, or a setting of another version) and ``Context.finish`` reports it."""
        self.known.add(key)
        return self.data.get(key)

    def has(self, key: str) -> bool:
        return self.raw(key) is not None

    def fail(self, key: str | int | None, problem: str) -> None:
        if not self.quiet:
            self.ctx.error(self.path if key is None else self.path + (key,), problem)

    def message(self, key: str, message: str) -> None:
        if not self.quiet:
            self.ctx.message(self.path + (key,), message)

    def get(self, key: str, check: Callable[[Any], Any], default: Any = _REQUIRED) -> Any:
        """``check`` returns the parsed value or raises ValueError with the problem."""
        value = self.raw(key)
        if value is None:
            if default is _REQUIRED:
                self.fail(key, "is required")
                return None
            return default
        try:
            return check(value)
        except ValueError as e:
            self.fail(key, str(e))
            return None if default is _REQUIRED else default

    def integer(self, key: str, default: Any = _REQUIRED, *, gt: Any = None, ge: Any = None, le: Any = None):
        return self.get(key, lambda v: _as_number(v, integral=True, gt=gt, ge=ge, le=le), default)

    def number(self, key: str, default: Any = _REQUIRED, *, gt: Any = None, ge: Any = None, le: Any = None):
        return self.get(key, lambda v: _as_number(v, integral=False, gt=gt, ge=ge, le=le), default)

    def boolean(self, key: str, default: Any = _REQUIRED) -> Any:
        return self.get(key, _as_bool, default)

    def text(self, key: str, default: Any = _REQUIRED) -> Any:
        return self.get(key, as_text, default)

    def choice(self, key: str, options: tuple[str, ...], default: Any = _REQUIRED) -> Any:
        def check(value: Any) -> str:
            if value not in options:
                raise ValueError(f"must be one of {', '.join(options)}")
            return value

        return self.get(key, check, default)

    def strings(self, key: str, default: Any = (), check: Callable[[str], Any] = lambda s: s) -> Any:
        """A list of non-empty strings, each passed through ``check``, as a tuple."""
        entries = self.items(key, required=False)
        if entries is None:
            return default
        values = (self.item(path, value, lambda v: check(as_text(v))) for path, value in entries)
        return tuple(v for v in values if v is not None)

    def item(self, path: YamlPath, value: Any, check: Callable[[Any], Any]) -> Any:
        """One list entry through ``check``; None after recording the problem."""
        try:
            return check(value)
        except ValueError as e:
            if not self.quiet:
                self.ctx.error(path, str(e))
            return None

    def items(self, key: str, *, required: bool) -> list[tuple[YamlPath, Any]] | None:
        """The entries of a list with their paths; None (after saying why) when absent or not a list."""
        value = self.raw(key)
        if value is None:
            if required:
                self.fail(key, "is required")
            return None
        if not isinstance(value, list):
            self.fail(key, f"must be a list, got {_kind(value)}")
            return None
        return [(self.path + (key, i), item) for i, item in enumerate(value)]

    def section(self, key: str, *, required: bool = False) -> Section:
        value = self.raw(key)
        if value is None:
            if required:
                self.fail(key, "is required")
            return Section(self.ctx, {}, self.path + (key,), quiet=self.quiet or required)
        return Section(self.ctx, value, self.path + (key,), quiet=self.quiet)

    def sections(self, key: str, *, required: bool = False) -> list[Section]:
        return [self.child(path, item) for path, item in self.items(key, required=required) or []]

    def child(self, path: YamlPath, data: Any) -> Section:
        return Section(self.ctx, data, path, quiet=self.quiet)

    def resolve(self, base_dir: str, key: str) -> Any:
        """An optional file path, made absolute against ``base_dir`` (the config file's directory)."""
        value = self.text(key, None)
        return None if value is None else os.path.normpath(os.path.join(base_dir, os.path.expanduser(value)))

    @staticmethod
    def build(cls: type[_T], **values: Any) -> _T:
        """Construct a config dataclass. None for a field that has a default means "use the default",
        so the defaults live in one place: ``schema``."""
        optional = {f.name for f in fields(cls) if f.default is not MISSING or f.default_factory is not MISSING}
        return cls(**{k: v for k, v in values.items() if v is not None or k not in optional})


def _as_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {_kind(value)}")
    return value


def as_text(value: Any) -> str:
    """A non-empty string."""
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {_kind(value)}")
    if not value:
        raise ValueError("must not be empty")
    return value


