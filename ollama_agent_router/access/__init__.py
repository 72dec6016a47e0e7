"""Access control: planes, API keys, rate limits, the managed access file, the admin plane's gate, audit."""

from .control import AccessControl, Principal

__all__ = ["AccessControl", "Principal"]
