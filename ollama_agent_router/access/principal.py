"""Who a request is from, as access control admitted it: carried on the request, read by handlers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)  # not frozen (a setattr per field at each construction); treat it as read-only
class Principal:
    plane: str | None  # the plane the request was admitted on (for job routes: the one it was charged to)
    key_id: str | None
    client_ip: str
    all_jobs: bool = False  # may see every job (runtimeAgent keys, and the open policy of a config without access)
    subject: str | None = None  # admin: the verified client certificate's subject

    @property
    def user(self) -> str:
        """The identity queues, rate limits and job ownership count against."""
        return f"key:{self.key_id}" if self.key_id else f"ip:{self.client_ip}"

    def can_see(self, owner: str | None) -> bool:
        return self.all_jobs or owner == self.user


# Until access control has run (and on routes open to all): no key, no plane.
ANONYMOUS = Principal(None, None, "")
