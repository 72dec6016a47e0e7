"""API keys: reading them from headers, hashing, generating, and finding the entry a key belongs to.

Stored forms (validated by ``access_config``):
- ``sha256:<hex>``: for random keys (what ``generate_key`` makes). A key is found by hashing it once
  and looking the hash up in a dict; the hash is not secret, so the dict lookup leaks nothing.
- ``pbkdf2-sha256:<iterations>:<salt>:<hash>`` and ``scrypt:<n>:<r>:<p>:<salt>:<hash>``: for human
  passwords. A KDF costs tens of milliseconds by design, so it runs off the event loop (``kdf.Deriver``)
  and each distinct presented key pays it once: the outcome is remembered in a small LRU keyed by the
  key's SHA-256.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, Hashable, Iterable, TypeVar

from .kdf import Deriver

MIN_KEY_LENGTH = 16
KEY_PREFIX = "oar-"
SCHEMES = ("sha256", "pbkdf2-sha256", "scrypt")
PBKDF2_ITERATIONS = 600_000  # OWASP's 2023 figure for PBKDF2-HMAC-SHA256
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_SALT_BYTES = 16
_CACHE_SIZE = 1024


class Unusable:
    """A credential header that is present but carries no usable key (wrong scheme, empty)."""


UNUSABLE = Unusable()


def extract_credential(headers: dict[str, str]) -> str | Unusable | None:
    """The presented key: ``Authorization: Bearer <key>``, else ``x-api-key``.

    None when neither header is sent. A header that is sent but yields no key is ``UNUSABLE``: a
    confused client must be told so, not silently treated as anonymous.
    """
    auth = headers.get("authorization")
    if auth is not None:
        parts = auth.split(None, 1)
        if len(parts) == 2 and parts[0].lower() == "bearer":
            return parts[1].strip()
    api_key = headers.get("x-api-key")
    if api_key is not None:
        api_key = api_key.strip()
        return api_key or UNUSABLE
    return None if auth is None else UNUSABLE


def sha256_hex(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def hash_key(key: str, scheme: str = "sha256") -> str:
    """The stored form of ``key``: ``sha256:<hex>``, or a salted KDF form for human passwords."""
    if len(key) < MIN_KEY_LENGTH:
        raise ValueError(f"a key must be at least {MIN_KEY_LENGTH} characters long")
    if scheme == "sha256":
        return "sha256:" + sha256_hex(key)
    salt = secrets.token_bytes(_SALT_BYTES)
    if scheme == "pbkdf2-sha256":
        digest = hashlib.pbkdf2_hmac("sha256", key.encode("utf-8"), salt, PBKDF2_ITERATIONS)
        return f"pbkdf2-sha256:{PBKDF2_ITERATIONS}:{salt.hex()}:{digest.hex()}"
    if scheme == "scrypt":
        digest = _scrypt(key, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, 32)
        return f"scrypt:{SCRYPT_N}:{SCRYPT_R}:{SCRYPT_P}:{salt.hex()}:{digest.hex()}"
    raise ValueError(f"unknown hash scheme {scheme!r}; use one of {', '.join(SCHEMES)}")


def generate_key() -> tuple[str, str]:
    """A new random key (192 bits) and its ``sha256:`` hash."""
    key = KEY_PREFIX + secrets.token_hex(24)
    return key, hash_key(key)


def _scrypt(key: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    # OpenSSL refuses parameters above its 32 MiB default unless told how much memory it may use.
    return hashlib.scrypt(key.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=length,
                          maxmem=129 * r * n * p + (1 << 20))


def verify_salted(key: str, stored: str) -> bool:
    """Check ``key`` against a ``pbkdf2-sha256:`` or ``scrypt:`` hash, in constant time."""
    scheme, _, params = stored.partition(":")
    fields = params.split(":")
    if scheme == "pbkdf2-sha256":
        iterations, salt, expected = int(fields[0]), bytes.fromhex(fields[1]), bytes.fromhex(fields[2])
        actual = hashlib.pbkdf2_hmac("sha256", key.encode("utf-8"), salt, iterations, len(expected))
    elif scheme == "scrypt":
        n, r, p = (int(v) for v in fields[:3])
        salt, expected = bytes.fromhex(fields[3]), bytes.fromhex(fields[4])
        actual = _scrypt(key, salt, n, r, p, len(expected))
    else:
        return False
    return hmac.compare_digest(actual, expected)


def mask_hash(stored: str) -> str:
    """What the admin API shows instead of a hash: its scheme only."""
    return stored.partition(":")[0] + ":********"


def is_masked(value: object) -> bool:
    return isinstance(value, str) and value.endswith(":********")


T = TypeVar("T")


@dataclass(frozen=True)
class KeyEntry(Generic[T]):
    id: str
    hash: str
    item: T  # what the caller wants back (an ApiKey, an admin key)


class KeyIndex(Generic[T]):
    """Finds the entry a presented key belongs to: one SHA-256 and a dict lookup for ``sha256:`` entries."""

    def __init__(self, entries: Iterable[KeyEntry[T]]) -> None:
        self.by_sha: dict[str, KeyEntry[T]] = {}
        self.salted: list[KeyEntry[T]] = []
        for entry in entries:
            if entry.hash.startswith("sha256:"):
                # The first entry with a hash wins, as in the original's list-order scan.
                self.by_sha.setdefault(entry.hash[7:], entry)
            else:
                self.salted.append(entry)
        self._cache: OrderedDict[str, KeyEntry[T] | None] = OrderedDict()

    async def lookup(self, key: str, deriver: Deriver, client: Hashable) -> KeyEntry[T] | None:
        """The entry ``key`` belongs to. Only a key that no SHA-256 entry and no remembered outcome
        answers waits for the salted entries' KDF, on ``deriver``'s threads (for ``client``)."""
        digest = sha256_hex(key)
        entry = self.by_sha.get(digest)
        if entry is not None and hmac.compare_digest(entry.hash[7:], digest):
            return entry
        if not self.salted:
            return None
        cache = self._cache
        if digest in cache:
            cache.move_to_end(digest)
            return cache[digest]
        found = await deriver.run(self._derive, key, client)
        cache[digest] = found
        if len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)
        return found

    def _derive(self, key: str) -> KeyEntry[T] | None:
        # On a worker thread: reads only the salted entries, which never change after construction.
        return next((e for e in self.salted if verify_salted(key, e.hash)), None)
