"""Client addresses: allowlists with IPv4 and IPv6 CIDRs, and ``X-Forwarded-For`` from trusted proxies only.

An IPv4 address and its IPv4-mapped IPv6 form (``::ffff:10.0.0.1``) are the same client, whichever
side of the comparison uses which form.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from typing import Iterable, Union

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

LOOPBACK_PROXIES = ("127.0.0.0/8", "::1/128")


def parse_address(text: str) -> Address | None:
    """An address as sockets and proxies write it: ``1.2.3.4``, ``1.2.3.4:5678``, ``[::1]:80``, ``fe80::1%eth0``."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port; a bare IPv6 address has several colons
    try:
        addr = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    return _unmapped(addr)


def _unmapped(addr: Address) -> Address:
    mapped = getattr(addr, "ipv4_mapped", None)
    return mapped if mapped is not None else addr


def _both_forms(addr: Address) -> tuple[Address, ...]:
    if isinstance(addr, ipaddress.IPv4Address):
        return addr, ipaddress.IPv6Address("::ffff:" + str(addr))
    return (addr,)


class AddressSet:
    """Addresses and networks (validated at boot by the config parser), matched by value, not by text."""

    def __init__(self, entries: Iterable[str]) -> None:
        networks = []
        for entry in entries:
            net = ipaddress.ip_network(entry, strict=False)
            mapped = getattr(net.network_address, "ipv4_mapped", None)
            if mapped is not None and net.prefixlen >= 96:
                net = ipaddress.ip_network(f"{mapped}/{net.prefixlen - 96}", strict=False)
            networks.append(net)
        self.networks: tuple[Network, ...] = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, addr: Address | None) -> bool:
        if addr is None:
            return False
        forms = _both_forms(_unmapped(addr))
        return any(form in net for form in forms for net in self.networks if form.version == net.version)


def client_address(peer: str, forwarded_for: str | None, trusted: AddressSet) -> Address | None:
    """The client's address. ``X-Forwarded-For`` counts only when the TCP peer is a trusted proxy.

    The header is walked from the right: each trusted hop vouches for the entry to its left, and the
    first untrusted entry is the client. Entries left of it were written by the client and are ignored.
    An entry that is not an address ends the walk with no answer rather than a guess.
    """
    addr = parse_address(peer)
    if not forwarded_for or addr not in trusted:
        return addr
    for entry in reversed(forwarded_for.split(",")):
        hop = parse_address(entry)
        if hop is None:
            return None
        addr = hop
        if hop not in trusted:
            return hop
    return addr


def bucket_id(addr: Address | None) -> str:
    """The per-client rate-limit identity: the IPv4 address, or the IPv6 /64 (one subscriber's prefix)."""
    if addr is None:
        return "unknown"
    if isinstance(addr, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


@dataclass(frozen=True)
class Client:
    addr: Address | None  # None when a trusted proxy sent something that is not an address
    ip: str  # for logs and job ownership
    bucket: str  # the rate-limit identity


class ClientResolver:
    """Client addresses per (peer, X-Forwarded-For), memoised: parsing an address costs microseconds."""

    def __init__(self, trusted: AddressSet) -> None:
        self.trusted = trusted
        self._resolve = functools.lru_cache(maxsize=4096)(self._uncached)

    def __call__(self, peer: str, headers: dict[str, str]) -> Client:
        forwarded_for = headers.get("x-forwarded-for") if self.trusted else None
        if forwarded_for is not None and len(forwarded_for) > 256:
            return self._uncached(peer, forwarded_for)  # long headers would make the memo large
        return self._resolve(peer, forwarded_for)

    def _uncached(self, peer: str, forwarded_for: str | None) -> Client:
        addr = client_address(peer, forwarded_for, self.trusted)
        return Client(addr, str(addr) if addr is not None else "unknown", bucket_id(addr))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    addr = parse_address(host)
    return addr is not None and addr.is_loopback
