"""Client certificates on the admin plane: SHA-256 fingerprints and exact subject attributes.

The TLS handshake has already verified a presented certificate against ``server.https.caPath``
(``CERT_OPTIONAL``: an untrusted certificate fails the handshake). Here we only decide whether the
verified certificate is one the admin plane accepts.

An ``allowedSubjects`` entry is a list of ``ATTR=value`` pairs, comma-separated (``\\,`` for a literal
comma). A certificate matches when its subject holds every pair with exactly that value: ``CN=kong``
matches ``CN=kong, O=Execon`` but never ``CN=kong-evil``.
"""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass

# Python's names for subject attributes (ssl.getpeercert) and the short names operators write.
_SHORT = {
    "commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
    "localityName": "L", "stateOrProvinceName": "ST", "emailAddress": "EMAILADDRESS",
    "domainComponent": "DC", "serialNumber": "SERIALNUMBER", "streetAddress": "STREET",
    "givenName": "GN", "surname": "SN", "title": "TITLE", "userId": "UID",
}
_KNOWN = frozenset(_SHORT.values()) | {"E"}
_ALIASES = {"E": "EMAILADDRESS"}

Attrs = frozenset[tuple[str, str]]


def parse_subject_pattern(text: str) -> Attrs:
    """``"CN=kong, O=Execon"`` as a set of (attribute, value) pairs; ValueError when malformed."""
    pairs: list[tuple[str, str]] = []
    for part in _split_unescaped(text):
        name, sep, value = part.partition("=")
        name = name.strip().upper()
        name = _ALIASES.get(name, name)
        if not sep or name not in _KNOWN or not value.strip():
            raise ValueError(f"allowedSubjects entry {text!r}: expected ATTR=value pairs such as CN=kong,O=Example")
        pairs.append((name, value.strip()))
    return frozenset(pairs)


def _split_unescaped(text: str) -> list[str]:
    parts, current, escaped = [], [], False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


@dataclass(frozen=True)
class PeerCert:
    fingerprint: str  # SHA-256 of the DER, 64 lower-case hex digits
    subject: tuple[tuple[str, str], ...]  # (short attribute name, value) in certificate order

    @property
    def attrs(self) -> Attrs:
        return frozenset(self.subject)

    def subject_text(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.subject)


def peer_cert(tls: ssl.SSLObject | None) -> PeerCert | None:
    """The verified client certificate of a TLS connection, or None when there is none."""
    if tls is None:
        return None
    der = tls.getpeercert(binary_form=True)
    if not der:
        return None
    info = tls.getpeercert() or {}
    subject = tuple((_SHORT.get(name, name), value) for rdn in info.get("subject", ()) for name, value in rdn)
    return PeerCert(hashlib.sha256(der).hexdigest(), subject)


@dataclass(frozen=True)
class CertPolicy:
    fingerprints: frozenset[str]
    subjects: tuple[Attrs, ...]

    def accepts(self, cert: PeerCert | None) -> bool:
        if cert is None:
            return False
        if self.fingerprints and cert.fingerprint not in self.fingerprints:
            return False
        if self.subjects:
            attrs = cert.attrs
            return any(pattern <= attrs for pattern in self.subjects)
        return True
