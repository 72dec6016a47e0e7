"""mTLS on the admin plane over real HTTPS, with a CA, a server and client certificates made by openssl."""

from __future__ import annotations

import hashlib
import json
import ssl
import subprocess
from pathlib import Path

import pytest
from access_support import ADMIN_KEY, access, admin_headers, bearer, request

CONFIG = "/v1/admin/access/config"


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def issue(d: Path, name: str, subject: str, ca: str, ext: str) -> None:
    (d / f"{name}.ext").write_text(ext)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"), "-subj", subject)
    openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / f"{ca}.pem"), "-CAkey", str(d / f"{ca}.key"),
            "-CAcreateserial", "-out", str(d / f"{name}.pem"), "-days", "2", "-extfile", str(d / f"{name}.ext"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "rogue-ca"):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", str(d / f"{ca}.key"), "-out", str(d / f"{ca}.pem"), "-days", "2", "-subj", f"/CN={ca}")
    issue(d, "server", "/CN=127.0.0.1", "ca",
          "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    client_ext = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n"
    issue(d, "kong", "/C=PL/O=Execon/OU=ops/CN=kong", "ca", client_ext)
    issue(d, "kong-evil", "/C=PL/O=Execon/OU=ops/CN=kong-evil", "ca", client_ext)
    issue(d, "rogue", "/C=PL/O=Execon/OU=ops/CN=kong", "rogue-ca", client_ext)
    return d


def fingerprint(pem: Path) -> str:
    der = ssl.PEM_cert_to_DER_cert(pem.read_text())
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, 64, 2))  # openssl's -fingerprint form


def client(pki: Path, cert: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if cert:
        ctx.load_cert_chain(str(pki / f"{cert}.pem"), str(pki / f"{cert}.key"))
    return ctx


def tls_stack(stack_factory, tmp_path, pki, **client_cert):
    override = access(path=str(tmp_path / "access.yaml"),
                      admin={"clientCert": {"required": True, **client_cert},
                             "auditLogPath": str(tmp_path / "audit.jsonl")})
    override["server"] = {"https": {"enabled": True, "certPath": str(pki / "server.pem"),
                                    "keyPath": str(pki / "server.key"), "caPath": str(pki / "ca.pem")}}
    return stack_factory(override)


def get(stack, pki, cert, key=ADMIN_KEY):
    return request(stack.port, "GET", CONFIG, headers=bearer(key), tls=client(pki, cert))


def test_subjects_match_exact_values_not_substrings(stack_factory, tmp_path, pki):
    stack = tls_stack(stack_factory, tmp_path, pki, allowedSubjects=["CN=kong"])
    assert get(stack, pki, "kong").status == 200
    evil = get(stack, pki, "kong-evil")
    assert evil.status == 403 and evil.message == "Trusted client certificate required"
    assert get(stack, pki, None).status == 403


def test_certificate_is_checked_before_the_key(stack_factory, tmp_path, pki):
    stack = tls_stack(stack_factory, tmp_path, pki, allowedSubjects=["CN=kong, O=Execon"])
    # Without a trusted certificate a valid and an invalid key get the same answer.
    assert get(stack, pki, None, ADMIN_KEY).status == get(stack, pki, None, "wrong").status == 403
    assert get(stack, pki, "kong-evil", "wrong").status == 403
    wrong_key = get(stack, pki, "kong", "wrong")
    assert wrong_key.status == 401 and wrong_key.message == "Admin authentication required"
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in records] == ["client_cert_required_or_untrusted"] * 3 + ["invalid_admin_key"]
    assert records[-1]["certSubject"] == "C=PL,O=Execon,OU=ops,CN=kong"


def test_fingerprints_in_any_case_with_or_without_colons(stack_factory, tmp_path, pki):
    colon_upper = fingerprint(pki / "kong.pem")
    stack = tls_stack(stack_factory, tmp_path, pki, allowedFingerprints=[colon_upper])
    assert get(stack, pki, "kong").status == 200
    assert get(stack, pki, "kong-evil").status == 403
    plain_lower = colon_upper.replace(":", "").lower()
    stack2 = tls_stack(stack_factory, tmp_path / "b", pki, allowedFingerprints=[plain_lower])
    assert get(stack2, pki, "kong").status == 200


def test_certificate_from_another_ca_fails_the_handshake(stack_factory, tmp_path, pki):
    stack = tls_stack(stack_factory, tmp_path, pki)
    assert get(stack, pki, "kong").status == 200  # any certificate of our CA when no list is set
    with pytest.raises((ssl.SSLError, ConnectionError)):
        get(stack, pki, "rogue")


def test_public_planes_work_over_https_without_a_client_certificate(stack_factory, tmp_path, pki):
    stack = tls_stack(stack_factory, tmp_path, pki)
    reply = request(stack.port, "GET", "/v1/router/status", tls=client(pki, None))
    assert reply.status == 200
    assert request(stack.port, "GET", CONFIG, headers=admin_headers(), tls=client(pki, "kong")).status == 200
