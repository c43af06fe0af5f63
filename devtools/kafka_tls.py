"""A throwaway certificate authority and certificates for a local broker, made with ``openssl``.

Everything is PEM: Kafka reads it with ``ssl.keystore.type=PEM`` (keys in PKCS#8, unencrypted, which is what
``openssl req -nodes`` writes) and librdkafka with ``ssl.ca.location``, ``ssl.certificate.location`` and
``ssl.key.location``.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from devtools.kafka_jars import KafkaToolError, require_tool

VALID_DAYS = "30"


@dataclass(frozen=True)
class Authority:
    cert: Path
    key: Path


@dataclass(frozen=True)
class TestCertificates:
    """The PEM files of a local broker's TLS: which CA to trust, a client identity, and a CA to be refused."""

    ca_cert: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path  # a second CA that did not sign the broker: a client trusting only it must be refused
    broker_keystore: Path  # the broker's key and certificate in one file, as ssl.keystore.type=PEM reads it
    wrong_host_keystore: Path  # the same CA's certificate for another host name (listener SSL_WRONG_HOST)
    authority: Authority  # signs further certificates (issue_certificate), e.g. one for another host


def _openssl(*args: str) -> None:
    openssl = require_tool("openssl", "openssl")
    result = subprocess.run([openssl, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise KafkaToolError(f"openssl {args[0]} failed: {result.stderr.strip().splitlines()[-1:]}")


def make_authority(directory: Path, name: str) -> Authority:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", VALID_DAYS,
             "-subj", f"/CN=lstm-worker {name}", "-keyout", str(key), "-out", str(cert))
    return Authority(cert, key)


def issue_certificate(directory: Path, name: str, authority: Authority,
                      hosts: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """A key and a certificate for ``CN=name`` signed by ``authority``; ``hosts`` go in subjectAltName."""
    cert, key, request = directory / f"{name}.pem", directory / f"{name}.key", directory / f"{name}.csr"
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-sha256", "-subj", f"/CN={name}",
             "-keyout", str(key), "-out", str(request))
    extensions = directory / f"{name}.ext"
    names = [f"IP:{h}" if h.replace(".", "").isdigit() else f"DNS:{h}" for h in hosts]
    extensions.write_text(f"subjectAltName={','.join(names)}\n" if names else "basicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-sha256", "-days", VALID_DAYS, "-in", str(request), "-CA", str(authority.cert),
             "-CAkey", str(authority.key), "-CAcreateserial", "-extfile", str(extensions), "-out", str(cert))
    request.unlink()
    extensions.unlink()
    return cert, key


def make_test_certificates(directory: Path) -> TestCertificates:
    """A CA, the broker's certificate for localhost and 127.0.0.1 (and one for another host), a client
    certificate, and a foreign CA."""
    directory.mkdir(parents=True, exist_ok=True)
    authority = make_authority(directory, "ca")
    broker_cert, broker_key = issue_certificate(directory, "broker", authority, ("localhost", "127.0.0.1"))
    keystore = directory / "broker-keystore.pem"
    keystore.write_text(broker_key.read_text() + broker_cert.read_text())
    wrong_cert, wrong_key = issue_certificate(directory, "wrong-host", authority, ("other.example",))
    wrong_host_keystore = directory / "wrong-host-keystore.pem"
    wrong_host_keystore.write_text(wrong_key.read_text() + wrong_cert.read_text())
    client_cert, client_key = issue_certificate(directory, "client", authority)
    other = make_authority(directory, "other-ca")
    return TestCertificates(ca_cert=authority.cert, client_cert=client_cert, client_key=client_key,
                            other_ca_cert=other.cert, broker_keystore=keystore,
                            wrong_host_keystore=wrong_host_keystore, authority=authority)
