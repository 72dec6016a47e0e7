"""Who may call which plane. This is the open policy of a config without an ``access`` section:
standalone and runtimeAgent open to everyone, presented keys ignored, and the admin plane absent."""

from __future__ import annotations

from dataclasses import dataclass

from .api import NOT_FOUND
from .config_types import Config
from .httpserver import Request


@dataclass(frozen=True)
class Principal:
    plane: str | None
    key_id: str | None
    client_ip: str

    @property
    def user(self) -> str:
        """The identity queues and rate limits count against: the key id, else the client IP."""
        return f"key:{self.key_id}" if self.key_id else f"ip:{self.client_ip}"


class AccessControl:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    async def authorize(self, req: Request, plane: str | None) -> Principal:
        if plane == "admin":
            raise NOT_FOUND
        return Principal(plane, None, req.client_ip)
